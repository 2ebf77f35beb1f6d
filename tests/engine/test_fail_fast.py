"""Every config name is checked before data is read (a spy proves it), with did-you-mean; the run folder
appears only when training starts; a CPU run without a time budget says how long it may take."""

from __future__ import annotations

import logging

import pytest

import medseg
import medseg.engine.train as train_module
from medseg.engine.estimate import DurationEstimate, format_duration
from medseg.errors import ConfigError, DataError
from tests.conftest import TINY  # noqa: I001


@pytest.fixture
def no_data_read(monkeypatch):
    """Any attempt to discover or read data fails the test."""
    calls = []

    def spy(*args, **kwargs):
        calls.append(args)
        raise AssertionError("data was read before the configuration was checked")

    monkeypatch.setattr(train_module, "discover_and_check", spy)
    return calls


@pytest.mark.parametrize("kwargs,message", [
    ({"overrides": ["model.arch=unett"]}, "unknown architecture 'unett' \\(did you mean 'unet'\\?\\)"),
    ({"overrides": ["model.encoder=resnet343"]}, "unknown encoder 'resnet343' for unet \\(did you mean 'resnet34'"),
    ({"overrides": ["model.encoder=tu-convnxt_tiny"]}, "did you mean 'tu-convnext_tiny'"),
    ({"overrides": ["loss.name=dice_bc"]}, "'dice_bc' is not one of .*did you mean 'dice_bce'"),
    ({"overrides": ["optim.lrr=0.1"]}, "unknown key 'optim.lrr' \\(did you mean 'optim.lr'\\?\\)"),
    ({"overrides": ["trian.epochs=3"]}, "unknown key 'trian' \\(did you mean 'train'\\?\\)"),
    ({"config": "isic-unett"}, "unknown preset 'isic-unett' \\(did you mean 'isic-unet'\\?\\)"),
    ({"overrides": ["model.arch=unet", "model.psp_bins=[1,2]"]}, "psp_bins"),
])
def test_config_names_fail_before_any_data_is_read(kwargs, message, no_data_read, tmp_path):
    run = tmp_path / "run"
    with pytest.raises(ConfigError, match=message):
        medseg.train(tmp_path / "data", run, **kwargs, progress=False)
    assert no_data_read == [] and not run.exists()


def test_missing_data_leaves_no_run_folder(tmp_path):
    run = tmp_path / "run"
    with pytest.raises(DataError, match="does not exist"):
        medseg.train(tmp_path / "nowhere", run, overrides=TINY, progress=False)
    assert not run.exists()


def test_format_duration():
    assert format_duration(42) == "42 s"
    assert format_duration(600) == "10 min"
    assert format_duration(3 * 3600 + 20 * 60) == "3 h 20 min"


def test_estimate_leaves_out_the_first_step_and_speaks_once():
    now = [0.0]
    est = DurationEstimate(total_steps=10_000, epochs=100, warmup=1, measure=5, clock=lambda: now[0])
    now[0] = 30.0  # a slow first step (compilation, caches) is not counted
    messages = [est.step()]
    for _ in range(5):
        now[0] += 2.0
        messages.append(est.step())
    assert messages[:-1] == [None] * 5
    assert "2.00 s per step" in messages[-1] and "100 epochs (10000 steps)" in messages[-1]
    assert "5 h 33 min" in messages[-1] and "--time-budget MINUTES or --epochs N" in messages[-1]
    assert est.epoch_end() is None  # said once


def test_estimate_after_a_short_first_epoch():
    now = [0.0]
    est = DurationEstimate(total_steps=40, epochs=20, clock=lambda: now[0])
    now[0] = 3.0
    est.step()
    now[0] = 4.0
    est.step()
    assert "1.00 s per step" in est.epoch_end()


def test_cpu_run_without_budget_prints_the_estimate(tiny_dataset, tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="medseg.engine.train"):
        medseg.train(tiny_dataset, tmp_path / "run", overrides=TINY + ["train.epochs=1"], progress=False)
    assert any("may take about" in r.getMessage() and "--time-budget" in r.getMessage() for r in caplog.records)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="medseg.engine.train"):
        medseg.train(tiny_dataset, tmp_path / "run2", overrides=TINY + ["train.epochs=1"], time_budget=5,
                     progress=False)
    assert not any("may take about" in r.getMessage() for r in caplog.records)
