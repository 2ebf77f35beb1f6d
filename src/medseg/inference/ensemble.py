"""The folds of a cross-validation run as one predictor: mean of the folds' probabilities.

Each fold runs its own preprocessing and TTA (all folds share the config's ``infer`` settings);
probabilities are averaged at the image's own size, then the CV run's post-processing (chosen on the
pooled out-of-fold predictions, ``cv.json``) makes the mask. The uncertainty map is the standard
deviation over every member of every fold (law of total variance over equally sized groups), so
the failure flag sees disagreement between folds as well as between TTA members.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from medseg.config import build_config
from medseg.errors import CheckpointError
from medseg.inference.predictor import Predictor

log = logging.getLogger(__name__)


class EnsemblePredictor(Predictor):
    """Averages the probabilities of several :class:`Predictor` s (the folds of a CV run)."""

    def __init__(self, members: list[Predictor], source: str = "") -> None:
        if not members:
            raise CheckpointError("an ensemble needs at least one member")
        super().__init__(members[0].backend, members[0].config, source=source)
        self.members = members

    def predict_batch(self, images: list[np.ndarray], *, uncertainty: bool = False
                      ) -> list[tuple[np.ndarray, np.ndarray | None]]:
        results = [m.predict_batch(images, uncertainty=uncertainty) for m in self.members]
        out = []
        for i in range(len(images)):
            means = np.stack([r[i][0] for r in results])
            mean = means.mean(axis=0)
            std = None
            if uncertainty:  # total variance = mean within-member variance + variance of member means
                within = np.stack([r[i][1] ** 2 for r in results]).mean(axis=0)
                std = np.sqrt(within + means.var(axis=0))
            out.append((mean.astype(np.float32), std))
        return out

    def with_overrides(self, overrides: list[str] | dict[str, Any]) -> EnsemblePredictor:
        """A new ensemble whose members and config have ``overrides`` applied; this one is unchanged."""
        new = super().with_overrides(overrides)
        new.members = [m.with_overrides(overrides) for m in self.members]
        return new

    def describe(self) -> str:
        return f"ensemble of {len(self.members)} folds ({self.members[0].describe()})"


def load_ensemble(run: str | Path, **load_kw: Any) -> EnsemblePredictor:
    """The trained folds of CV run ``run`` with the post-processing chosen on out-of-fold predictions."""
    from medseg.engine.checkpoint import BEST
    from medseg.engine.cv import fold_dir, read_plan

    run = Path(run)
    plan = read_plan(run)
    folds = [fold_dir(run, i) for i in range(plan["folds"]) if (fold_dir(run, i) / BEST).is_file()]
    if not folds:
        raise CheckpointError(f"cross-validation run {run} has no trained fold yet (no fold_*/best.pt)")
    if len(folds) < plan["folds"]:
        log.warning("ensemble of %d of %d planned folds", len(folds), plan["folds"])
    overrides = list(load_kw.pop("overrides", None) or [])
    chosen = [f"infer.{k}={json.dumps(v)}" for k, v in (plan.get("infer") or {}).items()]
    members = [Predictor.load(f, overrides=chosen + overrides, **load_kw) for f in folds]
    ens = EnsemblePredictor(members, source=str(run))
    ens.config = build_config(base=members[0].config.model_dump(mode="json"))
    return ens
