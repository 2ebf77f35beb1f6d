"""Overlays: the mask as a translucent colour fill with a solid outline over the image."""

from __future__ import annotations

import cv2
import numpy as np


def make_overlay(image: np.ndarray, mask: np.ndarray, color=(255, 64, 32), alpha: float = 0.35,
                 outline=(255, 255, 0), truth: np.ndarray | None = None) -> np.ndarray:
    """RGB uint8 image with ``mask`` (nonzero = foreground) filled and outlined; ``truth`` in green."""
    out = image.copy() if image.ndim == 3 else np.repeat(image[..., None], 3, axis=2)
    fg = mask > 0
    tint = np.array(color, dtype=np.float32)
    out[fg] = (out[fg] * (1 - alpha) + tint * alpha).astype(np.uint8)
    thickness = max(1, round(max(out.shape[:2]) / 300))
    contours, _ = cv2.findContours(fg.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(out, contours, -1, outline, thickness)
    if truth is not None:
        contours, _ = cv2.findContours((truth > 0).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(out, contours, -1, (0, 255, 0), thickness)
    return out
