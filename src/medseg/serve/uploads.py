"""Uploaded bytes -> RGB frames, read exactly as ``medseg predict`` reads the same file from disk.

The bytes are written to a private temporary file named by their sniffed kind and read with the same
readers the command line uses: :func:`medseg.io.formats.read_image` for images, and for DICOM the
series reader's path (every frame, grey frames windowed by the run's ``data.window``, as
``medseg predict`` does for DICOM input). Error messages name "the upload", never a path or a tag value.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medseg.errors import MedsegError
from medseg.serve.security import SUFFIX, UploadError


@dataclass
class Upload:
    """A decoded upload: ``frames`` are HxWx3 uint8 RGB (one for images, every frame for DICOM)."""

    kind: str
    frames: list[np.ndarray]
    dataset: object | None = None  # DICOM: the pydicom dataset without pixel data (for the SEG)
    spacing_mm: tuple[float, float] | None = None  # DICOM Pixel Spacing (row, column) when present

    @property
    def size(self) -> tuple[int, int]:
        """(height, width) of the first frame."""
        return self.frames[0].shape[0], self.frames[0].shape[1]


def decode_upload(data: bytes, kind: str, workdir: Path, *, window=None) -> Upload:
    """Decode ``data`` (already sniffed as ``kind``) in ``workdir``; UploadError 422 when it cannot be read."""
    path = Path(workdir) / f"upload{SUFFIX[kind]}"
    path.write_bytes(data)
    try:
        if kind == "dicom":
            return _decode_dicom(path, window)
        from medseg.io.formats import read_image

        return Upload(kind, [read_image(path)])
    except UploadError:
        raise
    except MedsegError as err:
        raise UploadError(422, str(err).replace(str(path), "the upload").replace(path.name, "the upload")) from None
    except Exception as err:  # noqa: BLE001 - any decoder failure on client bytes is a bad upload
        raise UploadError(422, f"the {kind.upper()} upload could not be decoded ({type(err).__name__}); it may "
                               "be truncated or corrupt") from None
    finally:
        path.unlink(missing_ok=True)


def _decode_dicom(path: Path, window) -> Upload:
    from medseg.io.dicom import check_image, decode, frame_rgb, read_dataset

    ds = read_dataset(path)
    check_image(ds, path)
    pixels = decode(ds, path)
    frames = [frame_rgb(ds, pixels[i], i, window) for i in range(pixels.shape[0])]
    spacing = None
    try:
        value = ds.get("PixelSpacing") or ds.get("ImagerPixelSpacing")
        if value is not None and len(value) == 2:
            spacing = (float(value[0]), float(value[1]))
    except (TypeError, ValueError):
        spacing = None
    if "PixelData" in ds:
        del ds.PixelData  # the SEG needs the header only; free the pixels now
    return Upload("dicom", frames, dataset=ds, spacing_mm=spacing)
