"""A per-image failure flag from disagreement between test-time-augmentation members (and folds).

The score of one image is :func:`medseg.inference.tta.qc_score` (computed wherever predictions are
made: predict, evaluate, serve). The threshold is calibrated on validation images to catch images
with Jaccard < 0.65 (the ISIC "failure" cut-off): the score maximising Youden's J (sensitivity +
specificity - 1), and the flag's AUROC for that task is reported with a bootstrap interval, so users
know how far to trust it.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from medseg.inference.tta import STD_CUTOFF
from medseg.io.files import write_text_atomic
from medseg.metrics import THRESHOLDED_JACCARD_CUTOFF

QC_FILE = "qc.json"


def auroc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve of ``scores`` for the boolean labels (Mann-Whitney U / (n1 n0)); NaN
    when one class is missing."""
    from scipy.stats import rankdata

    scores, positive = np.asarray(scores, dtype=np.float64), np.asarray(positive, dtype=bool)
    n1, n0 = int(positive.sum()), int((~positive).sum())
    if n1 == 0 or n0 == 0:
        return math.nan
    ranks = rankdata(scores)
    return float((ranks[positive].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def calibrate(scores: np.ndarray, iou: np.ndarray, *, cutoff: float = THRESHOLDED_JACCARD_CUTOFF, seed: int = 0,
              n_resamples: int = 2000) -> dict[str, Any]:
    """Choose the flag threshold on validation scores and Jaccards; report how well it catches failures.

    Returns ``threshold`` (flag when score >= threshold), ``auroc`` and ``auroc_ci95``, ``sensitivity``,
    ``specificity``, ``n_images``, ``n_failures`` (Jaccard < ``cutoff``), ``n_flagged``. With no failure
    (or only failures) the threshold is the largest score (nothing flagged) and AUROC is NaN.
    """
    from medseg.evaluation.stats import bootstrap_statistic

    scores, iou = np.asarray(scores, dtype=np.float64), np.asarray(iou, dtype=np.float64)
    failed = iou < cutoff
    out: dict[str, Any] = {"score": f"TTA disagreement |U|/|U or F|, U: member std >= {STD_CUTOFF:g}",
                           "target": f"Jaccard < {cutoff}", "n_images": int(len(scores)),
                           "n_failures": int(failed.sum()), "auroc": auroc(scores, failed)}
    if math.isnan(out["auroc"]):
        threshold = float(np.nextafter(scores.max(), np.inf)) if len(scores) else 1.0
    else:
        candidates = np.unique(scores)
        flagged = scores[None, :] >= candidates[:, None]
        sens = (flagged & failed).sum(1) / failed.sum()
        spec = (~flagged & ~failed).sum(1) / (~failed).sum()
        threshold = float(candidates[int(np.argmax(sens + spec - 1))])
        order = np.arange(len(scores))

        def boot_auc(w: np.ndarray) -> np.ndarray:  # resampled AUROC, from the weights' implied indices
            return np.array([auroc(scores[np.repeat(order, r.astype(int))], failed[np.repeat(order, r.astype(int))])
                             for r in w])

        out["auroc_ci95"] = list(bootstrap_statistic(len(scores), boot_auc, n_resamples=n_resamples, seed=seed))
    flag = scores >= threshold
    out.update(threshold=threshold, n_flagged=int(flag.sum()),
               sensitivity=float((flag & failed).sum() / failed.sum()) if failed.any() else math.nan,
               specificity=float((~flag & ~failed).sum() / (~failed).sum()) if (~failed).any() else math.nan)
    return out


def write_qc(path: str | Path, calibration: dict[str, Any]) -> Path:
    """Write a calibration (from :func:`calibrate`) as JSON, atomically."""
    from medseg.io.tables import json_safe

    write_text_atomic(path, json.dumps(json_safe(calibration), indent=2) + "\n")
    return Path(path)


def find_calibration(run: str | Path) -> dict[str, Any] | None:
    """The QC calibration of a run: ``RUN/qc.json``, else ``RUN/eval_val/qc.json`` (None when absent)."""
    run = Path(run)
    folder = run if run.is_dir() else run.parent
    for path in (folder / QC_FILE, folder / "eval_val" / QC_FILE):
        if path.is_file():
            return json.loads(path.read_text(encoding="utf-8"))
    return None


def write_qc_csv(path: str | Path, rows: list[tuple[str, float]], calibration: dict[str, Any] | None) -> Path:
    """``qc.csv``: image, qc_score, and (when calibrated) flagged (1 = likely Jaccard < 0.65)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    threshold = calibration.get("threshold") if calibration else None
    writer.writerow(["image", "qc_score"] + (["flagged"] if threshold is not None else []))
    for name, score in rows:
        writer.writerow([name, f"{score:.6f}"] + ([int(score >= threshold)] if threshold is not None else []))
    write_text_atomic(path, buf.getvalue())
    return Path(path)
