"""Overlays: masks as translucent colour fills with solid outlines over the image."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

#: Colours of label values 1, 2, ... when the config has no ``data.palette`` (value 0 is background).
DEFAULT_COLOURS = ((255, 64, 32), (32, 128, 255), (255, 200, 0), (180, 60, 255), (0, 200, 200),
                   (255, 105, 180), (140, 200, 60), (200, 120, 40), (120, 120, 255), (255, 255, 255))


_BLOCK_ROWS = 512


def class_colours(config) -> list[tuple[int, int, int]]:
    """RGB colour of each label value 0..K-1: ``data.palette`` when given, else black then DEFAULT_COLOURS."""
    if config.data.palette:
        return [tuple(int(v) for v in c) for c in config.data.palette]
    k = max(2, config.model.classes)
    return [(0, 0, 0)] + [DEFAULT_COLOURS[(i - 1) % len(DEFAULT_COLOURS)] for i in range(1, k)]


def _outline(out: np.ndarray, region: np.ndarray, colour, thickness: int) -> None:
    contours, _ = cv2.findContours(region.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(out, contours, -1, tuple(int(v) for v in colour), thickness)


def make_overlay(image: np.ndarray, mask: np.ndarray, color=(255, 64, 32), alpha: float = 0.35,
                 outline=(255, 255, 0), truth: np.ndarray | None = None,
                 colours: Sequence[Sequence[int]] | None = None) -> np.ndarray:
    """RGB uint8 image with ``mask`` filled and outlined; ``truth`` outlined in green.

    Binary (``colours`` None): nonzero = foreground, filled in ``color`` and outlined in ``outline``.
    Label maps: give ``colours`` (one RGB per value, e.g. :func:`class_colours`); each class 1..K-1 is
    filled and outlined in its own colour, and ``truth`` is outlined per class in green.
    """
    out = image.copy() if image.ndim == 3 else np.repeat(image[..., None], 3, axis=2)
    thickness = max(1, round(max(out.shape[:2]) / 300))
    if colours is None:
        regions = [(mask > 0, color, outline)]
        truths = [] if truth is None else [truth > 0]
    else:
        values = [v for v in np.unique(mask).tolist() if v != 0]
        regions = [(mask == v, colours[v % len(colours)], colours[v % len(colours)]) for v in values]
        truths = [] if truth is None else [truth == v for v in np.unique(truth).tolist() if v != 0]
    for region, fill, edge in regions:
        tint = np.array(fill, dtype=np.float32)
        for r0 in range(0, out.shape[0], _BLOCK_ROWS):  # in row blocks: float temporaries stay small
            rows, inside = out[r0 : r0 + _BLOCK_ROWS], region[r0 : r0 + _BLOCK_ROWS]
            rows[inside] = (rows[inside] * (1 - alpha) + tint * alpha).astype(np.uint8)
        _outline(out, region, edge, thickness)
    for region in truths:
        _outline(out, region, (0, 255, 0), thickness)
    return out
