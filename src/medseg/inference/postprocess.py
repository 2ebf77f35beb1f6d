"""Post-processing: probability map -> binary mask, then optional clean-up steps.

Steps, in this order (each off by default; ``medseg tune-postprocess`` keeps only those that
improve validation Dice):

1. threshold: foreground where probability > ``threshold``
2. remove small objects: connected components (8-connected) below ``min_object_fraction`` of the
   image area are dropped
3. largest component: only the largest connected object is kept
4. fill holes: background not connected (4-connected) to the image border becomes foreground

All steps use OpenCV's connected components, which stay fast on 4000x3000 masks.

Dense CRF refinement (``infer.crf``, :mod:`medseg.inference.crf`) acts on the probabilities before
step 1, because it needs the image; it is an optional extra (pydensecrf2 builds from source) and,
like every step here, ``tune-postprocess`` keeps it only when it raises validation Dice.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import cv2
import numpy as np

from medseg.config import InferConfig


def _components(mask: np.ndarray, connectivity: int) -> tuple[int, np.ndarray, np.ndarray]:
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=connectivity)
    return n, labels, stats[:, cv2.CC_STAT_AREA]


def remove_small_objects(mask: np.ndarray, min_pixels: int) -> np.ndarray:
    """``mask`` (bool) without the 8-connected objects smaller than ``min_pixels``."""
    if min_pixels <= 1 or not mask.any():
        return mask
    n, labels, areas = _components(mask, 8)
    keep = areas >= min_pixels
    keep[0] = False  # background label
    return keep[labels]


def largest_component(mask: np.ndarray) -> np.ndarray:
    """Only the largest 8-connected object of ``mask`` (bool); an empty mask stays empty."""
    if not mask.any():
        return mask
    n, labels, areas = _components(mask, 8)
    return mask if n <= 2 else labels == 1 + int(np.argmax(areas[1:]))


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """``mask`` (bool) with every background region that does not touch the border filled."""
    if not mask.any():
        return mask
    n, labels, _ = _components(~mask, 4)
    border = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    outside = np.zeros(n, dtype=bool)
    outside[border] = True
    return mask | ~outside[labels]


@dataclass(frozen=True)
class Postprocess:
    """Threshold + clean-up of a foreground probability map (see module docstring for the order)."""

    threshold: float = 0.5
    min_object_fraction: float = 0.0
    largest_component: bool = False
    fill_holes: bool = False

    @classmethod
    def from_config(cls, infer: InferConfig) -> Postprocess:
        return cls(infer.threshold, infer.min_object_fraction, infer.largest_component, infer.fill_holes)

    def with_(self, **changes) -> Postprocess:
        return replace(self, **changes)

    def clean(self, mask: np.ndarray) -> np.ndarray:
        """The clean-up steps on a boolean mask."""
        if self.min_object_fraction > 0:
            mask = remove_small_objects(mask, int(np.ceil(self.min_object_fraction * mask.size)))
        if self.largest_component:
            mask = largest_component(mask)
        if self.fill_holes:
            mask = fill_holes(mask)
        return mask

    def __call__(self, proba: np.ndarray) -> np.ndarray:
        """Boolean mask from an HxW foreground probability map."""
        return self.clean(proba > self.threshold)

    def describe(self) -> str:
        steps = [f"threshold {self.threshold:g}"]
        if self.min_object_fraction > 0:
            steps.append(f"remove objects < {self.min_object_fraction:g} of the image")
        if self.largest_component:
            steps.append("largest component")
        if self.fill_holes:
            steps.append("fill holes")
        return ", ".join(steps)

    def as_infer_settings(self) -> dict[str, float | bool]:
        return {"threshold": self.threshold, "min_object_fraction": self.min_object_fraction,
                "largest_component": self.largest_component, "fill_holes": self.fill_holes}
