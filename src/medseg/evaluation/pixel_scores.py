"""Threshold-free pixel scores pooled over a dataset: AUC-ROC, average precision, calibration (ECE).

Every pixel (inside the region of interest when there is one) of every image counts once, as the
retina-vessel literature reports AUC inside the field of view. Foreground probabilities are binned
into ``BINS`` equal bins per image (positives and negatives counted separately), so a dataset costs
(images x 2 x BINS) numbers, any image subset (a bootstrap resample) is a weighted sum of rows, and
scores are exact up to the bin width (1/1000):

- AUC-ROC: probability that a random foreground pixel scores above a random background pixel, ties
  (same bin) counting one half (Hanley & McNeil 1982);
- average precision: sum over thresholds of (recall step) x precision, highest threshold first
  (the step-wise definition of scikit-learn's ``average_precision_score``);
- reliability diagram and expected calibration error of the foreground probability (Naeini et al.
  2015; Guo et al. 2017): ``ECE = sum_b (n_b / N) |observed foreground rate_b - mean probability_b|``
  over ``RELIABILITY_BINS`` equal-width bins.
"""

from __future__ import annotations

import math

import numpy as np

BINS = 1000
RELIABILITY_BINS = 10


def image_histograms(proba: np.ndarray, truth: np.ndarray, roi: np.ndarray | None = None) -> np.ndarray:
    """(2, BINS) int64 counts of foreground probabilities: row 0 background pixels, row 1 foreground.

    ``proba`` HxW float in [0, 1]; ``truth`` HxW (nonzero = foreground); ``roi`` HxW (nonzero = scored).
    """
    p = np.asarray(proba, dtype=np.float32)
    t = np.asarray(truth) != 0
    if roi is not None:
        keep = np.asarray(roi) != 0
        p, t = p[keep], t[keep]
    bins = np.clip((p.ravel() * BINS).astype(np.int64), 0, BINS - 1)
    t = t.ravel()
    return np.stack([np.bincount(bins[~t], minlength=BINS), np.bincount(bins[t], minlength=BINS)])


def auc_roc(neg: np.ndarray, pos: np.ndarray) -> np.ndarray:
    """AUC-ROC from histograms (..., BINS) of background and foreground pixels; NaN without both kinds."""
    neg, pos = np.asarray(neg, dtype=np.float64), np.asarray(pos, dtype=np.float64)
    pos_above = pos[..., ::-1].cumsum(axis=-1)[..., ::-1] - pos  # foreground pixels in higher bins
    num = (neg * (pos_above + 0.5 * pos)).sum(axis=-1)
    den = neg.sum(axis=-1) * pos.sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)


def average_precision(neg: np.ndarray, pos: np.ndarray) -> np.ndarray:
    """Average precision from histograms (..., BINS); NaN when there is no foreground pixel."""
    neg, pos = np.asarray(neg, dtype=np.float64), np.asarray(pos, dtype=np.float64)
    tp = pos[..., ::-1].cumsum(axis=-1)  # thresholds from the highest bin down
    fp = neg[..., ::-1].cumsum(axis=-1)
    total = tp[..., -1:]
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(tp + fp > 0, tp / np.maximum(tp + fp, 1), 1.0)
        recall_step = pos[..., ::-1] / np.where(total > 0, total, 1)
        ap = (recall_step * precision).sum(axis=-1)
    return np.where(total[..., 0] > 0, ap, np.nan)


def reliability(neg: np.ndarray, pos: np.ndarray, n_bins: int = RELIABILITY_BINS) -> dict[str, list[float] | float]:
    """Reliability diagram and ECE from pooled histograms (BINS,).

    Returns ``confidence`` (mean foreground probability per bin, bin centres approximated by the fine
    bins' centres), ``observed`` (foreground rate per bin), ``count`` (pixels per bin; empty bins NaN
    in the first two) and ``ece``.
    """
    neg, pos = np.asarray(neg, dtype=np.float64), np.asarray(pos, dtype=np.float64)
    centres = (np.arange(BINS) + 0.5) / BINS
    group = np.minimum((np.arange(BINS) * n_bins) // BINS, n_bins - 1)
    count = np.bincount(group, weights=neg + pos, minlength=n_bins)
    fg = np.bincount(group, weights=pos, minlength=n_bins)
    conf_sum = np.bincount(group, weights=(neg + pos) * centres, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        conf = np.where(count > 0, conf_sum / np.maximum(count, 1), np.nan)
        observed = np.where(count > 0, fg / np.maximum(count, 1), np.nan)
    total = count.sum()
    ece = float(np.nansum(count / total * np.abs(observed - conf))) if total else math.nan
    return {"confidence": conf.tolist(), "observed": observed.tolist(), "count": count.tolist(), "ece": ece}


def pooled_scores(hists: np.ndarray, *, n_resamples: int | None = None, seed: int = 0) -> dict[str, object]:
    """Pooled ``auc_roc``, ``average_precision``, ``ece`` of per-image histograms (n, 2, BINS), with
    bootstrap intervals over images (``ci95``) unless ``n_resamples`` is 0."""
    from medseg.evaluation.stats import N_RESAMPLES, bootstrap_statistic

    hists = np.asarray(hists, dtype=np.float64)
    total = hists.sum(axis=0)
    rel = reliability(total[0], total[1])
    out: dict[str, object] = {"auc_roc": float(auc_roc(total[0], total[1])),
                              "average_precision": float(average_precision(total[0], total[1])),
                              "ece": rel["ece"], "reliability": rel}
    if n_resamples != 0 and len(hists):
        n_res = n_resamples or N_RESAMPLES
        flat = hists.reshape(len(hists), -1)

        def pooled(weights: np.ndarray, fn) -> np.ndarray:
            sums = (weights @ flat).reshape(len(weights), 2, BINS)
            return fn(sums[:, 0], sums[:, 1])

        def ece(neg: np.ndarray, pos: np.ndarray) -> np.ndarray:
            return np.array([reliability(a, b)["ece"] for a, b in zip(neg, pos, strict=True)])

        out["ci95"] = {name: bootstrap_statistic(len(hists), lambda w, fn=fn: pooled(w, fn), n_resamples=n_res,
                                                 seed=seed)
                       for name, fn in (("auc_roc", auc_roc), ("average_precision", average_precision),
                                        ("ece", ece))}
    return out
