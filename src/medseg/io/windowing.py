"""From DICOM stored values to meaningful values and to 8-bit display: rescale, VOI window, colour.

The order follows the DICOM grayscale pipeline (PS3.4 N.2):

1. **modality**: ``RescaleSlope``/``RescaleIntercept`` (Hounsfield units for CT) or a Modality LUT,
   taken per frame from the functional groups of enhanced objects when present;
2. **VOI**: a window (centre/width, with the ``LINEAR``, ``LINEAR_EXACT`` or ``SIGMOID`` function) or
   a VOI LUT maps values to 0..255;
3. **presentation**: ``MONOCHROME1`` (and ``PresentationLUTShape INVERSE``) is inverted so that
   bright always means more signal.

Which window (``spec``, the ``--window`` option and ``data.window``):

- ``None`` or ``"file"``: the file's VOI LUT or first window, else automatic;
- ``"auto"``: the 0.5th..99.5th percentile of the frame's values (MR, US and others without a window);
- a preset name from :data:`WINDOW_PRESETS` (``soft_tissue`` 40/400, ``lung`` -600/1500, ``bone``
  400/1800, ``brain`` 40/80, in modality units: HU for CT);
- ``"C,W"``: an explicit centre and width, e.g. ``"-600,1500"``.

An explicit spec wins over the file's window so that a whole dataset is windowed the same way.
Colour images (RGB, YBR decoded to RGB, palette colour) are not windowed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from medseg.errors import ConfigError

WINDOW_PRESETS: dict[str, tuple[float, float]] = {"soft_tissue": (40.0, 400.0), "lung": (-600.0, 1500.0),
                                                   "bone": (400.0, 1800.0), "brain": (40.0, 80.0)}
AUTO_PERCENTILES = (0.5, 99.5)


@dataclass(frozen=True)
class Window:
    """A resolved window: centre, width, VOI function and where it came from (for sidecars and logs)."""

    center: float
    width: float
    source: str  # "file", "preset:<name>", "manual", "auto"
    function: str = "LINEAR"


def parse_window(spec: str | None) -> str | tuple[float, float] | None:
    """Validate a window spec: None/"file", "auto", a preset name, or (centre, width) from "C,W"."""
    if spec is None:
        return None
    text = str(spec).strip().lower().replace("-", "_") if "," not in str(spec) else str(spec).strip()
    if text in ("", "file", "default", "none"):
        return None
    if text == "auto":
        return "auto"
    if text in WINDOW_PRESETS:
        return text
    if "," in text:
        try:
            center, width = (float(v) for v in text.split(","))
        except ValueError:
            center, width = float("nan"), float("nan")
        if np.isfinite(center) and np.isfinite(width) and width > 0:
            return center, width
    names = ", ".join(WINDOW_PRESETS)
    raise ConfigError(f"window {spec!r} is not understood; use file, auto, a preset ({names}) or "
                      "'CENTER,WIDTH' such as '-600,1500'")


def fixed_window(spec: str | None) -> tuple[float, float] | None:
    """(centre, width) of a preset or 'C,W' spec; None for the file's or the automatic window."""
    parsed = parse_window(spec)
    return WINDOW_PRESETS[parsed] if parsed in WINDOW_PRESETS else parsed if isinstance(parsed, tuple) else None


def _first(value) -> float | None:
    """The first of a possibly multi-valued number (DS/IS/FD), or None when absent or not a number."""
    if value is None or isinstance(value, (str, bytes)) and not value:
        return None
    if not isinstance(value, (str, bytes, int, float)):
        value = value[0] if len(value) else None
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if np.isfinite(out) else None


def frame_item(ds, index: int, sequence: str):
    """The first item of ``sequence`` for frame ``index`` (0-based): per-frame, then shared groups."""
    for groups, i in (("PerFrameFunctionalGroupsSequence", index), ("SharedFunctionalGroupsSequence", 0)):
        seq = ds.get(groups)
        if seq is not None and len(seq) > i and sequence in seq[i] and len(seq[i][sequence].value):
            return seq[i][sequence].value[0]
    return None


def rescale_of(ds, index: int = 0) -> tuple[float, float]:
    """(slope, intercept) for frame ``index``; (1, 0) when the file has none."""
    item = frame_item(ds, index, "PixelValueTransformationSequence")
    for src in (item, ds):
        if src is not None and "RescaleSlope" in src and "RescaleIntercept" in src:
            slope, intercept = _first(src.RescaleSlope), _first(src.RescaleIntercept)
            if slope is not None and intercept is not None and slope != 0:
                return slope, intercept
    return 1.0, 0.0


def modality_values(ds, stored: np.ndarray, index: int = 0) -> np.ndarray:
    """Stored values of one grey frame -> modality values (HU for CT) as float32."""
    if "ModalityLUTSequence" in ds and "PixelValueTransformationSequence" not in ds:
        from pydicom.pixels import apply_modality_lut

        return np.asarray(apply_modality_lut(stored, ds), dtype=np.float32)
    slope, intercept = rescale_of(ds, index)
    out = stored.astype(np.float32)
    if slope != 1.0 or intercept != 0.0:
        out = out * np.float32(slope) + np.float32(intercept)
    return out


