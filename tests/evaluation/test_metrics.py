"""Golden values on tiny hand-made masks, including every empty-mask case."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import torch

from medseg.errors import DataError
from medseg.io.tables import write_per_image_csv, write_summary_json
from medseg.metrics import (
    METRICS,
    THRESHOLDED_JACCARD_CUTOFF,
    Confusion,
    MetricAccumulator,
    batch_confusion,
    batch_dice,
    confusion,
    dice,
    image_metrics,
    iou,
)


def grid(*rows: str) -> np.ndarray:
    """'#' is foreground, '.' background."""
    return np.array([[c == "#" for c in row] for row in rows])


# 4x4 (16 px). pred = 6 px, target = 4 px, overlap = 3 px.
PRED = grid("###.", "###.", "....", "....")
TRUE = grid(".##.", ".#..", ".#..", "....")
# tp = 3 ((0,1),(0,2),(1,1)); fp = 6 - 3 = 3; fn = 4 - 3 = 1; tn = 16 - 7 = 9
EMPTY = np.zeros((4, 4), dtype=bool)


def test_confusion_counts_by_hand():
    assert confusion(PRED, TRUE) == (3, 3, 1, 9)


def test_confusion_accepts_any_nonzero_as_foreground():
    assert confusion(PRED.astype(np.uint8) * 255, TRUE.astype(np.int64)) == (3, 3, 1, 9)


def test_confusion_rejects_shape_mismatch():
    with pytest.raises(DataError, match="same size"):
        confusion(PRED, np.zeros((4, 5)))


def test_image_metrics_golden_values():
    m = image_metrics(PRED, TRUE)
    assert m["dice"] == pytest.approx(6 / 10)  # 2*3 / (2*3 + 3 + 1)
    assert m["iou"] == pytest.approx(3 / 7)  # 3 / (3 + 3 + 1)
    assert m["sensitivity"] == pytest.approx(3 / 4)  # 3 / (3 + 1)
    assert m["specificity"] == pytest.approx(9 / 12)  # 9 / (9 + 3)
    assert m["precision"] == pytest.approx(3 / 6)  # 3 / (3 + 3)
    assert m["accuracy"] == pytest.approx(12 / 16)  # (3 + 9) / 16
    assert m["thresholded_jaccard"] == 0.0  # 3/7 = 0.43 < 0.65
    assert m["fg_pred"] == 6 and m["fg_true"] == 4


def test_both_empty_is_perfect():
    m = image_metrics(EMPTY, EMPTY)
    for key in ("dice", "iou", "sensitivity", "specificity", "precision", "accuracy"):
        assert m[key] == 1.0, key
    assert m["thresholded_jaccard"] == 1.0
    assert m["fg_pred"] == 0 and m["fg_true"] == 0


def test_target_empty_prediction_not():
    pred = grid("##..", "....", "....", "....")
    m = image_metrics(pred, EMPTY)  # tp=0 fp=2 fn=0 tn=14
    assert m["dice"] == 0.0 and m["iou"] == 0.0
    assert m["precision"] == 0.0  # 0 / 2
    assert m["sensitivity"] == 1.0  # 0 / 0: nothing to find
    assert m["specificity"] == pytest.approx(14 / 16)
    assert m["accuracy"] == pytest.approx(14 / 16)
    assert m["thresholded_jaccard"] == 0.0


def test_prediction_empty_target_not():
    m = image_metrics(EMPTY, TRUE)  # tp=0 fp=0 fn=4 tn=12
    assert m["dice"] == 0.0 and m["iou"] == 0.0
    assert m["sensitivity"] == 0.0  # 0 / 4
    assert m["precision"] == 1.0  # 0 / 0: nothing falsely found
    assert m["specificity"] == 1.0  # 12 / 12
    assert m["accuracy"] == pytest.approx(12 / 16)


def test_no_background_gives_specificity_one():
    full = np.ones((4, 4), dtype=bool)
    m = image_metrics(full, full)
    assert m["specificity"] == 1.0 and m["dice"] == 1.0
    m = image_metrics(EMPTY, full)  # tn + fp = 0
    assert m["specificity"] == 1.0 and m["sensitivity"] == 0.0


def test_no_metric_is_nan_in_any_empty_case():
    for pred, target in [(EMPTY, EMPTY), (PRED, EMPTY), (EMPTY, TRUE)]:
        assert not any(math.isnan(v) for v in image_metrics(pred, target).values())


def _iou_pair(tp: int, extra: int, side: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Masks on a side x side grid with iou = tp / (tp + extra)."""
    target = np.zeros(side * side, dtype=bool)
    target[:tp] = True
    pred = np.zeros(side * side, dtype=bool)
    pred[: tp + extra] = True
    return pred.reshape(side, side), target.reshape(side, side)


def test_thresholded_jaccard_boundary():
    assert THRESHOLDED_JACCARD_CUTOFF == 0.65
    # 13 / 20 = 0.65 exactly: kept
    m = image_metrics(*_iou_pair(13, 7))
    assert m["iou"] == pytest.approx(0.65)
    assert m["thresholded_jaccard"] == m["iou"]
    # 64 / 99 = 0.6465 just below: zeroed
    m = image_metrics(*_iou_pair(64, 35))
    assert m["iou"] < 0.65 and m["thresholded_jaccard"] == 0.0
    # 66 / 100 = 0.66 just above: kept
    m = image_metrics(*_iou_pair(66, 34))
    assert m["thresholded_jaccard"] == pytest.approx(0.66)


