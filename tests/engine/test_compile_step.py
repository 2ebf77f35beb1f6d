"""train.compile: torch.compile of the training step, chosen by measurement, never fatal."""

from __future__ import annotations

import torch

from medseg.config import ModelConfig, build_config
from medseg.engine.compile_step import MIN_BUDGET_S, choose_step_module, keep_compiled
from medseg.engine.epoch_plan import EpochPlan
from medseg.engine.runtime import resolve_runtime
from medseg.losses import build_loss
from medseg.models import create_model
from tests.conftest import TINY


def _tiny_net_and_batch():
    torch.manual_seed(0)
    model = create_model(ModelConfig(arch="monai_unet", base_channels=8, encoder_weights=None), load_weights=False)
    x, y = torch.randn(2, 3, 32, 32), (torch.rand(2, 1, 32, 32) > 0.5).float()
    return model, x, y, build_loss(build_config().loss), resolve_runtime("fp32", "off", device="cpu")


def test_auto_keeps_compiled_only_when_it_is_faster():
    assert keep_compiled("auto", eager_s=1.0, compiled_s=0.5)
    assert not keep_compiled("auto", eager_s=1.0, compiled_s=0.99)  # under 1.05x: not worth a compiled graph
    assert keep_compiled("on", eager_s=1.0, compiled_s=2.0)  # on: whenever it works


def test_off_a_short_budget_and_a_short_run_train_eager_without_compiling():
    model, x, y, loss, rt = _tiny_net_and_batch()
    net, trial = choose_step_module("off", model, x, y, loss, rt, seconds_left=None)
    assert net is model and not trial.compiled and trial.eager_s is None
    net, trial = choose_step_module("auto", model, x, y, loss, rt, seconds_left=MIN_BUDGET_S - 1)
    assert net is model and not trial.compiled and "not tried" in trial.reason and trial.eager_s is None
    net, trial = choose_step_module("auto", model, x, y, loss, rt, seconds_left=None, passes_left=3)  # a short run
    assert net is model and not trial.compiled and "expected to train for about" in trial.reason
    assert trial.eager_s > 0 and trial.chosen_s() == trial.eager_s  # measured: it sizes the budget's first step


def test_a_compiler_failure_leaves_the_run_eager_with_its_weights(monkeypatch):
    model, x, y, loss, rt = _tiny_net_and_batch()
    before = {k: v.clone() for k, v in model.state_dict().items()}

    class Broken(torch.nn.Module):
        def forward(self, _x):
            raise RuntimeError("InductorError: no C++ compiler found\nmore details")

    monkeypatch.setattr(torch, "compile", lambda net, **kwargs: Broken())
    net, trial = choose_step_module("on", model, x, y, loss, rt, seconds_left=None)
    assert net is model and not trial.compiled
    assert "torch.compile failed (RuntimeError: InductorError: no C++ compiler found)" in trial.reason
    assert trial.eager_s is not None and trial.eager_s > 0  # eager was timed before the failure
    # the timed passes took no optimiser step and left no gradient behind
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())


def test_a_static_loader_drops_the_short_last_batch(tiny_dataset):
    from medseg.data.dataset import SegmentationDataset
    from medseg.data.layouts import find_pairs
    from medseg.engine.distributed import DistContext
    from medseg.engine.train import make_train_loader

    ds = SegmentationDataset(find_pairs(tiny_dataset).pairs[:10], 32, cache=False, progress=False)
    cfg, ctx = build_config(overrides=["train.augment=none"]), DistContext()
    plan = EpochPlan(stage=0, lr=None, indices=None, augment="none")
    eager = [len(b[0]) for b in make_train_loader(ds, plan, 4, cfg, ctx, 1, 0, None)]
    static = [len(b[0]) for b in make_train_loader(ds, plan, 4, cfg, ctx, 1, 0, None, static=True)]
    assert eager == [4, 4, 2] and static == [4, 4]  # one graph shape: no second compilation mid-run


def test_a_compiled_run_trains_saves_and_predicts(tiny_dataset, tmp_path, caplog):
    from medseg.data.layouts import find_pairs
    from medseg.engine.checkpoint import load_checkpoint
    from medseg.engine.history import read_history
    from medseg.engine.train import train
    from medseg.inference.predictor import Predictor

    overrides = TINY + ["model.arch=monai_unet", "model.base_channels=8", "data.image_size=32", "train.compile=on"]
    with caplog.at_level("INFO", logger="medseg"):
        run = train(tiny_dataset, tmp_path / "run", config="default", overrides=overrides, progress=False)
    assert "torch.compile: compiled steps" in caplog.text and "training compiled" in caplog.text
    rows = read_history(run / "metrics.csv")
    assert len(rows) == 2 and all(r["train_images"] == 16 for r in rows)  # 16 = two full batches of 8
    state = load_checkpoint(run / "best.pt")["model"]
    assert not any("_orig_mod" in k for k in state)  # saved as the plain network, loadable anywhere
    pair = find_pairs(tiny_dataset).pairs[0]
    mask = Predictor.load(run, precision="fp32").predict(pair.image)
    assert mask.shape == (96, 96) and mask.dtype.name == "uint8"
