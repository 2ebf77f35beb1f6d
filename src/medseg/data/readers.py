"""Read the image and the mask of a :class:`~medseg.data.layouts.Pair`, whatever files they are.

Images: ordinary image files, or a frame of a DICOM file (windowed, see :mod:`medseg.io.windowing`).
Masks: mask images (PNG ...), LabelMe JSON, or a DICOM SEG / label volume that covers the DICOM frame.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medseg.data.layouts import Pair
from medseg.errors import DataError
from medseg.io.images import IMAGE_SUFFIXES, MaskInfo, analyse_mask, is_dicom_path, load_mask, open_image, read_image


def read_pair_image(pair: Pair, window: str | None = None) -> np.ndarray:
    """The pair's image as HxWx3 uint8 RGB (its frame, for multi-frame DICOM)."""
    return read_image(pair.image, frame=pair.frame, window=window)


def pair_image_size(pair: Pair) -> tuple[int, int]:
    """(width, height) of the pair's image, fully decoding it (so that broken files are found)."""
    if is_dicom_path(pair.image):
        h, w = read_pair_image(pair).shape[:2]
        return w, h
    return open_image(pair.image).size


def _frame(pair: Pair):
    from medseg.io.dicom import frames_of

    frames = frames_of(pair.image)
    index = (pair.frame or 1) - 1
    if index >= len(frames):
        raise DataError(f"DICOM file {pair.image} has {len(frames)} frame(s); frame {pair.frame} does not exist")
    return frames[index]


def _raw_labels(pair: Pair) -> np.ndarray:
    from medseg.io.labels import label_kind, labels_for_frame, read_labelme

    kind = label_kind(pair.mask)
    if kind == "labelme":
        return read_labelme(pair.mask)[0]
    if kind in ("seg", "volume"):
        labels = labels_for_frame(pair.mask, _frame(pair))
        if labels is None:
            where = f"{pair.image}" + (f" frame {pair.frame}" if pair.frame else "")
            raise DataError(f"label file {pair.mask} does not cover DICOM image {where}")
        return labels
    raise DataError(f"mask {pair.mask} is neither an image, a LabelMe JSON, a DICOM SEG nor a label volume")


def load_pair_mask(pair: Pair, subject: str | None = None) -> tuple[np.ndarray | None, MaskInfo]:
    """(HxW uint8 {0, 1} mask or None when unusable, its MaskInfo); DataError if unreadable."""
    if pair.mask is None:
        raise DataError(f"image {pair.image} has no mask")
    subject = subject or f"mask {pair.mask}"
    if Path(pair.mask).suffix.lower() in IMAGE_SUFFIXES:
        return load_mask(pair.mask, subject=subject)
    return analyse_mask(_raw_labels(pair), subject)


def read_pair_mask(pair: Pair) -> np.ndarray:
    """The pair's mask as HxW uint8 with 1 = foreground; DataError when unusable."""
    binary, info = load_pair_mask(pair)
    if binary is None:
        raise DataError(info.message)
    return binary
