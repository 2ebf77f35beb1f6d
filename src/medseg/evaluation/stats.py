"""Uncertainty of dataset figures: bootstrap intervals over images and paired comparisons of two models.

Bootstrap (Efron & Tibshirani 1993, ch. 13): images are resampled with replacement ``n_resamples``
times (default 2000, seeded); the 95 % interval is the 2.5th and 97.5th percentile of the resampled
statistic (the percentile interval). All figures of one evaluation share the same resamples. The
resampling is vectorised: a (resamples x images) index matrix, processed in chunks that bound memory.

Paired comparison: the per-image differences B - A on the images both models scored, their mean
with a bootstrap interval, and the Wilcoxon signed-rank test (``scipy.stats.wilcoxon``, two-sided,
zero differences dropped: Wilcoxon's original treatment, ``zero_method="wilcox"``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import numpy as np

N_RESAMPLES = 2000
SEED = 0
LEVEL = 0.95
_CHUNK_ELEMENTS = 4_000_000  # index-matrix entries per chunk (~32 MB of int64)


def resample_indices(n: int, n_resamples: int = N_RESAMPLES, seed: int = SEED):
    """Yield (k, n) int arrays of image indices, ``n_resamples`` rows in all, the same for a given seed."""
    rng = np.random.default_rng(seed)
    rows = max(1, _CHUNK_ELEMENTS // max(n, 1))
    done = 0
    while done < n_resamples:
        k = min(rows, n_resamples - done)
        yield rng.integers(0, n, size=(k, n))
        done += k


def _interval(stats: np.ndarray, level: float) -> tuple[float, float]:
    stats = stats[np.isfinite(stats)]
    if stats.size == 0:
        return (math.nan, math.nan)
    alpha = (1 - level) / 2
    lo, hi = np.quantile(stats, [alpha, 1 - alpha])
    return (float(lo), float(hi))


def bootstrap_means(columns: Mapping[str, np.ndarray], *, n_resamples: int = N_RESAMPLES, seed: int = SEED,
                    level: float = LEVEL) -> dict[str, tuple[float, float]]:
    """95 % percentile-bootstrap interval of the mean of each per-image column (all the same length n).

    NaN entries (a metric not defined for an image) are left out of each resampled mean. Returns
    ``{name: (low, high)}``; NaN bounds when n is 0.
    """
    names = list(columns)
    if not names:
        return {}
    values = np.stack([np.asarray(columns[k], dtype=np.float64) for k in names], axis=1)  # (n, m)
    n = values.shape[0]
    if n == 0:
        return {k: (math.nan, math.nan) for k in names}
    finite = np.isfinite(values)
    filled = np.where(finite, values, 0.0)
    stats = []
    for idx in resample_indices(n, n_resamples, seed):
        sums = filled[idx].sum(axis=1)  # (k, m)
        counts = finite[idx].sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            stats.append(np.where(counts > 0, sums / np.maximum(counts, 1), np.nan))
    all_stats = np.concatenate(stats)
    return {k: _interval(all_stats[:, j], level) for j, k in enumerate(names)}


def bootstrap_statistic(n: int, statistic: Callable[[np.ndarray], np.ndarray], *, n_resamples: int = N_RESAMPLES,
                        seed: int = SEED, level: float = LEVEL) -> tuple[float, float]:
    """Interval of any dataset statistic given resampling *weights*.

    ``statistic(weights)`` receives a (k, n) float array of how often each image was drawn in each
    of k resamples and returns k values (e.g. the pooled pixel AUC of the weighted histograms).
    """
    if n == 0:
        return (math.nan, math.nan)
    out = []
    for idx in resample_indices(n, n_resamples, seed):
        k = idx.shape[0]
        flat = (np.arange(k)[:, None] * n + idx).ravel()
        weights = np.bincount(flat, minlength=k * n).reshape(k, n).astype(np.float64)
        out.append(np.asarray(statistic(weights), dtype=np.float64))
    return _interval(np.concatenate(out), level)


def paired_comparison(a: np.ndarray, b: np.ndarray, *, higher_is_better: bool = True,
                      n_resamples: int = N_RESAMPLES, seed: int = SEED, level: float = LEVEL) -> dict[str, float | str]:
    """Compare paired per-image values of model A and model B (same images, same order).

    Returns ``mean_a``, ``mean_b``, ``mean_diff`` (B - A), its bootstrap interval ``ci_low``/``ci_high``,
    the Wilcoxon signed-rank ``p_value`` (1.0 when every difference is zero), ``n`` (pairs used: NaN in
    either is dropped), ``better`` ("A", "B" or "tie" by the mean difference and ``higher_is_better``)
    and ``significant`` (p < 1 - level and the interval excludes 0).
    """
    from scipy.stats import wilcoxon

    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired values need the same length, got {a.shape} and {b.shape}")
    keep = np.isfinite(a) & np.isfinite(b)
    a, b = a[keep], b[keep]
    diff = b - a
    n = int(diff.size)
    if n == 0:
        return {"n": 0, "mean_a": math.nan, "mean_b": math.nan, "mean_diff": math.nan, "ci_low": math.nan,
                "ci_high": math.nan, "p_value": math.nan, "better": "tie", "significant": False}
    lo, hi = bootstrap_means({"d": diff}, n_resamples=n_resamples, seed=seed, level=level)["d"]
    p = 1.0 if not np.any(diff != 0) else float(wilcoxon(a, b, zero_method="wilcox").pvalue)
    mean_diff = float(diff.mean())
    sign = mean_diff if higher_is_better else -mean_diff
    better = "B" if sign > 0 else "A" if sign < 0 else "tie"
    significant = bool(p < 1 - level and (lo > 0 or hi < 0))
    return {"n": n, "mean_a": float(a.mean()), "mean_b": float(b.mean()), "mean_diff": mean_diff,
            "ci_low": lo, "ci_high": hi, "p_value": p, "better": better, "significant": significant}
