"""Boundary metrics of one binary mask pair: HD95, ASSD and normalised surface Dice (MONAI's code).

- ``hd95``: 95th percentile of the symmetric surface distances (MONAI ``compute_hausdorff_distance``,
  ``percentile=95``: the percentile of each direction's distances, then the larger of the two).
- ``assd``: average symmetric surface distance (MONAI ``compute_average_surface_distance``,
  ``symmetric=True``: the mean over the union of both directions' distances).
- ``nsd``: normalised surface Dice at a tolerance tau (Nikolov et al. 2021, arXiv:1809.04430; MONAI
  ``compute_surface_dice``): the share of both boundaries lying within tau of the other boundary.

Distances are Euclidean between boundary pixels, in pixels when ``spacing`` is None, otherwise in the
spacing's unit (millimetres for DICOM PixelSpacing / ImagerPixelSpacing, DICOM PS3.3 C.7.6.2.1.1 and
C.8.11.4.1.1) with ``spacing = (between rows, between columns)`` (PixelSpacing's order). Anisotropic
spacing is honoured.

**Empty masks** (MONAI returns NaN or inf there; these are what medseg reports instead, so every mean
is finite):

=================================  =================================  =====
case                               hd95 / assd                        nsd
=================================  =================================  =====
both empty                         0                                  1
exactly one empty                  the image diagonal (max distance)  0
=================================  =================================  =====

The diagonal is ``sqrt((H * row_spacing)^2 + (W * col_spacing)^2)``, the largest distance two pixels
of the image can have, so a missed or hallucinated object costs the worst possible boundary error
(the convention of e.g. the Medical Segmentation Decathlon's "maximum distance" penalty). The
summaries also count these images (``n_surface_one_empty``) so readers can see how many there were.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np

SURFACE_NAMES = ("hd95", "assd", "nsd")


def image_diagonal(shape: Sequence[int], spacing: Sequence[float] | None = None) -> float:
    """Length of the image diagonal (pixels, or the spacing's unit) of an HxW image."""
    sy, sx = (1.0, 1.0) if spacing is None else (float(spacing[0]), float(spacing[1]))
    return math.hypot(shape[0] * sy, shape[1] * sx)


def surface_metrics(pred: np.ndarray, truth: np.ndarray, *, spacing: Sequence[float] | None = None,
                    tolerance: float = 1.0) -> dict[str, float]:
    """``{"hd95", "assd", "nsd"}`` of two HxW masks (nonzero = foreground), in pixels or spacing units.

    One call of MONAI's edge-distance routine gives both directions' distances; the three figures are
    then MONAI's own formulas (tested against ``compute_hausdorff_distance``,
    ``compute_average_surface_distance`` and ``compute_surface_dice``).

    ``tolerance`` (tau of the surface Dice) is in the same unit as the distances. Empty masks follow
    the module table; values are never NaN or inf. Raises ValueError for masks of different shapes.
    """
    p, t = np.asarray(pred) != 0, np.asarray(truth) != 0
    if p.shape != t.shape or p.ndim != 2:
        raise ValueError(f"expected two HxW masks of the same shape, got {p.shape} and {t.shape}")
    if not p.any() and not t.any():
        return {"hd95": 0.0, "assd": 0.0, "nsd": 1.0}
    if not p.any() or not t.any():
        worst = image_diagonal(p.shape, spacing)
        return {"hd95": worst, "assd": worst, "nsd": 0.0}
    d_pt, d_tp = surface_distances(p, t, spacing)
    hd95 = max(float(np.percentile(d_pt, 95)), float(np.percentile(d_tp, 95)))  # torch.quantile's linear rule
    both = np.concatenate([d_pt, d_tp])
    return {"hd95": hd95, "assd": float(both.mean()), "nsd": float(np.count_nonzero(both <= tolerance)) / both.size}


def surface_distances(pred: np.ndarray, truth: np.ndarray, spacing: Sequence[float] | None = None
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Distances from each boundary pixel of ``pred`` to the boundary of ``truth``, and back (MONAI's
    ``get_edge_surface_distance``; both masks non-empty). The masks are first cut to the bounding box of
    their union plus one pixel, which leaves every distance unchanged and saves MONAI most of its work."""
    import torch
    from monai.metrics.utils import get_edge_surface_distance

    rows, cols = np.nonzero(pred | truth)
    r0, r1 = max(rows.min() - 1, 0), min(rows.max() + 2, pred.shape[0])
    c0, c1 = max(cols.min() - 1, 0), min(cols.max() + 2, pred.shape[1])
    yp = torch.from_numpy(np.ascontiguousarray(pred[r0:r1, c0:c1]))
    yt = torch.from_numpy(np.ascontiguousarray(truth[r0:r1, c0:c1]))
    sp = None if spacing is None else [float(spacing[0]), float(spacing[1])]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # deprecation notices inside MONAI
        _, (d_pt, d_tp), _ = get_edge_surface_distance(yp, yt, spacing=sp, symmetric=True, warn_empty=False)
    return np.asarray(d_pt, dtype=np.float64), np.asarray(d_tp, dtype=np.float64)
