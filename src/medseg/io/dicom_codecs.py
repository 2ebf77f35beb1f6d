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
