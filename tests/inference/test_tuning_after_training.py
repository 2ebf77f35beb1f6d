"""`medseg train` chooses its post-processing at the end (train.tune_postprocess), inside the time budget."""

from __future__ import annotations

import json
import logging
import shutil
import time

import numpy as np
import pytest

import medseg
from medseg.config import build_config
from medseg.engine.budget import TUNE_COST, TUNE_SHARE, RunBudget
from medseg.engine.train import tuning_note
from medseg.inference.postprocess import Postprocess
from medseg.inference.postprocess_tuning import (
    FLIP_TTA,
    MIN_TUNE_IMAGES,
    tune_after_training,
    tune_postprocess,
)
from tests.conftest import TINY


@pytest.fixture(scope="module")
def tuned_run(tiny_dataset, tmp_path_factory):
    """A tiny run trained through the public API (which tunes at the end)."""
    return medseg.train(tiny_dataset, tmp_path_factory.mktemp("tuned") / "run", config="default", overrides=TINY,
                        progress=False)


def test_train_stores_the_choice_tune_postprocess_makes(tuned_run, tiny_dataset, caplog):
    report = json.loads((tuned_run / "postprocess.json").read_text())
    assert report["split"] == "val" and report["n_images"] == 4 and report["seconds"] >= 0
    again = tune_postprocess(tuned_run, tiny_dataset, progress=False, store=False)  # the same search, run by hand
    assert again["infer"] == report["infer"] and again["dice_after"] == pytest.approx(report["dice_after"])
    # predict on the run applies the choice
    predictor = medseg.load(tuned_run)
    settings = {k: getattr(predictor.config.infer, k) for k in report["infer"]}
    assert settings == report["infer"]
    image = next((tiny_dataset / "images").iterdir())
    proba = predictor.predict_proba(image)
    expected = Postprocess(**{k: v for k, v in report["infer"].items() if k not in ("crf", *FLIP_TTA)})(proba)
    np.testing.assert_array_equal(predictor.predict(image) > 0, expected)


def test_tune_postprocess_replaces_the_automatic_choice(tuned_run, tiny_dataset, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tuned_run, run)
    result = tune_postprocess(run, tiny_dataset, split="train", progress=False)
    stored = json.loads((run / "postprocess.json").read_text())
    assert stored["split"] == "train" and stored["infer"] == result["infer"]
    assert medseg.load(run).config.infer.threshold == result["infer"]["threshold"]


def test_flip_tta_is_tried_and_kept_only_for_its_minimum_gain(tuned_run, tiny_dataset, tmp_path, monkeypatch):
    from medseg.inference import postprocess_tuning
    from medseg.inference.postprocess_tuning import store_in_run

    run = tmp_path / "run"
    shutil.copytree(tuned_run, run)
    store_in_run(run, {"tta": False})  # whatever the training's tuning chose
    plain = tune_postprocess(run, tiny_dataset, progress=False, store=False, tta=False)
    assert not plain["tta_tried"] and "flip TTA" not in [t["step"] for t in plain["trials"]]
    tried = tune_postprocess(run, tiny_dataset, progress=False, store=False)
    flip = next(t for t in tried["trials"] if t["step"] == "flip TTA")
    assert tried["tta_tried"] and flip["kept"] == (flip["dice"] >= plain["dice_after"] + flip["min_gain"])
    assert tried["infer"].get("tta", False) == flip["kept"]
    monkeypatch.setattr(postprocess_tuning, "MIN_TTA_GAIN", -1.0)  # any Dice: kept, stored, used by predict
    kept = tune_postprocess(run, tiny_dataset, progress=False)
    assert kept["infer"]["tta"] and kept["dice_after"] == pytest.approx(flip["dice"])
    assert kept["setting_after"].startswith("flip TTA, ")
    cfg = medseg.load(run).config.infer
    assert cfg.tta and cfg.tta_scales == [1.0] and cfg.tta_flips == ["h", "v"]
    again = tune_postprocess(run, tiny_dataset, progress=False, store=False)  # the tuning's own TTA: tried anew
    assert again["tta_tried"] and again["dice_before"] == pytest.approx(tried["dice_before"])
    store_in_run(run, {"tta": True, "tta_scales": [0.75, 1.0, 1.25]})  # a TTA of the user's: kept, not tried
    mine = tune_postprocess(run, tiny_dataset, progress=False, store=False)
    assert not mine["tta_tried"] and "tta" not in mine["infer"]


