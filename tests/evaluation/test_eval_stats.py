"""Surface metrics, bootstrap intervals, paired tests, pixel scores and CV folds on tiny hand-made data."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import ndimage
from scipy.stats import wilcoxon

from medseg.data.folds import assign_folds
from medseg.data.pairs import Pair
from medseg.evaluation.pixel_scores import BINS, auc_roc, average_precision, image_histograms, reliability
from medseg.evaluation.qc import auroc, calibrate
from medseg.evaluation.stats import bootstrap_means, bootstrap_statistic, paired_comparison, resample_indices
from medseg.evaluation.surface import image_diagonal, surface_metrics
from medseg.inference.tta import qc_score


def square(shape, top, left, h, w):
    m = np.zeros(shape, bool)
    m[top:top + h, left:left + w] = True
    return m


def brute_force(pred, truth, spacing=(1.0, 1.0), tol=1.0):
    """Independent reference: boundary = mask minus its erosion; all pairwise distances."""
    def edge(m):
        return np.argwhere(m & ~ndimage.binary_erosion(m)) * np.asarray(spacing)

    ep, et = edge(pred), edge(truth)
    d = np.sqrt(((ep[:, None, :] - et[None, :, :]) ** 2).sum(-1))
    d_pt, d_tp = d.min(1), d.min(0)
    hd95 = max(np.percentile(d_pt, 95), np.percentile(d_tp, 95))
    assd = np.concatenate([d_pt, d_tp]).mean()
    nsd = ((d_pt <= tol).sum() + (d_tp <= tol).sum()) / (len(d_pt) + len(d_tp))
    return hd95, assd, nsd


CASES = [
    (square((12, 14), 2, 2, 5, 6), square((12, 14), 2, 4, 5, 6)),  # shifted by 2 columns
    (square((12, 14), 3, 3, 6, 6), square((12, 14), 4, 4, 3, 4)),  # nested
    (square((16, 16), 1, 1, 4, 4) | square((16, 16), 9, 9, 5, 5), square((16, 16), 2, 1, 4, 5)),  # a false object
    (square((12, 10), 0, 0, 7, 10), square((12, 10), 0, 3, 12, 7)),  # touching the image border
]


@pytest.mark.parametrize("spacing", [None, (2.0, 0.5)])
@pytest.mark.parametrize("case", range(len(CASES)))
def test_surface_metrics_match_monai_and_a_brute_force_reference(case, spacing):
    from monai.metrics import compute_average_surface_distance, compute_hausdorff_distance, compute_surface_dice

    pred, truth = CASES[case]
    got = surface_metrics(pred, truth, spacing=spacing, tolerance=1.0)
    yp = torch.from_numpy(pred[None, None].astype(np.float32))
    yt = torch.from_numpy(truth[None, None].astype(np.float32))
    sp = list(spacing) if spacing else None
    assert got["hd95"] == pytest.approx(compute_hausdorff_distance(yp, yt, True, percentile=95, spacing=sp).item())
    assert got["assd"] == pytest.approx(compute_average_surface_distance(yp, yt, True, symmetric=True,
                                                                         spacing=sp).item())
    assert got["nsd"] == pytest.approx(compute_surface_dice(yp, yt, [1.0], True, spacing=sp).item())
    hd95, assd, nsd = brute_force(pred, truth, spacing or (1.0, 1.0), 1.0)
    assert got["hd95"] == pytest.approx(hd95, rel=1e-5)
    assert got["assd"] == pytest.approx(assd, rel=1e-5)
    assert got["nsd"] == pytest.approx(nsd, rel=1e-5)


def test_surface_metrics_golden_values():
    truth = square((10, 10), 2, 2, 4, 4)
    assert surface_metrics(truth, truth) == {"hd95": 0.0, "assd": 0.0, "nsd": 1.0}
    shifted = square((10, 10), 2, 4, 4, 4)  # two columns to the right: every left/right edge pixel 2 px off
    px = surface_metrics(shifted, truth, tolerance=1.0)
    assert px["hd95"] == pytest.approx(2.0)
    mm = surface_metrics(shifted, truth, spacing=(3.0, 0.25), tolerance=1.0)
    assert mm["hd95"] == pytest.approx(0.5)  # the 2-column shift is 2 x 0.25 mm; rows move nothing
    assert mm["nsd"] == pytest.approx(1.0)  # within 1 mm everywhere


def test_surface_metrics_empty_conventions_are_finite():
    empty, obj = np.zeros((8, 6), bool), square((8, 6), 1, 1, 3, 3)
    assert surface_metrics(empty, empty) == {"hd95": 0.0, "assd": 0.0, "nsd": 1.0}
    for pred, truth in ((empty, obj), (obj, empty)):
        got = surface_metrics(pred, truth, spacing=(0.5, 2.0))
        assert got["hd95"] == got["assd"] == pytest.approx(math.hypot(8 * 0.5, 6 * 2.0))
        assert got["nsd"] == 0.0
    assert image_diagonal((3, 4)) == 5.0


def slow_bootstrap_means(values, n_resamples, seed):
    """Reference: one resample at a time with the same random stream."""
    values = np.asarray(values, float)
    stats = []
    for idx in resample_indices(len(values), n_resamples, seed):
        for row in idx:
            sample = values[row]
            stats.append(np.nanmean(sample) if np.isfinite(sample).any() else np.nan)
    stats = np.array(stats)
    stats = stats[np.isfinite(stats)]
    return tuple(np.quantile(stats, [0.025, 0.975]))


def test_bootstrap_means_matches_a_slow_loop_and_is_seeded():
    rng = np.random.default_rng(3)
    dice = rng.beta(5, 2, size=37)
    hd = rng.gamma(2, 3, size=37)
    hd[[4, 9]] = np.nan  # undefined for two images: left out of each resampled mean
    fast = bootstrap_means({"dice": dice, "hd": hd}, n_resamples=1500, seed=11)
    assert fast["dice"] == pytest.approx(slow_bootstrap_means(dice, 1500, 11))
    assert fast["hd"] == pytest.approx(slow_bootstrap_means(hd, 1500, 11))
    assert fast == bootstrap_means({"dice": dice, "hd": hd}, n_resamples=1500, seed=11)
    assert fast["dice"][0] < dice.mean() < fast["dice"][1]
    other = bootstrap_means({"dice": dice}, n_resamples=1500, seed=12)["dice"]
    assert other != fast["dice"]


def test_bootstrap_statistic_weights_reproduce_resampled_means():
    values = np.arange(10, dtype=float) ** 2
    weighted = bootstrap_statistic(10, lambda w: (w @ values) / w.sum(1), n_resamples=1200, seed=5)
    assert weighted == pytest.approx(bootstrap_means({"v": values}, n_resamples=1200, seed=5)["v"])


def test_paired_comparison_against_scipy():
    rng = np.random.default_rng(0)
    a = rng.uniform(0.6, 0.9, 40)
    b = a + rng.normal(0.03, 0.02, 40)
    r = paired_comparison(a, b)
    assert r["p_value"] == pytest.approx(wilcoxon(a, b, zero_method="wilcox").pvalue)
    assert r["mean_diff"] == pytest.approx(np.mean(b - a))
    assert r["ci_low"] < r["mean_diff"] < r["ci_high"]
    assert r["better"] == "B" and r["significant"]
    hd = paired_comparison(a, b, higher_is_better=False)
    assert hd["better"] == "A"
    same = paired_comparison(a, a)
    assert same["p_value"] == 1.0 and same["better"] == "tie" and not same["significant"]
    c = a + rng.normal(0, 0.05, 40)
    c[:3] = a[:3]  # zero differences are dropped, as scipy's "wilcox" method does
    assert paired_comparison(a, c)["p_value"] == pytest.approx(wilcoxon(a, c, zero_method="wilcox").pvalue)
    with_nan = paired_comparison(np.append(a, np.nan), np.append(b, 0.5))
    assert with_nan["n"] == 40 and with_nan["p_value"] == pytest.approx(r["p_value"])


def exact_auc(scores, labels):
    pos, neg = scores[labels], scores[~labels]
    return ((pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()) / (len(pos) * len(neg))


def test_pixel_auc_and_average_precision_from_histograms():
    rng = np.random.default_rng(1)
    truth = rng.random((30, 40)) < 0.3
    proba = np.clip(np.where(truth, 0.65, 0.35) + rng.normal(0, 0.2, truth.shape), 0, 1)
    proba = np.round(proba * BINS - 0.5) / BINS + 0.5 / BINS  # one value per bin: the binning is exact
    neg, pos = image_histograms(proba, truth)
    assert auc_roc(neg, pos) == pytest.approx(exact_auc(proba.ravel(), truth.ravel()))
    order = np.argsort(-proba.ravel(), kind="stable")
    labels = truth.ravel()[order]
    scores = proba.ravel()[order]
    # step-wise AP over distinct thresholds (sklearn's definition)
    ap, prev_recall = 0.0, 0.0
    for t in np.unique(scores)[::-1]:
        sel = scores >= t
        tp = labels[sel].sum()
        recall, precision = tp / labels.sum(), tp / sel.sum()
        ap += (recall - prev_recall) * precision
        prev_recall = recall
    assert average_precision(neg, pos) == pytest.approx(ap)
    roi = np.zeros_like(truth)
    roi[:, :20] = True
    neg_r, pos_r = image_histograms(proba, truth, roi)
    assert neg_r.sum() + pos_r.sum() == 30 * 20
    assert math.isnan(float(auc_roc(neg_r * 0, pos_r)))


def test_reliability_of_a_calibrated_and_an_overconfident_model():
    p = np.repeat(np.linspace(0.05, 0.95, 10), 1000)
    rng = np.random.default_rng(0)
    calibrated = rng.random(p.size) < p
    neg, pos = image_histograms(p[None], calibrated[None])
    assert reliability(neg, pos)["ece"] < 0.03
    neg, pos = image_histograms(np.where(p > 0.5, 0.99, 0.01)[None], calibrated[None])
    assert reliability(neg, pos)["ece"] > 0.2


def test_qc_score_and_calibration():
    proba = np.zeros((10, 10), np.float32)
    proba[2:6, 2:6] = 0.9
    std = np.zeros_like(proba)
    assert qc_score(proba, std) == 0.0
    std[2:6, 2:4] = 0.3  # members disagree on half of the object
    assert qc_score(proba, std) == pytest.approx(0.5)
    assert qc_score(np.zeros_like(proba), np.zeros_like(proba)) == 0.0
    rng = np.random.default_rng(0)
    iou = rng.uniform(0.3, 0.95, 200)
    scores = 1 - iou + rng.normal(0, 0.1, 200)  # informative score
    cal = calibrate(scores, iou)
    assert cal["auroc"] == pytest.approx(exact_auc(scores, iou < 0.65))
    assert cal["auroc"] > 0.8 and cal["auroc_ci95"][0] < cal["auroc"] < cal["auroc_ci95"][1]
    flagged = scores >= cal["threshold"]
    assert cal["sensitivity"] == pytest.approx((flagged & (iou < 0.65)).sum() / (iou < 0.65).sum())
    assert math.isnan(auroc(scores, np.zeros(200, bool)))


def pairs_with_groups(n_groups, rng):
    pairs, fg = [], {}
    for g in range(n_groups):
        for j in range(int(rng.integers(1, 5))):
            case = f"c{g}_{j}"
            pairs.append(Pair(case, None, None, attrs=(("patient", f"p{g}"),)))
            fg[case] = float(rng.random())
    return pairs, fg


@pytest.mark.parametrize("seed", range(25))
def test_grouped_folds_never_split_a_group(seed):
    rng = np.random.default_rng(seed)
    k = int(rng.integers(2, 6))
    pairs, fg = pairs_with_groups(int(rng.integers(k, 40)), rng)
    folds = assign_folds(pairs, k, fg_fraction=fg, group_by="patient", seed=seed)
    assert set(folds) == {p.case_id for p in pairs}
    by_group: dict[str, set[int]] = {}
    for p in pairs:
        by_group.setdefault(p.attr("patient"), set()).add(folds[p.case_id])
    assert all(len(f) == 1 for f in by_group.values())
    assert set(folds.values()) == set(range(k))  # no empty fold
    assert folds == assign_folds(pairs, k, fg_fraction=fg, group_by="patient", seed=seed)


def test_folds_are_stratified_by_foreground_size():
    pairs = [Pair(f"c{i}", None, None) for i in range(100)]
    fg = {p.case_id: i / 100 for i, p in enumerate(pairs)}
    folds = assign_folds(pairs, 5, fg_fraction=fg, seed=0)
    sizes = np.bincount(list(folds.values()))
    assert sizes.tolist() == [20] * 5
    means = [np.mean([fg[c] for c, f in folds.items() if f == k]) for k in range(5)]
    assert max(means) - min(means) < 0.05  # every fold spans small to large objects alike
