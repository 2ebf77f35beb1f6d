"""Letterboxing: fit an image into a square model input keeping its aspect, and map back exactly.

``letterbox`` scales the longer side to ``size`` and pads the rest (centred, constant 0);
``unletterbox`` crops the padding off a model-sized map and resizes it to the original height and
width, so a 1920x1072 input gets a 1920x1072 mask.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class Letterbox:
    """Where an original image of ``height`` x ``width`` sits inside the ``size`` x ``size`` input."""

    height: int
    width: int
    size: int
    top: int
    left: int
    inner_h: int
    inner_w: int


def letterbox_geometry(height: int, width: int, size: int) -> Letterbox:
    scale = size / max(height, width)
    inner_h = max(1, min(size, round(height * scale)))
    inner_w = max(1, min(size, round(width * scale)))
    top, left = (size - inner_h) // 2, (size - inner_w) // 2
    return Letterbox(height, width, size, top, left, inner_h, inner_w)


def letterbox(array: np.ndarray, size: int, *, is_mask: bool = False) -> tuple[np.ndarray, Letterbox]:
    """Resize (area/linear for images, nearest for masks) and pad ``array`` (HxW or HxWxC) to size x size."""
    h, w = array.shape[:2]
    box = letterbox_geometry(h, w, size)
    if (box.inner_h, box.inner_w) != (h, w):
        shrinking = box.inner_h < h
        interp = cv2.INTER_NEAREST if is_mask else (cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)
        array = cv2.resize(array, (box.inner_w, box.inner_h), interpolation=interp)
    if (box.inner_h, box.inner_w) == (size, size):
        return np.ascontiguousarray(array), box
    out = np.zeros((size, size) + array.shape[2:], dtype=array.dtype)
    out[box.top : box.top + box.inner_h, box.left : box.left + box.inner_w] = array
    return out, box


def unletterbox(array: np.ndarray, box: Letterbox) -> np.ndarray:
    """Crop the padding off a model-sized map (HxW or HxWxC, float) and resize it to the original size."""
    inner = array[box.top : box.top + box.inner_h, box.left : box.left + box.inner_w]
    if inner.shape[:2] == (box.height, box.width):
        return np.ascontiguousarray(inner)
    return cv2.resize(np.ascontiguousarray(inner), (box.width, box.height), interpolation=cv2.INTER_LINEAR)