def test_accumulator_aggregate_by_hand():
    acc = MetricAccumulator()
    acc.update("a", PRED, TRUE)  # dice 0.6, iou 3/7, tj 0
    acc.update("b", TRUE, TRUE)  # perfect: dice 1, iou 1, tj 1
    acc.update("c", EMPTY, EMPTY)  # both empty: all 1, empty target
    acc.update("d", PRED, EMPTY)  # dice 0, iou 0, precision 0, sensitivity 1, empty target
    s = acc.aggregate()
    assert s["n_images"] == 4 and len(acc) == 4
    assert s["n_empty_targets"] == 2
    assert s["dice"] == pytest.approx((0.6 + 1 + 1 + 0) / 4)
    assert s["iou"] == pytest.approx((3 / 7 + 1 + 1 + 0) / 4)
    assert s["thresholded_jaccard"] == pytest.approx((0 + 1 + 1 + 0) / 4)
    assert s["failure_rate"] == pytest.approx(2 / 4)  # a and d below 0.65
    assert s["precision"] == pytest.approx((0.5 + 1 + 1 + 0) / 4)
    assert s["sensitivity"] == pytest.approx((0.75 + 1 + 1 + 1) / 4)
    assert s["specificity"] == pytest.approx((0.75 + 1 + 1 + 10 / 16) / 4)  # d: tn=10, fp=6


def test_accumulator_rows_reset_and_nan_rows():
    acc = MetricAccumulator()
    acc.update("a", PRED, TRUE)
    rows = acc.rows()
    assert [r["case_id"] for r in rows] == ["a"]
    assert list(rows[0])[0] == "case_id" and rows[0]["dice"] == pytest.approx(0.6)
    rows[0]["dice"] = 99  # rows() returns copies
    assert acc.rows()[0]["dice"] == pytest.approx(0.6)
    acc._rows.append({**acc._rows[0], "case_id": "nan", "precision": math.nan})
    assert acc.aggregate()["precision"] == pytest.approx(0.5)  # nan skipped
    acc.reset()
    s = acc.aggregate()
    assert s["n_images"] == 0 and math.isnan(s["dice"]) and math.isnan(s["failure_rate"])


@pytest.mark.parametrize("shape", [(3, 1, 4, 4), (3, 4, 4)])
def test_batch_dice_matches_image_metrics(shape):
    preds = np.stack([PRED, EMPTY, PRED])
    targets = np.stack([TRUE, EMPTY, EMPTY])
    got = batch_dice(torch.from_numpy(preds).reshape(shape), torch.from_numpy(targets).reshape(shape))
    want = [image_metrics(p, t)["dice"] for p, t in zip(preds, targets, strict=True)]
    assert got.shape == (3,)
    assert got.tolist() == pytest.approx(want)
    assert want == pytest.approx([0.6, 1.0, 0.0])
    as_float = torch.from_numpy(preds).float().reshape(shape)
    got01 = batch_dice(as_float, torch.from_numpy(targets).reshape(shape))
    assert got01.tolist() == pytest.approx(want)


def test_batch_dice_rejects_multichannel():
    with pytest.raises(DataError):
        batch_dice(torch.zeros(2, 3, 4, 4), torch.zeros(2, 3, 4, 4))


def test_writers_are_atomic_and_valid(tmp_path):
    acc = MetricAccumulator()
    acc.update("a", PRED, TRUE)
    acc.update("b", EMPTY, EMPTY)
    out = write_per_image_csv(tmp_path / "sub" / "per_image.csv", acc.rows())
    with out.open() as fh:
        lines = list(csv.DictReader(fh))
    assert [r["case_id"] for r in lines] == ["a", "b"]
    assert float(lines[0]["dice"]) == pytest.approx(0.6)
    summary = {**MetricAccumulator().aggregate(), "note": [np.float64(1.5)]}
    path = write_summary_json(tmp_path / "summary.json", summary)
    loaded = json.loads(path.read_text())  # NaN became null: strict JSON
    assert loaded["dice"] is None and loaded["n_images"] == 0 and loaded["note"] == [1.5]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sub", "summary.json"]  # no temp files left


def test_pure_functions_on_hand_counts():
    """Golden values from one confusion count: tp 3, fp 1, fn 2, tn 4 (10 pixels)."""
    c = Confusion(3, 1, 2, 4)
    assert dice(c) == pytest.approx(6 / 9) and iou(c) == pytest.approx(3 / 6)
    got = {name: f(c) for name, f in METRICS.items()}
    assert got == pytest.approx({"dice": 6 / 9, "iou": 0.5, "sensitivity": 3 / 5, "specificity": 4 / 5,
                                 "precision": 3 / 4, "accuracy": 7 / 10, "thresholded_jaccard": 0.0})
    assert dice(Confusion(0, 0, 0, 9)) == 1.0 and iou(Confusion(0, 2, 0, 7)) == 0.0


def test_batch_confusion_counts_match_numpy():
    rng = np.random.default_rng(3)
    pred, truth = rng.random((4, 7, 5)) > 0.5, rng.random((4, 7, 5)) > 0.6
    counts = batch_confusion(torch.from_numpy(pred), torch.from_numpy(truth))
    for i in range(4):
        assert tuple(int(v[i]) for v in counts) == tuple(confusion(pred[i], truth[i]))
    np.testing.assert_allclose(dice(counts).numpy(), [dice(confusion(p, t)) for p, t in zip(pred, truth, strict=True)],
                               rtol=1e-6)
