"""Binary segmentation metrics: pure functions per image plus one accumulator over a dataset.

Pixels are foreground where the array is nonzero (bool, {0, 1} and {0, 255} masks all work).
From the confusion counts (tp, fp, fn, tn) of one image::

    dice        = 2 tp / (2 tp + fp + fn)      iou (Jaccard) = tp / (tp + fp + fn)
    sensitivity = tp / (tp + fn)               specificity   = tn / (tn + fp)
    precision   = tp / (tp + fp)               accuracy      = (tp + tn) / all pixels
    thresholded_jaccard = iou if iou >= 0.65 else 0   (ISIC 2018 challenge score, per image)

Empty masks: one rule covers every case, **0 / 0 counts as 1** (nothing to find and nothing
found is perfect). No metric is ever NaN, so means over a dataset are always defined; dice and iou
carry the penalty when exactly one side is empty.

=========================  =====  =====  ===========  ===========  =========
case                        dice   iou   sensitivity  specificity  precision
=========================  =====  =====  ===========  ===========  =========
both empty                   1      1        1            1           1
target empty, pred not       0      0        1 (0/0)     < 1          0
pred empty, target not       0      0        0            1           1 (0/0)
no background in target      .      .        .          1 (0/0)       .
=========================  =====  =====  ===========  ===========  =========

Mean precision therefore does not punish a model for predicting nothing on a lesion; read it
together with dice and sensitivity. The accumulator still averages with ``nanmean`` so rows from
other sources with NaN are skipped rather than poisoning the mean.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from medseg.errors import DataError

if TYPE_CHECKING:
    import torch

THRESHOLDED_JACCARD_CUTOFF = 0.65


class Confusion(NamedTuple):
    """Pixel counts of one image (ints), or of each image of a batch (torch tensors of shape (N,))."""

    tp: Any
    fp: Any
    fn: Any
    tn: Any


def _ratio(num, den):
    """num / den, with 0 / 0 = 1 (the module's empty-mask convention); per element for tensors."""
    if isinstance(den, (int, float, np.integer)):
        return 1.0 if den == 0 else num / den
    import torch

    return torch.where(den > 0, num / den.clamp_min(1), torch.ones_like(num))


def dice(c: Confusion):
    """Dice (F1) = 2 tp / (2 tp + fp + fn); 1 when both masks are empty."""
    return _ratio(2 * c.tp, 2 * c.tp + c.fp + c.fn)


def iou(c: Confusion):
    """IoU (Jaccard) = tp / (tp + fp + fn); 1 when both masks are empty."""
    return _ratio(c.tp, c.tp + c.fp + c.fn)


def sensitivity(c: Confusion):
    """Sensitivity (recall, true positive rate) = tp / (tp + fn)."""
    return _ratio(c.tp, c.tp + c.fn)


def specificity(c: Confusion):
    """Specificity (true negative rate) = tn / (tn + fp)."""
    return _ratio(c.tn, c.tn + c.fp)


def precision(c: Confusion):
    """Precision (positive predictive value) = tp / (tp + fp)."""
    return _ratio(c.tp, c.tp + c.fp)


def accuracy(c: Confusion):
    """Pixel accuracy = (tp + tn) / all pixels."""
    return _ratio(c.tp + c.tn, c.tp + c.fp + c.fn + c.tn)


def thresholded_jaccard(c: Confusion) -> float:
    """ISIC 2018 challenge score of one image: IoU when it is at least 0.65, else 0."""
    j = iou(c)
    return j if j >= THRESHOLDED_JACCARD_CUTOFF else 0.0


#: The pure per-image metric functions by name (the accumulator's and the reports').
METRICS = {f.__name__: f for f in (dice, iou, sensitivity, specificity, precision, accuracy, thresholded_jaccard)}
#: The per-image metrics that the accumulator averages (fg_pred / fg_true are counts, not averaged).
METRIC_NAMES = tuple(METRICS)


def confusion(pred: np.ndarray, target: np.ndarray) -> Confusion:
    """The (tp, fp, fn, tn) pixel counts of a predicted and a true mask of the same shape (nonzero =
    foreground); DataError when the shapes differ."""
    pred, target = np.asarray(pred), np.asarray(target)
    if pred.shape != target.shape:
        raise DataError(f"prediction has shape {pred.shape} but the mask has shape {target.shape}; they must be the "
                        "same size")
    p, t = pred != 0, target != 0
    tp = int(np.count_nonzero(p & t))
    fp, fn = int(np.count_nonzero(p)) - tp, int(np.count_nonzero(t)) - tp
    return Confusion(tp, fp, fn, int(p.size) - tp - fp - fn)


def mask_dice(pred: np.ndarray, target: np.ndarray) -> float:
    """Dice of one predicted mask against its true mask."""
    return dice(confusion(pred, target))


def image_metrics(pred: np.ndarray, target: np.ndarray) -> dict[str, float]:
    """Metrics of one predicted mask against its true mask (see the module docstring for empties)."""
    c = confusion(pred, target)
    return {name: f(c) for name, f in METRICS.items()} | {"fg_pred": float(c.tp + c.fp), "fg_true": float(c.tp + c.fn)}


def batch_confusion(pred: torch.Tensor, target: torch.Tensor) -> Confusion:
    """Per-image pixel counts (int64 tensors of shape (N,)) of boolean (N, ...) tensors."""
    p, t = pred.reshape(pred.shape[0], -1), target.reshape(target.shape[0], -1)
    tp = (p & t).sum(dim=1)
    fp, fn = p.sum(dim=1) - tp, t.sum(dim=1) - tp
    return Confusion(tp, fp, fn, p.shape[1] - tp - fp - fn)


def batch_dice(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-image Dice, shape (N,), of binary (N, 1, H, W) or (N, H, W) tensors; both empty gives 1."""
    if pred.shape != target.shape:
        raise DataError(f"prediction shape {tuple(pred.shape)} differs from target {tuple(target.shape)}")
    if pred.dim() not in (3, 4) or (pred.dim() == 4 and pred.shape[1] != 1):
        raise DataError(f"expected (N, 1, H, W) or (N, H, W) binary tensors, got {tuple(pred.shape)}")
    return dice(batch_confusion(pred != 0, target != 0))


def batch_dice_multiclass(pred: torch.Tensor, target: torch.Tensor, classes: int) -> torch.Tensor:
    """Per-image mean Dice over the foreground classes 1..K-1 of label tensors (N, H, W) or (N, 1, H, W).

    A class absent from both prediction and truth in an image is left out of that image's mean; an
    image where every foreground class is absent from both scores 1.
    """
    import torch

    total, count = torch.zeros(pred.shape[0]), torch.zeros(pred.shape[0])
    for c in range(1, classes):
        counts = batch_confusion(pred == c, target == c)
        present = (counts.tp + counts.fp + counts.fn) > 0
        total += torch.where(present, dice(counts), torch.zeros_like(counts.tp)).cpu()
        count += present.float().cpu()
    return _ratio(total, count)


class MetricAccumulator:
    """Collects per-image metrics (scalars only) and aggregates them over a dataset.

    >>> acc = MetricAccumulator()
    >>> acc.update("ISIC_0000001", pred, mask)   # doctest: +SKIP
    >>> acc.aggregate()["dice"]                    # doctest: +SKIP
    """

    def __init__(self, extra: tuple[str, ...] = ()) -> None:
        self._rows: list[dict[str, Any]] = []
        self.names = METRIC_NAMES + tuple(extra)  # what aggregate() averages

    def __len__(self) -> int:
        return len(self._rows)

    def update(self, case_id: str, pred: np.ndarray, target: np.ndarray, extra=None) -> dict[str, float]:
        """Compute and store the metrics of one image; return them.

        ``extra(pred, target)`` may add metrics (e.g. surface distances) named in the constructor.
        """
        metrics = image_metrics(pred, target)
        if extra is not None:
            metrics.update(extra(pred, target))
        return self.add(case_id, metrics)

    def add(self, case_id: str, metrics: Mapping[str, float]) -> dict[str, float]:
        """Store metrics computed elsewhere (NaN values are left out of the means); return them."""
        self._rows.append({"case_id": str(case_id), **metrics})
        return dict(metrics)

    def rows(self) -> list[dict[str, Any]]:
        """One dict per image in update order: ``case_id`` followed by its metrics."""
        return [dict(row) for row in self._rows]

    def aggregate(self) -> dict[str, float | int]:
        """Dataset summary: nan-aware mean of each metric, ISIC score and failure rate.

        ``thresholded_jaccard`` is the ISIC challenge score (mean of per-image thresholded
        Jaccard); ``failure_rate`` is the share of images with Jaccard below 0.65. With no images
        every mean is NaN.
        """
        n = len(self._rows)
        summary: dict[str, float | int] = {}
        for name in self.names:
            values = np.array([row.get(name, math.nan) for row in self._rows], dtype=np.float64)
            finite = values[~np.isnan(values)]
            summary[name] = float(finite.mean()) if finite.size else math.nan
        ious = np.array([row["iou"] for row in self._rows], dtype=np.float64)
        summary["failure_rate"] = float(np.mean(~(ious >= THRESHOLDED_JACCARD_CUTOFF))) if n else math.nan
        summary["n_images"] = n
        summary["n_empty_targets"] = sum(1 for row in self._rows if row["fg_true"] == 0)
        return summary

    def reset(self) -> None:
        """Forget every stored image."""
        self._rows.clear()


class MulticlassAccumulator:
    """Per-class metrics of label maps (0 = background, 1..K-1 = foreground classes) and their means.

    Each foreground class is scored in each image as a binary problem (``pred == c`` against
    ``target == c``) with the module's formulas. A class absent from both the prediction and the truth
    of an image is left out of that class's mean (NaN in the row) rather than counted as a perfect 1,
    so a rare class is judged on the images where it appears or is predicted. The dataset summary
    holds ``per_class`` (the mean of each metric over images, and ``n_images`` scored) and, at the
    top level, the macro average over foreground classes; the background is not scored (its Dice is
    near 1 and would flatter every model).
    """

    def __init__(self, names: list[str], extra: tuple[str, ...] = ()) -> None:
        if len(names) < 2:
            raise ValueError("give the names of classes 0..K-1 (K >= 2), background first")
        self.names = list(names)
        self.metric_names = METRIC_NAMES + tuple(extra)
        self._per_class = {name: MetricAccumulator(tuple(extra)) for name in self.names[1:]}
        self._rows: list[dict[str, Any]] = []

    def __len__(self) -> int:
        return len(self._rows)

    def class_rows(self) -> dict[str, list[dict[str, Any]]]:
        """Per foreground class, its per-image rows (NaN where the class is absent from both)."""
        return {name: acc.rows() for name, acc in self._per_class.items()}

    def update(self, case_id: str, pred: np.ndarray, target: np.ndarray, extra=None) -> dict[str, float]:
        """Score one label map against its truth; return its row (macro means, then per-class values).

        ``extra(pred_c, target_c)`` may add metrics for each class present in the image.
        """
        pred, target = np.asarray(pred), np.asarray(target)
        row: dict[str, Any] = {"case_id": str(case_id)}
        per_class: dict[str, dict[str, float]] = {}
        for c, name in enumerate(self.names[1:], start=1):
            metrics = image_metrics(pred == c, target == c)
            if metrics["fg_pred"] == 0 and metrics["fg_true"] == 0:
                metrics = {k: (math.nan if k in self.metric_names else v) for k, v in metrics.items()}
                metrics.update({k: math.nan for k in self.metric_names if k not in metrics})
            elif extra is not None:
                metrics.update(extra(pred == c, target == c))
            per_class[name] = self._per_class[name].add(case_id, metrics)
        for metric in self.metric_names:
            values = [m[metric] for m in per_class.values() if not math.isnan(m.get(metric, math.nan))]
            perfect = 0.0 if metric.startswith(("hd95", "assd")) else 1.0  # nothing to find, nothing found
            row[metric] = float(np.mean(values)) if values else perfect
        for name, m in per_class.items():
            row |= {f"dice_{name}": m["dice"], f"iou_{name}": m["iou"]}
        self._rows.append(row)
        return {k: v for k, v in row.items() if k != "case_id"}

    def rows(self) -> list[dict[str, Any]]:
        return [dict(row) for row in self._rows]

    def aggregate(self) -> dict[str, Any]:
        """``per_class`` summaries, their macro averages, ``n_images`` and ``failure_rate`` (mean IoU < 0.65)."""
        per_class = {}
        for name, acc in self._per_class.items():
            summary = acc.aggregate()
            scored = sum(1 for row in acc.rows() if not math.isnan(row["dice"]))
            per_class[name] = {k: summary[k] for k in self.metric_names} | {"n_images": scored}
        out: dict[str, Any] = {}
        for metric in self.metric_names:
            values = [c[metric] for c in per_class.values() if not math.isnan(c[metric])]
            out[metric] = float(np.mean(values)) if values else math.nan
        ious = np.array([row["iou"] for row in self._rows], dtype=np.float64)
        out["failure_rate"] = float(np.mean(ious < THRESHOLDED_JACCARD_CUTOFF)) if len(ious) else math.nan
        return out | {"n_images": len(self._rows), "per_class": per_class}
