"""Read DICOM images: single- and multi-frame files, series folders, errors without identifiers.

- :func:`read_dicom` gives one frame as HxWx3 uint8 RGB, windowed (see :mod:`medseg.io.windowing`);
  :func:`read_dicom_values` gives modality values (HU for CT) as float32.
- :func:`frames_of` lists the frames of a file with their geometry; :mod:`medseg.io.dicom_series`
  groups the frames under a path into sorted series.
- Every compressed transfer syntax that pydicom's plugins decode (RLE, JPEG baseline/extended/
  lossless, JPEG-LS, JPEG 2000 via pylibjpeg and pyjpegls), plus two it does not
  (:mod:`medseg.io.dicom_codecs`).
- Errors are :class:`~medseg.errors.DataError` naming the file and the reason. Messages and logs never
  quote tag values that identify a patient. pydicom's and highdicom's own warnings quote tag values,
  so they are silenced here.
"""

from __future__ import annotations

import logging
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError

from medseg.errors import DataError, first_line
from medseg.io.dicom_codecs import decode_unsupported, missing_decoder_message
from medseg.io.windowing import colour_to_uint8, frame_item, grey_to_uint8, modality_values


class _PydicomLog(logging.Filter):
    """Drops pydicom's log records (they quote tag values such as a patient's name), noting per thread
    when one says the file ended early: pydicom then returns what it read instead of raising."""

    def __init__(self) -> None:
        super().__init__()
        self.seen = threading.local()

    def filter(self, record: logging.LogRecord) -> bool:
        if "End of file reached" in str(record.msg):
            self.seen.eof = True
        return False


_LOG = _PydicomLog()
logging.getLogger("pydicom").setLevel(logging.WARNING)
logging.getLogger("pydicom").addFilter(_LOG)
for _name in ("pydicom", "highdicom"):  # their records (children's included) stay inside the library
    logging.getLogger(_name).propagate = False
pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE  # no value checks (and quotes) on read
warnings.filterwarnings("ignore", module=r"(pydicom|highdicom)(\..*)?$")

DICOM_SUFFIXES = frozenset({".dcm", ".dicom", ".dic"})
SEG_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"
_NOT_DICOM = frozenset({".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".gif", ".json", ".csv", ".txt",
                        ".md", ".yaml", ".yml", ".nrrd", ".nii", ".gz", ".zip", ".py", ".xml", ".html"})


def has_dicom_preamble(path: str | Path) -> bool:
    """True when the file has the 128-byte preamble followed by ``DICM``."""
    try:
        with open(path, "rb") as f:
            head = f.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:] == b"DICM"