def file_window(ds, index: int = 0) -> Window | None:
    """The first window the file stores for frame ``index`` (per-frame, shared, then top level)."""
    item = frame_item(ds, index, "FrameVOILUTSequence")
    for src in (item, ds):
        if src is not None and "WindowCenter" in src and "WindowWidth" in src:
            center, width = _first(src.WindowCenter), _first(src.WindowWidth)
            if center is not None and width is not None and width > 0:
                function = str(src.get("VOILUTFunction", "LINEAR") or "LINEAR").upper()
                return Window(center, width, "file", function)
    return None


def auto_window(values: np.ndarray) -> Window:
    lo, hi = np.percentile(values, AUTO_PERCENTILES)
    return Window(float(lo + hi) / 2, float(max(hi - lo, 1e-6)), "auto")


def resolve_window(ds, values: np.ndarray, spec: str | tuple[float, float] | None, index: int = 0) -> Window:
    """The window to use for one frame (rules in the module docstring)."""
    parsed = parse_window(spec) if isinstance(spec, str) else spec
    if isinstance(parsed, tuple):
        return Window(parsed[0], parsed[1], "manual")
    if parsed == "auto":
        return auto_window(values)
    if parsed is not None:
        c, w = WINDOW_PRESETS[parsed]
        return Window(c, w, f"preset:{parsed}")
    return file_window(ds, index) or auto_window(values)


def apply_window(values: np.ndarray, window: Window) -> np.ndarray:
    """Modality values -> uint8 0..255 with the DICOM VOI function of ``window`` (PS3.3 C.11.2.1.2)."""
    x = values.astype(np.float64, copy=False)
    c, w = window.center, window.width
    if window.function == "SIGMOID":
        y = 1.0 / (1.0 + np.exp(-4.0 * (x - c) / w))
    elif window.function == "LINEAR_EXACT":
        y = (x - c) / w + 0.5
    else:  # LINEAR: the classic definition with its half-pixel offsets
        y = ((x - (c - 0.5)) / max(w - 1.0, 1e-6)) + 0.5
    return np.rint(np.clip(y, 0.0, 1.0) * 255.0).astype(np.uint8)


def apply_voi_lut(ds, values: np.ndarray) -> np.ndarray:
    """The file's VOI LUT (first table) applied to modality values, scaled to uint8."""
    from pydicom.pixels import apply_voi_lut as _voi

    item = ds.VOILUTSequence[0]
    out = np.asarray(_voi(values.astype(np.int64), ds, index=0, prefer_lut=True), dtype=np.float64)
    descriptor = item.LUTDescriptor
    bits = int(descriptor[2]) if len(descriptor) > 2 else 16
    top = float(2 ** min(bits, 16) - 1)
    return np.rint(np.clip(out / top, 0.0, 1.0) * 255.0).astype(np.uint8)


def inverted(ds) -> bool:
    """True when bright should mean less signal: MONOCHROME1 (or an INVERSE presentation LUT)."""
    photometric = str(ds.get("PhotometricInterpretation", "")).upper()
    inverse = str(ds.get("PresentationLUTShape", "")).upper() == "INVERSE"
    return (photometric == "MONOCHROME1") != inverse


def padding(ds, stored: np.ndarray) -> np.ndarray | None:
    """Pixels outside the scanned area (``PixelPaddingValue`` [.. ``PixelPaddingRangeLimit``]), or None."""
    value = _first(ds.get("PixelPaddingValue"))
    if value is None:
        return None
    limit = _first(ds.get("PixelPaddingRangeLimit"))
    lo, hi = (value, value) if limit is None else (min(value, limit), max(value, limit))
    mask = (stored >= lo) & (stored <= hi)
    return mask if mask.any() and not mask.all() else None


def grey_to_uint8(ds, stored: np.ndarray, spec=None, index: int = 0) -> tuple[np.ndarray, Window | None]:
    """One grey frame of stored values -> (HxW uint8 for display and training, the window used).

    Padding pixels (outside the scanned area) do not count for the automatic window and come out black.
    """
    values = modality_values(ds, stored, index)
    pad = padding(ds, stored)
    window = None
    if (spec is None or parse_window(spec) is None) and ds.get("VOILUTSequence"):
        out = apply_voi_lut(ds, values)
    else:
        window = resolve_window(ds, values if pad is None else values[~pad], spec, index)
        out = apply_window(values, window)
    if inverted(ds):
        out = 255 - out
    if pad is not None:
        out[pad] = 0
    return out, window


def colour_to_uint8(ds, pixels: np.ndarray) -> np.ndarray:
    """A decoded colour frame (RGB after pydicom's YBR conversion, or palette indices) -> HxWx3 uint8."""
    photometric = str(ds.get("PhotometricInterpretation", "")).upper()
    if photometric == "PALETTE COLOR":
        from pydicom.pixels import apply_color_lut

        rgb = np.asarray(apply_color_lut(pixels, ds))
        bits = int(ds.RedPaletteColorLookupTableDescriptor[2])
        return (rgb >> 8).astype(np.uint8) if bits > 8 or rgb.max() > 255 else rgb.astype(np.uint8)
    if pixels.dtype == np.uint8:
        return pixels
    bits = int(ds.get("BitsStored", 8) or 8)
    return np.clip(pixels.astype(np.int64) >> max(bits - 8, 0), 0, 255).astype(np.uint8)
