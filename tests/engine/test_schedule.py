from __future__ import annotations

import pytest

from medseg.config import OptimConfig
from medseg.engine.schedule import LrSchedule
from medseg.errors import ConfigError


def test_cosine_with_warmup():
    s = LrSchedule(OptimConfig(lr=1e-3, min_lr=1e-6, warmup_epochs=1), epochs=10)
    assert s.lr(0.05, 1) == pytest.approx(0.5e-3)  # half-way through the warm-up
    assert s.lr(0.1, 2) == pytest.approx(1e-3)
    assert s.lr(0.55, 6) == pytest.approx(1e-6 + (1e-3 - 1e-6) * 0.5)
    assert s.lr(1.0, 10) == pytest.approx(1e-6)


def test_step_schedule_of_the_vgg_tutorial():
    cfg = OptimConfig(lr=1e-4, schedule="step", milestones=[10, 20], milestone_lrs=[5e-5, 1e-5], warmup_epochs=0)
    s = LrSchedule(cfg, epochs=30)
    assert [s.lr(0.0, e) for e in (1, 10, 11, 20, 21)] == pytest.approx([1e-4, 1e-4, 5e-5, 5e-5, 1e-5])


def test_plateau_halves_after_patience():
    cfg = OptimConfig(lr=1e-4, schedule="plateau", plateau_factor=0.5, plateau_patience=3, warmup_epochs=0)
    s = LrSchedule(cfg, epochs=50)
    for dice in (0.5, 0.6, 0.6, 0.6):
        s.epoch_end(dice)
    assert s.lr(0.5, 5) == pytest.approx(1e-4)
    s.epoch_end(0.59)  # third epoch without improvement
    assert s.lr(0.5, 6) == pytest.approx(5e-5)
    restored = LrSchedule(cfg, epochs=50)
    restored.load_state_dict(s.state_dict())
    assert restored.lr(0.5, 6) == pytest.approx(5e-5)


def test_step_needs_matching_milestones():
    from medseg.config import build_config

    with pytest.raises(ConfigError, match="milestones"):
        build_config(overrides=["optim.schedule=step"])
    with pytest.raises(ConfigError, match="same length"):
        build_config(overrides=["optim.milestones=[10]", "optim.milestone_lrs=[]", "optim.schedule=step"])
