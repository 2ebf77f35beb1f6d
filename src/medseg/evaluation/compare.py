"""``medseg compare A B DATA``: are two models' results on the same images really different?

A and B are each a run (folder with best.pt, a checkpoint or an .onnx file: evaluated here) or a
folder of predicted masks named ``<image stem>.png`` (what ``medseg predict`` writes). Per image and
metric (Dice, IoU, HD95) the difference B - A, its mean with a bootstrap 95 % interval, and the
Wilcoxon signed-rank p-value (:func:`medseg.evaluation.stats.paired_comparison`). Only images scored
for both are compared. Lower is better for HD95.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from medseg.data.pairs import Pair
from medseg.data.prepare import discover_and_check, pairs_for_split
from medseg.data.readers import TargetSpec, read_pair_target
from medseg.data.source import DataSource
from medseg.errors import DataError, MedsegError
from medseg.evaluation.stats import paired_comparison
from medseg.io.images import read_mask
from medseg.io.tables import read_per_image_csv, write_per_image_csv, write_summary_json
from medseg.metrics import image_metrics

log = logging.getLogger(__name__)

COMPARED = (("dice", True), ("iou", True), ("hd95", False))


def is_prediction_folder(path: Path) -> bool:
    """A folder of mask PNGs without a checkpoint (not a run)."""
    return path.is_dir() and not (path / "best.pt").is_file() and not (path / "last.pt").is_file()


def score_folder(folder: Path, pairs: list[Pair], spec: TargetSpec, *, tolerance_px: float = 2.0
                 ) -> list[dict[str, Any]]:
    """Per-image Dice, IoU and surface metrics of ``<stem>.png`` masks in ``folder`` against the truth.

    Binary masks only (nonzero = foreground); inside each pair's region of interest when it has one.
    Images without a prediction are logged and left out.
    """
    from medseg.evaluation.evaluate import read_roi
    from medseg.evaluation.surface import surface_metrics

    rows = []
    for pair in pairs:
        path = folder / f"{pair.image.stem}.png"
        if not path.is_file():
            log.warning("no prediction %s for %s; left out of the comparison", path, pair.case_id)
            continue
        truth = read_pair_target(pair, spec) != 0
        pred = read_mask(path) != 0
        if pred.shape != truth.shape:
            raise DataError(f"prediction {path} is {pred.shape[1]}x{pred.shape[0]} but the mask of {pair.case_id} "
                            f"is {truth.shape[1]}x{truth.shape[0]}")
        roi = read_roi(pair, truth.shape)
        if roi is not None:
            metrics = image_metrics(pred[roi], truth[roi]) | surface_metrics(pred & roi, truth & roi,
                                                                              tolerance=tolerance_px)
        else:
            metrics = image_metrics(pred, truth) | surface_metrics(pred, truth, tolerance=tolerance_px)
        rows.append({"case_id": pair.case_id, **metrics})
    return rows


def _rows(source: Path, data, split: str, out: Path, name: str) -> list[dict[str, Any]]:
    if is_prediction_folder(source):
        report = discover_and_check(data, progress=False)
        pairs = pairs_for_split(report, split, None)
        rows = score_folder(source, pairs, TargetSpec())
        write_per_image_csv(out / name / "per_image.csv", rows)
        return rows
    from medseg.evaluation.evaluate import evaluate

    evaluate(source, data, split=split, out=out / name, progress=False)
    return read_per_image_csv(out / name / "per_image.csv")


def compare(a: str | Path, b: str | Path, data: DataSource | str | Path | None, *, split: str = "val",
            out: str | Path = "compare", seed: int = 0, n_resamples: int = 2000) -> dict[str, Any]:
    """Score A and B on ``split`` of ``data`` (a DataSource or a data folder) and compare them image by image;
    writes ``OUT/compare.json`` and ``OUT/paired.csv`` (per image: each metric for A, B and B - A). Returns the
    comparison."""
    a, b, out = Path(a), Path(b), Path(out)
    rows_a = {r["case_id"]: r for r in _rows(a, data, split, out, "A")}
    rows_b = {r["case_id"]: r for r in _rows(b, data, split, out, "B")}
    common = sorted(set(rows_a) & set(rows_b))
    if not common:
        raise MedsegError(f"{a} and {b} have no scored image in common on split {split!r}")
    result: dict[str, Any] = {"a": str(a), "b": str(b), "split": split, "n_images": len(common),
                              "only_a": len(set(rows_a) - set(rows_b)), "only_b": len(set(rows_b) - set(rows_a)),
                              "test": "Wilcoxon signed-rank (scipy, two-sided); percentile bootstrap of the mean "
                                      f"difference B - A ({n_resamples} resamples, seed {seed})", "metrics": {}}
    paired = []
    for case in common:
        row = {"case_id": case}
        for metric, _ in COMPARED:
            row[f"{metric}_a"], row[f"{metric}_b"] = rows_a[case][metric], rows_b[case][metric]
            row[f"{metric}_diff"] = rows_b[case][metric] - rows_a[case][metric]
        paired.append(row)
    for metric, higher in COMPARED:
        va = np.array([rows_a[c][metric] for c in common], dtype=np.float64)
        vb = np.array([rows_b[c][metric] for c in common], dtype=np.float64)
        result["metrics"][metric] = paired_comparison(va, vb, higher_is_better=higher, seed=seed,
                                                      n_resamples=n_resamples) | {"higher_is_better": higher}
    write_per_image_csv(out / "paired.csv", paired)
    write_summary_json(out / "compare.json", result)
    return result
