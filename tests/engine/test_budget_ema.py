"""The time budget holds the whole run; EMA of the weights; early stopping by time."""

from __future__ import annotations

import time

import pytest
import torch

from medseg.engine.budget import RunBudget, spread
from medseg.engine.history import read_history
from tests.conftest import TINY


def test_budget_sizes_validation_to_what_is_left():
    clock = RunBudget.from_minutes(1.0, start=0.0)
    clock.val_s_per_image, clock.writes_s = 0.5, 1.0
    assert clock.val_images(100, now=10.0, final=True) == 95  # 60 - 10 - 1 - 1.1 = 47.9 s left: 95 images
    assert clock.val_images(100, now=50.0, final=False) == 0  # skipped: the final one needs its reserve
    assert clock.val_images(100, now=59.0, final=True) == 0  # no time left: not even the final one
    assert clock.val_images(100, now=59.0, final=True, at_least_one=True) == 1  # unless nothing was validated
    assert clock.reserve(100) == pytest.approx(0.15 * 60 + 1.0 + 1.1)  # capped at 15 % of the budget
    assert spread(10, 3) == [0, 4, 9] and spread(3, 5) == [0, 1, 2]


def test_whole_run_stays_inside_the_budget(tmp_path, caplog):
    from medseg.data.synthetic import make_synthetic_dataset
    from medseg.engine.train import train
    from medseg.inference.postprocess_tuning import tune_after_training

    # a validation set that would take several budgets to score in full at this size
    data = make_synthetic_dataset(tmp_path / "data", n_train=8, n_val=48, n_test=0, size=96, seed=2)
    budget_min = 0.5  # the floor (loading, a probe step, one validation image, writes) must fit on a loaded CPU
    t0 = time.monotonic()
    with caplog.at_level("INFO", logger="medseg"):  # post-processing tuning included, as medseg train does
        run = train(data, tmp_path / "run", config="default", progress=False, finish=tune_after_training,
                    overrides=TINY + ["train.epochs=1000", "data.image_size=160",
                                      f"train.time_budget_min={budget_min}"])
    wall = time.monotonic() - t0
    assert wall <= budget_min * 60 * 1.05 + 2.0
    # tuned on the images that fit, or skipped with a note
    assert (run / "postprocess.json").is_file() or "post-processing not tuned" in caplog.text
    history = read_history(run / "metrics.csv")
    assert history and history[-1]["epoch"] < 1000
    assert (run / "best.pt").is_file() and (run / "last.pt").is_file()


def _weights(path):
    return torch.load(path, map_location="cpu", weights_only=False)


def test_ema_changes_the_saved_weights_and_keeps_the_raw_ones_for_resuming(tiny_dataset, tmp_path):
    from medseg.engine.train import train

    base = TINY + ["train.epochs=1", "data.image_size=32"]
    plain = _weights(train(tiny_dataset, tmp_path / "plain", config="default", overrides=base,
                           progress=False) / "last.pt")
    averaged = _weights(train(tiny_dataset, tmp_path / "ema", config="default", overrides=base + ["train.ema=0.9"],
                              progress=False) / "last.pt")
    key = next(k for k, v in plain["model"].items() if v.is_floating_point() and "weight" in k)
    # the same training (fp32, same seed): the raw weights match the plain run's, the saved average does not
    assert torch.equal(averaged["raw_model"][key], plain["model"][key])
    assert not torch.equal(averaged["model"][key], plain["model"][key])
    assert averaged["ema"]["n_averaged"] == 2  # 16 images, batch 8: two steps
    assert averaged["config"]["train"]["ema"] == 0.9


def test_time_patience_stops_by_time_not_epochs(tiny_dataset, tmp_path):
    from medseg.engine.train import train

    patience_min = 0.01
    run = train(tiny_dataset, tmp_path / "run", config="default", progress=False,
                overrides=TINY + ["train.epochs=60", "train.patience=1000", f"train.patience_min={patience_min}",
                                  "data.image_size=32", "optim.lr=1e-7", "train.augment=none"])
    rows = read_history(run / "metrics.csv")
    assert len(rows) < 60
    best_elapsed, since = 0.0, []
    for row in rows:
        since.append(row["elapsed_seconds"] - best_elapsed)
        if row["val_dice"] > max((r["val_dice"] for r in rows[: row["epoch"] - 1]), default=-1.0):
            best_elapsed, since[-1] = row["elapsed_seconds"], 0.0
    assert since[-1] >= patience_min * 60  # stopped once the patience had run out, and not before
    assert all(s < patience_min * 60 for s in since[:-1])


def test_val_every_s_validates_by_time_and_always_at_the_end(tiny_dataset, tmp_path):
    import math

    from medseg.engine.train import train

    run = train(tiny_dataset, tmp_path / "run", config="default", progress=False,
                overrides=TINY + ["train.epochs=3", "train.val_every_s=100000", "data.image_size=32"])
    rows = read_history(run / "metrics.csv")
    assert [math.isnan(r["val_dice"]) for r in rows] == [True, True, False]  # only the last one is due
