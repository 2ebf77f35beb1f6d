"""Read the image and the mask of a :class:`~medseg.data.pairs.Pair`, whatever files they are.

Images: ordinary image files, or a frame of a DICOM file (windowed, see :mod:`medseg.io.windowing`).
Masks: mask images (PNG ...), LabelMe JSON, or a DICOM SEG / label volume that covers the DICOM frame.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from medseg.data.pairs import Pair
from medseg.errors import DataError, MedsegError
from medseg.io.formats import image_format, mask_format, mask_format_names, read_image
from medseg.io.images import MaskInfo, analyse_mask


def read_pair_image(pair: Pair, window: str | None = None) -> np.ndarray:
    """The pair's image as HxWx3 uint8 RGB (its frame, for multi-frame DICOM)."""
    return read_image(pair.image, frame=pair.frame, window=window)


def pair_image_size(pair: Pair) -> tuple[int, int]:
    """(width, height) of the pair's image, fully decoding it (so that broken files are found)."""
    fmt = image_format(pair.image)
    if fmt.image_size is not None:
        return fmt.image_size(pair.image)
    h, w = read_pair_image(pair).shape[:2]
    return w, h


def spread(items: list, n: int) -> list:
    """Up to ``n`` items spread evenly over ``items`` (deterministic; all of them when there are few)."""
    if len(items) <= n:
        return list(items)
    return [items[i] for i in np.linspace(0, len(items) - 1, n).round().astype(int)]


def typical_long_side(pairs, limit: int = 200) -> int | None:
    """Median long side (px) of up to ``limit`` images of ``pairs`` (evenly spread); None if none opens."""
    sides = []
    for pair in spread(list(pairs), limit):
        try:
            sides.append(max(pair_image_size(pair)))
        except MedsegError:
            continue
    return int(np.median(sides)) if sides else None


def _frame(pair: Pair):
    from medseg.io.dicom import frames_of

    frames = frames_of(pair.image)
    index = (pair.frame or 1) - 1
    if index >= len(frames):
        raise DataError(f"DICOM file {pair.image} has {len(frames)} frame(s); frame {pair.frame} does not exist")
    return frames[index]


def _raw_labels(pair: Pair) -> np.ndarray:
    """The pair's mask file as a label map (values as stored), by its format (:mod:`medseg.io.formats`)."""
    fmt = mask_format(pair.mask)
    if fmt is None:
        raise DataError(f"mask {pair.mask} is not {mask_format_names()}")
    if fmt.read_labels is not None:
        return fmt.read_labels(Path(pair.mask))
    frame = _frame(pair)
    labels = fmt.labels_for_frame(Path(pair.mask), frame)
    if labels is None and fmt.outside_is_background:  # named after this series: outside its extent is background
        return np.zeros((frame.rows, frame.columns), np.uint8)
    if labels is None:
        where = f"{pair.image}" + (f" frame {pair.frame}" if pair.frame else "")
        raise DataError(f"label file {pair.mask} does not cover DICOM image {where}")
    return labels


def _load_one(pair: Pair, subject: str) -> tuple[np.ndarray | None, MaskInfo]:
    fmt = mask_format(pair.mask)
    if fmt is not None and fmt.read_mask is not None:
        return fmt.read_mask(pair.mask, subject=subject)
    return analyse_mask(_raw_labels(pair), subject)


def _merge_labels(arrays: list[np.ndarray], files: list[Path], image: Path) -> np.ndarray:
    """Label maps of several mask files of one image: union; DataError where they disagree."""
    shapes = {a.shape for a in arrays}
    if len(shapes) > 1:
        raise DataError(f"the masks of image {image} ({', '.join(p.name for p in files)}) have different sizes "
                        f"({', '.join('x'.join(map(str, a.shape[:2][::-1])) for a in arrays)})")
    out = arrays[0].copy()
    for a, path in zip(arrays[1:], files[1:], strict=True):
        clash = (out > 0) & (a > 0) & (out != a)
        if clash.any():
            raise DataError(f"masks {files[0].name} and {path.name} of image {image} give different labels to "
                            f"{int(clash.sum())} pixels; merge them into one mask by hand")
        out = np.where(a > 0, a, out)
    return out


