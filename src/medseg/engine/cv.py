"""The plan of a K-fold cross-validation run (``RUN/cv.json``): which case goes to which fold, and
where each fold's run folder is. Training the folds and pooling their out-of-fold predictions is
:mod:`medseg.evaluation.crossval`; the ensemble of the folds is :mod:`medseg.inference.ensemble`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from medseg.data.folds import assign_folds
from medseg.data.readers import TargetSpec, read_pair_target

PLAN = "cv.json"


def fold_dir(run: Path, fold: int) -> Path:
    return Path(run) / f"fold_{fold}"


def read_plan(run: str | Path) -> dict[str, Any] | None:
    path = Path(run) / PLAN
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def make_plan(report, k: int, group_by: str | None, seed: int, target: TargetSpec) -> dict[str, Any]:
    """Fold assignment of the checked pairs outside the test split, stratified by foreground share."""
    pairs = [p for p in report.good if p.split != "test"]
    fg = {}
    for p in pairs:
        mask = read_pair_target(p, target)
        fg[p.case_id] = float(np.count_nonzero(mask)) / mask.size
    assignment = assign_folds(pairs, k, fg_fraction=fg, group_by=group_by, seed=seed)
    return {"folds": k, "group_by": group_by, "seed": seed, "assignment": assignment,
            "stratified_by": "foreground fraction of the mask"}
