"""Pixel decoders pydicom (with its plugins) lacks, met in DICOM SEG files in the wild.

- RLE Lossless of 1-bit frames (dcmqi): each frame's single PackBits segment holds the frame's bits,
  packed and padded to a whole byte per frame (even when the frame's pixel count is not a multiple of 8);
- Deflated Image Frame Compression (1.2.840.10008.1.2.8.1): each frame is raw-deflated native pixel data.
"""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pydicom
from pydicom.encaps import generate_frames

RLE = "1.2.840.10008.1.2.5"

#: Compressed transfer syntaxes (PS3.5 Table A-1 / PS3.6 Annex A): a short name and the packages that
#: give pydicom a decoder for it (the first is what ``pip install`` should fetch).
_JPEG = ("pylibjpeg-libjpeg", "python-gdcm")
_JPEG_LS = ("pyjpegls", "python-gdcm")
_J2K = ("pylibjpeg-openjpeg", "python-gdcm")
COMPRESSED = {
    "1.2.840.10008.1.2.4.50": ("JPEG Baseline", ("pylibjpeg-libjpeg", "pillow")),
    "1.2.840.10008.1.2.4.51": ("JPEG Extended (12-bit)", _JPEG),
    "1.2.840.10008.1.2.4.57": ("JPEG Lossless", _JPEG),
    "1.2.840.10008.1.2.4.70": ("JPEG Lossless", _JPEG),
    "1.2.840.10008.1.2.4.80": ("JPEG-LS Lossless", _JPEG_LS),
    "1.2.840.10008.1.2.4.81": ("JPEG-LS Near-Lossless", _JPEG_LS),
    "1.2.840.10008.1.2.4.90": ("JPEG 2000 Lossless", _J2K),
    "1.2.840.10008.1.2.4.91": ("JPEG 2000", _J2K),
    "1.2.840.10008.1.2.4.201": ("HTJ2K Lossless", ("pylibjpeg-openjpeg",)),
    "1.2.840.10008.1.2.4.202": ("HTJ2K Lossless RPCL", ("pylibjpeg-openjpeg",)),
    "1.2.840.10008.1.2.4.203": ("HTJ2K", ("pylibjpeg-openjpeg",)),
    "1.2.840.10008.1.2.5": ("RLE Lossless", ("pylibjpeg-rle",)),
}


def decoder_available(uid: str) -> bool:
    """True when pydicom has a working decoder for transfer syntax ``uid`` (its plugin is installed)."""
    from pydicom.pixels.decoders.base import get_decoder

    try:
        return bool(get_decoder(uid).is_available)
    except (NotImplementedError, ValueError, KeyError):
        return False


def missing_decoder_message(ds: pydicom.Dataset, path) -> str | None:
    """One sentence when ``ds``'s transfer syntax needs a decoder that is not installed (or that no
    package provides, as for video); None when a decoder is there (a failure is then the data's fault)."""
    ts = str(getattr(ds, "file_meta", {}).get("TransferSyntaxUID", "") or "")
    if not ts:
        return None
    from pydicom.uid import UID

    uid = UID(ts)
    if not uid.is_transfer_syntax:
        return f"{path}: transfer syntax {ts} is unknown, so its pixel data cannot be decoded"
    if not uid.is_compressed:
        return None
    name, packages = COMPRESSED.get(ts, (uid.name if uid.is_private is False else ts, ()))
    if decoder_available(uid):
        return None
    if not packages:
        return (f"{path}: {name} ({ts}) has no decoder medseg can use; convert the file to an uncompressed "
                "transfer syntax")
    alternatives = f" (or {', '.join(packages[1:])})" if len(packages) > 1 else ""
    return f"{path}: {name} ({ts}) needs a decoder that is not installed: pip install {packages[0]}{alternatives}"


DEFLATED_FRAMES = "1.2.840.10008.1.2.8.1"


def decode_unsupported(ds: pydicom.Dataset) -> np.ndarray | None:
    """Decoders pydicom lacks: RLE of 1-bit frames, Deflated Image Frame Compression (8/16/1-bit)."""
    ts = str(ds.file_meta.get("TransferSyntaxUID", ""))
    bits = int(ds.get("BitsAllocated", 0))
    if ts not in (RLE, DEFLATED_FRAMES) or (ts == RLE and bits != 1) or int(ds.get("SamplesPerPixel", 1)) != 1:
        return None
    rows, cols, n = int(ds.Rows), int(ds.Columns), max(int(ds.get("NumberOfFrames") or 1), 1)
    out = []
    for data in generate_frames(ds.PixelData, number_of_frames=n):
        raw = zlib.decompress(data, -15) if ts == DEFLATED_FRAMES else _unrle_one_segment(data)
        if bits == 1:
            frame = np.unpackbits(np.frombuffer(raw, np.uint8), bitorder="little")[: rows * cols]
        else:
            dtype = np.dtype(f"<{'i' if ds.get('PixelRepresentation', 0) else 'u'}{bits // 8}")
            frame = np.frombuffer(raw, dtype)[: rows * cols]
        if frame.size != rows * cols:
            raise ValueError(f"a frame holds {frame.size} pixels, expected {rows * cols}")
        out.append(frame.reshape(rows, cols))
    return np.stack(out)


def _unrle_one_segment(data: bytes) -> bytes:
    """PackBits-decode the single segment of one RLE frame (PS3.5 G.3.1)."""
    n_segments = struct.unpack("<I", data[:4])[0]
    if n_segments != 1:
        raise ValueError(f"1-bit RLE frame has {n_segments} segments, expected 1")
    seg = data[struct.unpack("<I", data[4:8])[0]:]
    out, i = bytearray(), 0
    while i < len(seg):
        h = seg[i]
        i += 1
        if h < 128:
            out += seg[i : i + h + 1]
            i += h + 1
        elif h > 128:
            out += bytes(seg[i : i + 1]) * (257 - h)
            i += 1
    return bytes(out)
