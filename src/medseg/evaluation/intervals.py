"""Attach bootstrap 95 % intervals (over images) to an accumulator's summary: ``summary["ci95"]``.

Binary runs: the interval of each per-image mean and of the failure rate (share of images with
Jaccard < 0.65), all from the same resamples. Multi-class runs: per class over the images where the
class is scored (``per_class[name]["ci95"]``), and for the headline macro means the interval of the
mean over classes of the resampled per-class means (images resampled once for all classes).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from medseg.evaluation.stats import bootstrap_means, bootstrap_statistic
from medseg.metrics import THRESHOLDED_JACCARD_CUTOFF, MetricAccumulator, MulticlassAccumulator


def _columns(rows: list[dict[str, Any]], names: tuple[str, ...]) -> dict[str, np.ndarray]:
    cols = {k: np.array([r.get(k, math.nan) for r in rows], dtype=np.float64) for k in names}
    if "iou" in cols:
        iou = cols["iou"]
        cols["failure_rate"] = np.where(np.isnan(iou), np.nan, (iou < THRESHOLDED_JACCARD_CUTOFF).astype(float))
    return cols


def add_intervals(summary: dict[str, Any], acc: MetricAccumulator | MulticlassAccumulator, *,
                  n_resamples: int = 2000, seed: int = 0) -> dict[str, Any]:
    """Add ``ci95`` ({figure: [low, high]}) and ``bootstrap`` (resamples, seed) to ``summary``; return it."""
    summary["bootstrap"] = {"resamples": n_resamples, "seed": seed, "level": 0.95, "method": "percentile"}
    if isinstance(acc, MetricAccumulator):
        ci = bootstrap_means(_columns(acc.rows(), acc.names), n_resamples=n_resamples, seed=seed)
        summary["ci95"] = {k: list(v) for k, v in ci.items()}
        return summary
    names = acc.metric_names
    class_cols = {c: _columns(rows, names) for c, rows in acc.class_rows().items()}
    for c, cols in class_cols.items():
        ci = bootstrap_means({k: v for k, v in cols.items() if k != "failure_rate"}, n_resamples=n_resamples,
                             seed=seed)
        summary["per_class"][c]["ci95"] = {k: list(v) for k, v in ci.items()}
    n = len(acc)
    summary["ci95"] = {}
    for metric in names:
        values = np.stack([class_cols[c][metric] for c in class_cols], axis=1)  # (n, classes)
        finite = np.isfinite(values)
        filled = np.where(finite, values, 0.0)

        def macro(w: np.ndarray, filled=filled, finite=finite) -> np.ndarray:
            with np.errstate(invalid="ignore", divide="ignore"):
                per_class = (w @ filled) / (w @ finite)
            return np.nanmean(np.where(np.isfinite(per_class), per_class, np.nan), axis=1)

        with np.errstate(all="ignore"):
            import warnings

            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # resamples without a class: skipped
                summary["ci95"][metric] = list(bootstrap_statistic(n, macro, n_resamples=n_resamples, seed=seed))
    fails = _columns(acc.rows(), ("iou",))["failure_rate"]
    summary["ci95"]["failure_rate"] = list(bootstrap_means({"f": fails}, n_resamples=n_resamples, seed=seed)["f"])
    return summary
