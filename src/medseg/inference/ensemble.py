"""The folds of a cross-validation run as one predictor: mean of the folds' probabilities.

:meth:`medseg.inference.predictor.Predictor.load` on a CV run folder loads each trained fold (its own
preprocessing and TTA; all folds share the config's ``infer`` settings) as a member of one Predictor.
Probabilities are averaged at the image's own size, then the CV run's post-processing (chosen on the
pooled out-of-fold predictions, ``cv.json``) makes the mask. The uncertainty map is the standard
deviation over every member of every fold (law of total variance over equally sized groups), so
the failure flag sees disagreement between folds as well as between TTA members.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from medseg.engine.checkpoint import BEST
from medseg.engine.cv import fold_dir, read_plan
from medseg.errors import CheckpointError

log = logging.getLogger(__name__)


def trained_folds(run: Path) -> tuple[list[Path], list[str]]:
    """(the fold folders of CV run ``run`` that hold a best.pt, the ``infer.*`` overrides chosen out of fold).

    Raises CheckpointError when no fold is trained yet; logs a warning when only some are.
    """
    plan = read_plan(run)
    folds = [fold_dir(run, i) for i in range(plan["folds"]) if (fold_dir(run, i) / BEST).is_file()]
    if not folds:
        raise CheckpointError(f"cross-validation run {run} has no trained fold yet (no fold_*/best.pt)")
    if len(folds) < plan["folds"]:
        log.warning("ensemble of %d of %d planned folds", len(folds), plan["folds"])
    return folds, [f"infer.{k}={json.dumps(v)}" for k, v in (plan.get("infer") or {}).items()]


def average_members(results: list[list[tuple[np.ndarray, np.ndarray | None]]], uncertainty: bool
                    ) -> list[tuple[np.ndarray, np.ndarray | None]]:
    """Per image, the mean of the members' probabilities (float32) and, with ``uncertainty``, the total
    standard deviation: sqrt(mean within-member variance + variance of the member means).

    ``results[m][i]`` is member m's (probabilities, std or None) for image i, as ``predict_batch`` returns.
    """
    out = []
    for per_image in zip(*results, strict=True):
        means = np.stack([mean for mean, _ in per_image])
        std = None
        if uncertainty:
            within = np.stack([s**2 for _, s in per_image]).mean(axis=0)
            std = np.sqrt(within + means.var(axis=0))
        out.append((means.mean(axis=0).astype(np.float32), std))
    return out