def test_the_switch_turns_tuning_off(tiny_dataset, tmp_path):
    run = medseg.train(tiny_dataset, tmp_path / "run", config="default", progress=False,
                       overrides=TINY + ["train.epochs=1", "train.tune_postprocess=false"])
    assert not (run / "postprocess.json").exists()
    assert medseg.load(run).config.infer.threshold == 0.5


def test_runs_that_are_not_tuned_say_why():
    binary = build_config(overrides=TINY)
    assert tuning_note(binary, 4) is None
    assert "no validation images" in tuning_note(binary, 0)
    assert "train.tune_postprocess=false" in tuning_note(build_config(overrides=["train.tune_postprocess=false"]), 4)
    assert "multi-class" in tuning_note(build_config(overrides=["model.classes=3"]), 4)


def test_budget_keeps_time_for_tuning_and_tunes_what_fits():
    clock = RunBudget.from_minutes(1.0, start=0.0)
    per = 0.2 / TUNE_COST  # seconds per validation image: 20 images' tuning is 4 s, under the 6 s cap
    clock.val_s_per_image, clock.writes_s = per, 1.0
    without = clock.reserve(20)
    clock.tune_images = 20
    assert clock.reserve(20) == pytest.approx(without + 20 * per * TUNE_COST)  # validation passes per image
    clock.tune_images = 1000
    assert clock.reserve(1000) - RunBudget(60.0, 0.0, writes_s=1.0, val_s_per_image=per).reserve(1000) \
        == pytest.approx(TUNE_SHARE * 60)  # capped
    assert clock.tune_images_that_fit(now=50.0) == int((60 - 50 - 1.1) / (per * TUNE_COST))
    assert clock.tune_images_that_fit(now=60.0) == 0


def test_tuning_that_does_not_fit_is_skipped_with_a_note(tuned_run, tiny_dataset, tmp_path, caplog):
    from medseg.data.prepare import discover_and_check, pairs_for_split

    run = tmp_path / "run"
    shutil.copytree(tuned_run, run)
    (run / "postprocess.json").unlink()
    pairs = pairs_for_split(discover_and_check(tiny_dataset, progress=False), "val", run)
    clock = RunBudget(60.0, start=time.monotonic() - 59.0, val_s_per_image=0.5, tune_images=len(pairs))
    with caplog.at_level(logging.WARNING, logger="medseg"):
        assert tune_after_training(run, clock, pairs) is None
    assert "post-processing not tuned" in caplog.text and "tune-postprocess" in caplog.text
    assert not (run / "postprocess.json").exists()
    assert min(len(pairs), MIN_TUNE_IMAGES) == 4  # a small val set is tuned whole or not at all


def test_a_patch_trained_run_is_tuned_on_the_sliding_window_probabilities(tiny_dataset, tmp_path):
    run = medseg.train(tiny_dataset, tmp_path / "run", config="default", progress=False,
                       overrides=TINY + ["train.epochs=1", "data.patch_size=32", "data.scale=0.5"])
    report = json.loads((run / "postprocess.json").read_text())
    # the same search by hand, through the Predictor that slides windows at the training scale
    again = tune_postprocess(run, tiny_dataset, progress=False, store=False)
    assert again["infer"] == report["infer"] and again["dice_after"] == pytest.approx(report["dice_after"])
    from medseg.inference.sliding import choose_mode

    assert choose_mode(96, 96, medseg.load(run).config) == "sliding"
