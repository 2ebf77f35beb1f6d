"""`medseg train --folds K --time-budget M`: the budget covers the whole cross-validation, every fold
gets a share of it and every fold is trained."""

from __future__ import annotations

import pytest
import yaml

from medseg.engine.checkpoint import BEST
from medseg.engine.cv import fold_dir
from medseg.evaluation.crossval import train_cv
from tests.conftest import TINY


@pytest.mark.slow
def test_a_cv_budget_is_shared_by_every_fold(tiny_dataset, tmp_path):
    budget = 0.3
    overrides = [o for o in TINY if not o.startswith("train.epochs")] + ["train.epochs=50",
                                                                           f"train.time_budget_min={budget}"]
    run = train_cv(tiny_dataset, tmp_path / "cv", folds=3, overrides=overrides, progress=False, summarise=False)
    shares = []
    for i in range(3):
        assert (fold_dir(run, i) / BEST).is_file()  # every fold trained, not only the first
        shares.append(yaml.safe_load((fold_dir(run, i) / "config.yaml").read_text())["train"]["time_budget_min"])
    # the first fold gets a third; a fold that ends early leaves its rest to the next ones, none gets it all
    assert 0 < shares[0] <= budget / 3 + 1e-6 and all(0 < s < budget for s in shares)
