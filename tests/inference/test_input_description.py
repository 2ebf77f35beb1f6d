"""How a run's images reach its network, said the same way by Predictor.__repr__ and GET /v1/model."""

from __future__ import annotations

import pytest

from medseg.config import build_config
from medseg.engine.runtime import resolve_runtime
from medseg.inference.backends import TorchBackend
from medseg.inference.predictor import Predictor
from medseg.models import create_model
from medseg.serve.model_info import describe_model

SMALL = ["model.arch=monai_unet", "model.encoder_weights=none", "model.base_channels=8"]


def _predictor(tmp_path, *sets: str) -> Predictor:
    cfg = build_config(overrides=[*SMALL, *sets])
    backend = TorchBackend(create_model(cfg.model, load_weights=False), cfg, resolve_runtime("fp32", "off", "cpu"))
    return Predictor(backend, cfg, source=str(tmp_path / "best.pt"))


def test_patch_run_is_described_as_sliding_windows_at_its_training_scale(tmp_path):
    p = _predictor(tmp_path, "data.image_size=128", "data.patch_size=96", "data.scale=0.5")
    assert "sliding 96x96 windows at scale 0.5" in repr(p) and "letterboxed" not in repr(p)
    info = describe_model(p, tmp_path / "best.pt")
    assert (info["mode"], info["input_size"], info["patch_size"], info["scale"]) == ("sliding", 96, 96, 0.5)


@pytest.mark.parametrize(("sets", "mode", "phrase"), [
    ([], "auto", "input 64x64 letterboxed, sliding windows for large images"),
    (["infer.mode=letterbox"], "letterbox", "input 64x64 letterboxed, threshold"),
    (["infer.mode=sliding", "infer.train_side=128"], "sliding", "sliding 64x64 windows at scale 0.5"),
])
def test_whole_image_runs_are_described_by_their_inference_mode(tmp_path, sets, mode, phrase):
    p = _predictor(tmp_path, "data.image_size=64", *sets)
    assert phrase in repr(p)
    info = describe_model(p, tmp_path / "best.pt")
    assert info["mode"] == mode and info["input_size"] == 64 and info["patch_size"] is None