def is_dicom(path: str | Path) -> bool:
    """A ``.dcm``/``.dicom`` file, or any other file (extension-less, UID-named) with the DICM marker."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in DICOM_SUFFIXES:
        return True
    return suffix not in _NOT_DICOM and path.is_file() and has_dicom_preamble(path)


def read_dataset(path: str | Path, *, pixels: bool = True) -> pydicom.Dataset:
    """Parse a DICOM file; DataError naming the file. ``pixels=False`` leaves large values unread."""
    path = Path(path)
    _LOG.seen.eof = False
    try:
        ds = pydicom.dcmread(path, defer_size=None if pixels else 4096, force=True)
    except FileNotFoundError:
        raise DataError(f"DICOM file {path} does not exist") from None
    except IsADirectoryError:
        raise DataError(f"{path} is a folder, not a DICOM file") from None
    except InvalidDicomError:
        raise DataError(f"{path} is not a DICOM file (no DICOM header could be read)") from None
    except Exception as err:  # pydicom raises many types on damaged files
        raise DataError(f"DICOM file {path} could not be parsed ({type(err).__name__}: {first_line(err)}); "
                        "the file may be truncated or corrupt") from None
    if _LOG.seen.eof:
        raise DataError(f"DICOM file {path} is truncated (the file ends inside its data)")
    if "SOPClassUID" not in ds and "PixelData" not in ds and "Rows" not in ds:
        raise DataError(f"{path} is not a DICOM file (no DICOM header could be read)")
    return ds


def check_image(ds: pydicom.Dataset, path: Path) -> None:
    """DataError unless ``ds`` is an image: SEG, SR, RT structures and the like are refused by name."""
    sop = ds.get("SOPClassUID")
    if sop == SEG_SOP_CLASS:
        raise DataError(f"{path} is a DICOM Segmentation (SEG), not an image; use it as a label file "
                        "(labels/ folder, or medseg convert labels)")
    kind = getattr(sop, "name", None) or "non-image"
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        if "Rows" not in ds and "Image Storage" not in kind:
            raise DataError(f"{path} is a DICOM {kind} object, not an image (it holds no pixel data)")
        raise DataError(f"DICOM file {path} has no pixel data; it may be truncated")
    if not ds.get("Rows") or not ds.get("Columns"):
        raise DataError(f"DICOM file {path} has pixel data but no image size (Rows/Columns)")
    from medseg.io.images import max_pixels

    rows, cols, limit = int(ds.Rows), int(ds.Columns), max_pixels()
    if limit and rows * cols > limit:
        raise DataError(f"DICOM file {path} declares {cols}x{rows} pixels per frame ({rows * cols / 1e6:.0f} "
                        f"megapixels), more than the limit of {limit / 1e6:g} megapixels; raise it with "
                        "MEDSEG_MAX_PIXELS if the image is real")


def n_frames(ds: pydicom.Dataset) -> int:
    try:
        return max(int(ds.get("NumberOfFrames") or 1), 1)
    except (TypeError, ValueError):
        return 1


# ------------------------------------------------------------------------------------------ decoding
def decode(ds: pydicom.Dataset, path: Path, index: int | None = None) -> np.ndarray:
    """Stored values in native byte order: all frames (F, H, W[, 3]) or frame ``index`` (0-based)."""
    from pydicom.pixels import pixel_array

    ts = ds.file_meta.get("TransferSyntaxUID", None) if hasattr(ds, "file_meta") else None
    ts_name = getattr(ts, "name", None) or str(ts or "unknown transfer syntax")
    try:
        arr = pixel_array(ds, index=index)
    except Exception as err:
        try:
            frames = decode_unsupported(ds)
        except Exception as inner:
            raise DataError(f"DICOM file {path} could not be decoded ({ts_name}: {first_line(inner)}); the pixel "
                            "data may be truncated or corrupt") from None
        if frames is None:
            missing = missing_decoder_message(ds, path)
            if missing is not None:
                raise DataError(missing) from None
            raise DataError(f"DICOM file {path} could not be decoded ({ts_name}: {first_line(err)}); the pixel data "
                            "may be truncated or corrupt") from None
        arr = frames if index is None else frames[index]
    if index is None and arr.ndim == (2 if int(ds.get("SamplesPerPixel", 1)) == 1 else 3):
        arr = arr[None]
    if arr.dtype.byteorder not in ("=", "|"):
        arr = arr.astype(arr.dtype.newbyteorder("="))
    return arr


# ------------------------------------------------------------------------------------------ geometry
@dataclass(frozen=True)
class Geometry:
    """Where a frame lies in the patient (LPS, mm); any part may be unknown (None)."""

    position: tuple[float, float, float] | None = None  # centre of the first pixel
    orientation: tuple[float, ...] | None = None  # row direction cosines, then column direction cosines
    spacing: tuple[float, float] | None = None  # (between rows, between columns): PixelSpacing order
    thickness: float | None = None

    @property
    def normal(self) -> np.ndarray | None:
        if self.orientation is None:
            return None
        n = np.cross(np.asarray(self.orientation[:3]), np.asarray(self.orientation[3:]))
        norm = float(np.linalg.norm(n))
        return n / norm if norm > 0 else None

    def along_normal(self) -> float | None:
        n = self.normal
        return None if n is None or self.position is None else float(np.dot(n, self.position))


def _floats(value, n: int) -> tuple[float, ...] | None:
    try:
        out = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        return None
    return out if len(out) == n and all(np.isfinite(out)) else None


def geometry_of(ds: pydicom.Dataset, index: int = 0) -> Geometry:
    """Geometry of frame ``index``: functional groups first (enhanced objects), then the top level."""
    pos = frame_item(ds, index, "PlanePositionSequence")
    ori = frame_item(ds, index, "PlaneOrientationSequence")
    meas = frame_item(ds, index, "PixelMeasuresSequence")
    position = _floats((pos or ds).get("ImagePositionPatient"), 3)
    orientation = _floats((ori or ds).get("ImageOrientationPatient"), 6)
    spacing = _floats((meas or ds).get("PixelSpacing"), 2)
    thickness = _floats([(meas or ds).get("SliceThickness")], 1)
    return Geometry(position, orientation, spacing, thickness[0] if thickness else None)


@dataclass(frozen=True)
class DicomFrame:
    """One 2-D image inside a DICOM file; ``frame`` is the 1-based frame number of multi-frame files."""

    path: Path
    frame: int | None
    rows: int
    columns: int
    sop_instance_uid: str
    series_instance_uid: str
    instance_number: int | None
    geometry: Geometry
    modality: str = ""

    @property
    def index(self) -> int:
        return 0 if self.frame is None else self.frame - 1

    @property
    def name(self) -> str:
        """``<file stem>`` or ``<file stem>_f003``: how masks and converted PNGs of this frame are named."""
        stem = self.path.name[: -len(self.path.suffix)] if self.path.suffix.lower() in DICOM_SUFFIXES \
            else self.path.name
        return stem if self.frame is None else f"{stem}_f{self.frame:03d}"


def frames_of(path: str | Path, ds: pydicom.Dataset | None = None) -> list[DicomFrame]:
    """The frames of the image file at ``path`` (header read when ``ds`` is None); DataError otherwise."""
    path = Path(path)
    ds = ds if ds is not None else read_dataset(path, pixels=False)
    check_image(ds, path)
    n = n_frames(ds)
    try:
        number = int(ds.get("InstanceNumber")) if ds.get("InstanceNumber") not in (None, "") else None
    except (TypeError, ValueError):
        number = None
    common = dict(rows=int(ds.Rows), columns=int(ds.Columns), sop_instance_uid=str(ds.get("SOPInstanceUID", "")),
                  series_instance_uid=str(ds.get("SeriesInstanceUID", "")), instance_number=number,
                  modality=str(ds.get("Modality", "")))
    return [DicomFrame(path, None if n == 1 else i + 1, geometry=geometry_of(ds, i), **common) for i in range(n)]


# ------------------------------------------------------------------------------------------ pixels
def _frame_index(ds: pydicom.Dataset, path: Path, frame: int | None) -> int:
    n = n_frames(ds)
    if frame is None:
        return 0
    if not 1 <= frame <= n:
        raise DataError(f"DICOM file {path} has {n} frame(s); frame {frame} does not exist")
    return frame - 1


def frame_rgb(ds: pydicom.Dataset, stored: np.ndarray, index: int, window=None) -> np.ndarray:
    """Decoded frame ``index`` (0-based; stored values HxW, or HxWx3) as HxWx3 uint8 RGB: colour and palette
    images converted, grey ones windowed by ``window`` (:mod:`medseg.io.windowing`)."""
    if stored.ndim == 3 or str(ds.get("PhotometricInterpretation", "")) == "PALETTE COLOR":
        rgb = colour_to_uint8(ds, stored)
        return rgb if rgb.ndim == 3 else np.repeat(rgb[..., None], 3, axis=2)
    grey, _ = grey_to_uint8(ds, stored, window, index)
    return np.repeat(grey[..., None], 3, axis=2)


def read_dicom(path: str | Path, *, frame: int | None = None, window=None) -> np.ndarray:
    """One frame (1-based; default the first) as HxWx3 uint8 RGB, grey frames windowed by ``window``."""
    path = Path(path)
    ds = read_dataset(path)
    check_image(ds, path)
    index = _frame_index(ds, path, frame)
    return frame_rgb(ds, decode(ds, path, index), index, window)


def read_dicom_values(path: str | Path, *, frame: int | None = None) -> np.ndarray:
    """One grey frame as modality values (HU for CT, after rescale), float32 HxW."""
    path = Path(path)
    ds = read_dataset(path)
    check_image(ds, path)
    if int(ds.get("SamplesPerPixel", 1)) != 1:
        raise DataError(f"DICOM file {path} is a colour image; modality values exist for grey images only")
    index = _frame_index(ds, path, frame)
    return modality_values(ds, decode(ds, path, index), index)