def load_pair_mask(pair: Pair, subject: str | None = None) -> tuple[np.ndarray | None, MaskInfo]:
    """(HxW uint8 {0, 1} mask or None when unusable, its MaskInfo); DataError if unreadable.

    Several mask files of one image (:attr:`Pair.extra_masks`) are merged: union of their foreground
    (each must be usable and of the same size); the MaskInfo message says so.
    """
    if pair.mask is None:
        raise DataError(f"image {pair.image} has no mask")
    subject = subject or f"mask {pair.mask}"
    binary, info = _load_one(pair, subject)
    if not pair.extra_masks or binary is None:
        return binary, info
    files = [Path(pair.mask), *pair.extra_masks]
    masks, labelled = [binary], info.kind == "label-map"
    for extra in pair.extra_masks:
        more, more_info = _load_one(replace(pair, mask=extra, extra_masks=()), f"mask {extra}")
        if more is None:
            return None, more_info
        masks.append(more)
        labelled |= more_info.kind == "label-map"
    if labelled:  # label maps must agree where they overlap; binary masks are simply united
        _merge_labels([_raw_mask_values(Pair(pair.case_id, pair.image, p, frame=pair.frame)) for p in files],
                      files, pair.image)
    merged = (_merge_labels(masks, files, pair.image) > 0).astype(np.uint8)
    fraction = float(merged.mean()) if merged.size else 0.0
    note = f"{len(files)} mask files of {pair.case_id} ({', '.join(p.name for p in files)}) are merged (union)"
    return merged, replace(info, empty=fraction == 0.0, foreground_fraction=fraction,
                           message=f"{info.message}; {note}" if info.message else note)


def read_pair_mask(pair: Pair) -> np.ndarray:
    """The pair's mask as HxW uint8 with 1 = foreground; DataError when unusable."""
    binary, info = load_pair_mask(pair)
    if binary is None:
        raise DataError(info.message)
    return binary


@dataclass(frozen=True)
class TargetSpec:
    """How masks become training targets: binary {0, 1} (``classes`` 1) or labels 0..K-1."""

    classes: int = 1
    palette: tuple[tuple[int, int, int], ...] | None = None
    invert: bool = False

    @classmethod
    def from_config(cls, cfg) -> TargetSpec:
        palette = tuple(tuple(c) for c in cfg.data.palette) if cfg.data.palette else None
        if palette is not None and len(palette) != cfg.model.classes:
            raise DataError(f"data.palette has {len(palette)} colours but model.classes is {cfg.model.classes}")
        return cls(cfg.model.classes, palette, cfg.data.invert_masks)


def _raw_mask_values(pair: Pair) -> np.ndarray:
    raw = _raw_labels(pair)
    if pair.extra_masks:
        arrays = [raw, *(_raw_labels(replace(pair, mask=p, extra_masks=())) for p in pair.extra_masks)]
        raw = _merge_labels(arrays, [Path(pair.mask), *pair.extra_masks], pair.image)
    return raw


def _labels_from_palette(raw: np.ndarray, palette, mask: Path) -> np.ndarray:
    rgb = raw[..., :3] if raw.ndim == 3 else np.repeat(raw[..., None], 3, axis=2)
    labels = np.full(rgb.shape[:2], 255, np.uint8)
    for index, colour in enumerate(palette):
        labels[np.all(rgb == np.array(colour, dtype=rgb.dtype), axis=2)] = index
    unknown = labels == 255
    if unknown.any():
        colours = np.unique(rgb[unknown].reshape(-1, 3), axis=0)[:5].tolist()
        raise DataError(f"mask {mask} has {int(unknown.sum())} pixels in colours outside data.palette "
                        f"(e.g. {colours})")
    return labels


def read_pair_target(pair: Pair, spec: TargetSpec) -> np.ndarray:
    """The pair's training target: HxW uint8, {0, 1} for binary, class indices 0..K-1 otherwise."""
    if spec.classes == 1:
        binary = read_pair_mask(pair)
        return 1 - binary if spec.invert else binary
    raw = _raw_mask_values(pair)
    if spec.palette is not None:
        return _labels_from_palette(raw, spec.palette, pair.mask)
    if raw.ndim == 3:
        raise DataError(f"mask {pair.mask} is colour-coded; give data.palette (one RGB colour per class)")
    values = np.unique(raw)
    if spec.classes == 2 and set(values.tolist()) <= {0, 255}:
        binary = (raw > 0).astype(np.uint8)
        return 1 - binary if spec.invert else binary
    if values.max() >= spec.classes or values.min() < 0:
        raise DataError(f"mask {pair.mask} holds labels {values[:8].tolist()}; expected 0..{spec.classes - 1} "
                        f"for model.classes={spec.classes}")
    return raw.astype(np.uint8)
