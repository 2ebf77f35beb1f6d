"""Read images and masks from ordinary image files (JPEG, PNG, TIFF, BMP, GIF) into numpy arrays.

DICOM files are read by :mod:`medseg.io.dicom`; :func:`medseg.io.formats.read_image` reads any kind.

Images come back as HxWx3 uint8 RGB:

- grayscale (``L``, ``1``) is replicated to three channels; ``LA``/``RGBA`` lose their alpha;
  palette (``P``), CMYK and YCbCr images are converted to RGB;
- 16-bit and 32-bit integer or float images are scaled to 0..255 by their bit depth (value / 257 for
  16 bit), the same rule for every image, never by each image's own minimum and maximum
  (:func:`_scale_to_uint8` has the rule);
- photos are read as shown: an EXIF Orientation tag (all eight values) is applied, masks included;
- files declaring more than :func:`max_pixels` pixels are refused from their header, before decoding.

Masks come back as HxW uint8 with values {0, 1} (1 = foreground). :func:`inspect_mask` decides how to
read a mask file and :class:`MaskInfo` says what it found (``kind``):

- ``binary-0-255`` / ``binary-0-1``: values {0, 255} (or {0, 65535} in 16 bit) / {0, 1}; anything
  above 0 is foreground;
- ``label-map``: up to 32 integer values (e.g. {0, 1, 2} or {0, 128}); every value above 0 is
  foreground (a palette PNG with coloured entries is read this way, by palette index);
- ``jpeg-noisy``: a binary mask saved lossily, values clustered near 0 and near the top of the range
  with few pixels in between; binarised at half range (128 for 8 bit);
- ``rgb-grey``: RGB (or RGBA) with (nearly) equal channels; read as grey, then as above;
- ``rgb-colour`` (unusable): real colours; a colour-coded mask needs converting first;
- ``continuous`` (unusable): many grey levels not clustered near the extremes (a photo, a
  probability map).

Every file is fully decoded (``Image.load()``), so truncated files fail here with a :class:`DataError`
naming the file instead of training on half a picture.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from struct import error as struct_error

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from medseg.errors import DataError, first_line
from medseg.io.files import atomic_path

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".gif"})

MASK_KINDS = ("binary-0-255", "binary-0-1", "label-map", "jpeg-noisy", "rgb-grey", "rgb-colour", "continuous",
              "palette")

_MAX_LABELS = 32  # more distinct integer values than this is not a label map
_NEAR = 0.1  # within 10 % of the range from 0 or the top counts as "near an extreme"
_MAX_MID_FRACTION = 0.1  # jpeg-noisy: at most this share of pixels far from both extremes
_GREY_TOLERANCE = 16  # an RGB mask whose channels differ by at most this is grey
_SHOWN_VALUES = 16


@dataclass(frozen=True)
class MaskInfo:
    """What a mask file contains and how it will be read (see the module docstring for ``kind``)."""

    kind: str
    values: tuple[float, ...]  # sorted distinct values, at most 16 shown (for RGB: empty)
    n_values: int  # distinct values (for RGB colour: distinct colours)
    usable: bool
    empty: bool  # usable and no foreground pixel
    foreground_fraction: float
    message: str  # one sentence for anything but a clean binary mask, else ""
    noisy: bool = False  # thresholded at half range (jpeg-noisy, or rgb-grey that is noisy)


#: EXIF Orientation (0x0112) values and what a viewer does to show the stored pixels (TIFF 6.0 / EXIF 2.3).
EXIF_ORIENTATIONS = {2: "mirrored left-right", 3: "rotated 180 degrees", 4: "mirrored top-bottom",
                     5: "transposed", 6: "rotated 90 degrees clockwise", 7: "transversed",
                     8: "rotated 90 degrees counter-clockwise"}
_EXIF_ORIENTATION_TAG = 0x0112


def _orientation(im: Image.Image) -> int:
    try:
        value = int(im.getexif().get(_EXIF_ORIENTATION_TAG, 1) or 1)
    except (ValueError, TypeError, OSError, SyntaxError, struct_error):
        return 1
    return value if value in EXIF_ORIENTATIONS else 1


def _check_pixels(im: Image.Image, path: Path, what: str) -> None:
    """DataError before decoding when the header declares more pixels than :func:`max_pixels` allows."""
    limit = max_pixels()
    w, h = im.size  # of frame 0, the only one decoded
    if limit and w * h > limit:
        raise DataError(f"{what} {path} is {w}x{h} pixels ({w * h / 1e6:.0f} megapixels), more than the limit of "
                        f"{limit / 1e6:g} megapixels; raise it with MEDSEG_MAX_PIXELS if the image is real")


def _open(path: str | Path, what: str) -> Image.Image:
    """Open and fully decode ``path`` (frame 0 of multi-frame files) in its shown orientation (EXIF
    transpose); DataError naming the file otherwise, or when it declares more pixels than allowed."""
    path = Path(path)
    try:
        with Image.open(path) as im:
            _check_pixels(im, path, what)
            im.load()
            return ImageOps.exif_transpose(im) if _orientation(im) != 1 else im
    except FileNotFoundError:
        raise DataError(f"{what} {path} does not exist") from None
    except IsADirectoryError:
        raise DataError(f"{what} {path} is a folder, not an image file") from None
    except UnidentifiedImageError:
        raise DataError(f"{what} {path} is not an image file that can be read (unknown or corrupt "
                        "format)") from None
    except DataError:
        raise
    except (OSError, SyntaxError, ValueError, EOFError, struct_error, Image.DecompressionBombError,
            MemoryError) as err:
        raise DataError(f"{what} {path} could not be decoded ({first_line(err)}); the file may be truncated or "
                        "corrupt") from None


def open_image(path: str | Path) -> Image.Image:
    """The fully decoded PIL image at ``path``, as shown (EXIF orientation applied); DataError naming the
    file if it cannot be read."""
    return _open(path, "image")


def exif_orientation(path: str | Path) -> int:
    """The EXIF Orientation of the file at ``path`` (1 = as stored, also when absent or unreadable)."""
    try:
        with Image.open(path) as im:
            return _orientation(im)
    except (OSError, SyntaxError, ValueError, EOFError, struct_error, Image.DecompressionBombError):
        return 1


def image_size(path: str | Path) -> tuple[int, int]:
    """(width, height) as shown (EXIF orientation applied), from the file header without decoding."""
    path = Path(path)
    try:
        with Image.open(path) as im:
            w, h = im.size
            turned = _orientation(im) in (5, 6, 7, 8) and im.format != "TIFF"  # Pillow turns TIFFs itself
            return (h, w) if turned else (w, h)
    except FileNotFoundError:
        raise DataError(f"image {path} does not exist") from None
    except (OSError, SyntaxError, ValueError, struct_error, Image.DecompressionBombError):
        raise DataError(f"{path} is not an image file that can be read (unknown or corrupt format)") from None


_DEFAULT_MAX_PIXELS = 150_000_000


def max_pixels() -> int:
    """The most pixels (width x height) an image may declare before it is decoded; 0 = no limit.

    150 megapixels by default (a 10000x10000 scan passes; prediction then stays within about 2 GB);
    set ``MEDSEG_MAX_PIXELS`` to change it. Larger files are refused from their header, before any
    memory is taken, with a :class:`DataError` naming the file.
    """
    raw = os.environ.get("MEDSEG_MAX_PIXELS", "").strip().replace("_", "")
    if not raw:
        return _DEFAULT_MAX_PIXELS
    try:
        return max(int(float(raw)), 0)
    except ValueError:
        raise DataError(f"MEDSEG_MAX_PIXELS must be a number of pixels (e.g. 150000000), not {raw!r}") from None


Image.MAX_IMAGE_PIXELS = None  # medseg's own limit (max_pixels) is checked on every open instead
# Pillow warns (with its own source line) about corrupt EXIF blocks it then ignores; the file is still read
warnings.filterwarnings("ignore", category=UserWarning, module=r"PIL(\..*)?$")


def _scale_to_uint8(a: np.ndarray) -> np.ndarray:
    """More than 8 bits to 0..255 by the bit depth of the pixel type, the same for every image.

    Integer images are scaled by their type's full range: 16-bit (and 32-bit integer, taken as
    16-bit data, clipped to 0..65535) by 255/65535 (value / 257). Float images are taken as 0..1 when
    every value lies in 0..1, else as 0..255, else (values above 255) as 0..65535, and clipped. A
    12-bit image stored in 16 bits therefore looks dark (at most 4095/257 = 16): the rule never
    stretches one image by its own minimum and maximum, which would change contrast between images
    of one study (see README, "Images with more than 8 bits").
    """
    if a.dtype.kind in "iu":
        full = 255.0 if a.dtype.itemsize == 1 else 65535.0
    else:
        top = float(np.max(a, where=np.isfinite(a), initial=0.0)) if a.size else 0.0
        full = 1.0 if top <= 1.0 else 255.0 if top <= 255.0 else 65535.0
    out = np.empty(a.shape, np.uint8)
    for r0 in range(0, a.shape[0], 1024):  # row blocks: no full-size float copy of a large image
        block = a[r0 : r0 + 1024].astype(np.float32)
        np.nan_to_num(block, copy=False, nan=0.0, posinf=0.0, neginf=0.0)
        out[r0 : r0 + 1024] = np.rint(np.clip(block, 0, full) * np.float32(255.0 / full))
    return out


def to_rgb_array(im: Image.Image) -> np.ndarray:
    """HxWx3 uint8 RGB from a decoded PIL image (conversion rules in the module docstring)."""
    if im.mode == "RGB":
        return np.asarray(im)
    if im.mode in ("L", "1", "LA", "La"):
        grey = np.asarray(im.getchannel(0) if im.mode in ("LA", "La") else im.convert("L"))
    elif im.mode.startswith(("I", "F")):
        grey = _scale_to_uint8(np.asarray(im))
    else:  # P, PA, RGBA, CMYK, YCbCr, LAB, HSV ...
        return np.asarray(im.convert("RGB"))
    return np.repeat(grey[:, :, None], 3, axis=2)


def _unsupported_mode(what: str, path: str | Path, im: Image.Image, err: Exception) -> DataError:
    return DataError(f"{what} {path} has pixel mode {im.mode}, which cannot be converted ({err})")


def read_rgb(path: str | Path) -> np.ndarray:
    """Read an ordinary image file (JPEG, PNG, TIFF, BMP, GIF; anything Pillow opens) as an HxWx3 uint8
    RGB array; DataError naming the file if unreadable. Any image kind, DICOM included:
    :func:`medseg.io.formats.read_image`.
    """
    im = open_image(path)
    try:
        return to_rgb_array(im)
    except (ValueError, OSError) as err:
        raise _unsupported_mode("image", path, im, err) from None


def _mask_array(im: Image.Image) -> np.ndarray:
    """The raw mask values: HxW (grey, labels) or HxWx3/4 (RGB/RGBA), palettes resolved."""
    if im.mode == "1":
        return np.asarray(im, dtype=np.uint8)
    if im.mode in ("P", "PA"):
        idx = np.asarray(im.getchannel(0) if im.mode == "PA" else im)
        palette = np.asarray(im.getpalette() or [], dtype=np.uint8).reshape(-1, 3)
        used = np.flatnonzero(np.bincount(idx.ravel(), minlength=256))
        if used.max() < len(palette) and (palette[used].max(axis=1) == palette[used].min(axis=1)).all():
            lut = np.zeros(256, np.uint8)
            lut[: len(palette)] = palette[:, 0]
            return lut[idx]  # grey palette: use the grey the file shows
        return idx  # coloured palette: indices are labels
    if im.mode in ("L", "RGB", "RGBA", "LA", "La") or im.mode.startswith(("I", "F")):
        return np.asarray(im)
    return np.asarray(im.convert("RGB"))


def _histogram(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if a.dtype in (np.uint8, np.uint16):
        counts = np.bincount(a.ravel(), minlength=256)
        values = np.flatnonzero(counts)
        return values, counts[values]
    return np.unique(a, return_counts=True)


def _full_range(dtype: np.dtype, vmax: float) -> float:
    if dtype == np.uint8:
        return 255
    if dtype == np.uint16:
        return 65535
    if dtype.kind == "f" and vmax <= 1:
        return 1.0
    return 255 if vmax <= 255 else 65535 if vmax <= 65535 else float(vmax)


def _num(v: float) -> float:
    return int(v) if float(v).is_integer() else float(v)


def _info(kind: str, values: np.ndarray, binary: np.ndarray | None, message: str = "",
          noisy: bool = False) -> tuple[MaskInfo, np.ndarray | None]:
    shown = tuple(_num(v) for v in values[:_SHOWN_VALUES])
    if binary is None:
        return MaskInfo(kind, shown, len(values), False, False, 0.0, message, noisy), None
    fraction = float(binary.mean()) if binary.size else 0.0
    return MaskInfo(kind, shown, len(values), True, fraction == 0.0, fraction, message, noisy), binary


def _analyse_grey(a: np.ndarray, subject: str) -> tuple[MaskInfo, np.ndarray | None]:
    if a.dtype.kind == "f" and not np.isfinite(a).all():
        return _info("continuous", np.array([]), None, f"{subject} contains NaN or infinite values")
    values, counts = _histogram(a)
    if len(values) == 0:
        return _info("continuous", values, None, f"{subject} has no pixels")
    vmin, vmax = values[0], values[-1]
    shown = "/".join(str(_num(v)) for v in values[:8]) + ("/..." if len(values) > 8 else "")
    if vmin < 0:
        return _info("continuous", values, None,
                     f"{subject} has negative values ({shown}); expected a binary or label mask")
    full = _full_range(a.dtype, vmax)
    if set(values.tolist()) <= {0, 1}:
        return _info("binary-0-1", values, (a > 0).astype(np.uint8))
    if set(values.tolist()) <= {0, full}:
        return _info("binary-0-255", values, (a > 0).astype(np.uint8))
    near = full * _NEAR
    low, high = values <= near, values >= full - near
    noise = ((values > 0) & low) | ((values < full) & high)
    mid_fraction = counts[~low & ~high].sum() / a.size
    if noise.any() and vmax >= full / 2 and mid_fraction <= _MAX_MID_FRACTION:
        threshold = _num(full / 2 if a.dtype.kind == "f" else (int(full) + 1) // 2)
        return _info("jpeg-noisy", values, (a >= threshold).astype(np.uint8),
                     f"{subject} has JPEG-like noise ({len(values)} grey levels clustered near 0 and "
                     f"{_num(full)}); it is binarised at {threshold}", noisy=True)
    integral = a.dtype.kind in "biu" or bool(np.all(values == np.round(values)))
    if integral and len(values) <= _MAX_LABELS:
        return _info("label-map", values, (a > 0).astype(np.uint8),
                     f"{subject} is a label map with values {shown}; every value above 0 is read as "
                     "foreground")
    return _info("continuous", values, None,
                 f"{subject} has {len(values)} grey levels with {mid_fraction:.0%} of pixels far from 0 and "
                 f"{_num(full)}; expected a binary (0/255 or 0/1) or label mask, not a grey image")


def _analyse(arr: np.ndarray, subject: str) -> tuple[MaskInfo, np.ndarray | None]:
    a = np.asarray(arr)
    if a.dtype == bool:
        a = a.astype(np.uint8)
    if a.ndim == 3 and a.shape[2] in (2, 4):  # grey+alpha or RGBA
        colour = a[..., :-1]
        if colour.min() == colour.max() and a[..., -1].min() != a[..., -1].max():
            a = a[..., -1]  # a mask drawn only in the alpha channel
        else:
            a = colour
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[..., 0]
    if a.ndim == 2:
        return _analyse_grey(a, subject)
    if a.ndim != 3 or a.shape[2] != 3:
        return _info("continuous", np.array([]), None,
                     f"{subject} has shape {a.shape}; expected HxW or HxWx3")
    spread = a.max(axis=2).astype(np.int64) - a.min(axis=2)
    if spread.max() <= _GREY_TOLERANCE:
        info, binary = _analyse_grey(np.rint(a.mean(axis=2)).astype(a.dtype), subject)
        if binary is None:
            return info, None
        note = f"{subject} is stored as RGB with equal channels and is read as grey"
        message = f"{note}; {info.message.removeprefix(subject + ' ')}" if info.message else note
        return replace(info, kind="rgb-grey", message=message), binary
    codes = (a[..., 0].astype(np.uint64) << 32) | (a[..., 1].astype(np.uint64) << 16) | a[..., 2]
    n = len(np.unique(codes))
    return replace(_info("rgb-colour", np.array([]), None)[0], n_values=n,
                   message=f"{subject} is RGB with {n} distinct colours; expected a binary or label mask "
                   "(one channel, 0/255 or 0/1); for colour-coded class masks give their colours with --palette "
                   "(data.palette)"), None


def analyse_mask(arr: np.ndarray, subject: str) -> tuple[np.ndarray | None, MaskInfo]:
    """(HxW uint8 {0, 1} mask or None when unusable, its MaskInfo) for raw mask values from any source."""
    info, binary = _analyse(arr, subject)
    return binary, info


def inspect_mask(arr: np.ndarray, path: str | Path, *, subject: str | None = None) -> MaskInfo:
    """Classify the raw values of a mask (HxW, HxWx3 or HxWx4) read from ``path``.

    ``subject`` names the mask in messages (default ``"mask <path>"``).
    """
    return _analyse(arr, subject or f"mask {path}")[0]


def load_mask(path: str | Path, *, subject: str | None = None) -> tuple[np.ndarray | None, MaskInfo]:
    """(HxW uint8 {0, 1} mask, or None when unusable; its MaskInfo). DataError if the file is unreadable."""
    im = _open(path, "mask")
    try:
        raw = _mask_array(im)
    except (ValueError, OSError) as err:
        raise _unsupported_mode("mask", path, im, err) from None
    return analyse_mask(raw, subject or f"mask {path}")


def read_mask(path: str | Path) -> np.ndarray:
    """Read a mask file as HxW uint8 with 1 = foreground; DataError naming the file when unusable."""
    binary, info = load_mask(path)
    if binary is None:
        raise DataError(info.message)
    return binary


def write_png(path: str | Path, arr: np.ndarray, palette: Sequence[Sequence[int]] | None = None) -> None:
    """Write ``arr`` as PNG atomically, creating parent folders.

    HxW uint8/uint16 (grey), HxWx3 or HxWx4 uint8 (RGB/RGBA); bool is written as 0/255. With
    ``palette`` (an RGB triple per value) an HxW uint8 label map is written as an indexed PNG: the
    pixel values stay the class indices and viewers show the colours.
    """
    a = np.asarray(arr)
    if a.dtype == bool:
        a = a.astype(np.uint8) * 255
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[..., 0]
    ok = (a.ndim == 2 and a.dtype in (np.uint8, np.uint16)) or (
        a.ndim == 3 and a.shape[2] in (3, 4) and a.dtype == np.uint8)
    if not ok:
        raise ValueError(f"cannot write an array of shape {a.shape} and dtype {a.dtype} as PNG to {path}")
    image = Image.fromarray(np.ascontiguousarray(a))
    if palette is not None:
        if a.ndim != 2 or a.dtype != np.uint8:
            raise ValueError(f"an indexed PNG needs an HxW uint8 label map, not shape {a.shape} {a.dtype} ({path})")
        image = Image.frombytes("P", (a.shape[1], a.shape[0]), np.ascontiguousarray(a).tobytes())
        image.putpalette([int(v) for colour in palette for v in colour[:3]])
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")
