"""Encoder weights: local files, the hub when unreachable, and the auto fallback (no network here)."""

from __future__ import annotations

import pytest
import torch

from medseg.config import ModelConfig
from medseg.errors import WeightsError
from medseg.models import create_model
from medseg.models import weights as W

CFG = {"arch": "unet", "encoder": "resnet18", "encoder_weights": None}


def _encoder_state(model):
    return {k: v.clone() for k, v in model.encoder.state_dict().items()}


@pytest.mark.parametrize("prefix,suffix", [("", ".pth"), ("encoder.", ".pt"), ("", ".safetensors")])
def test_local_file_loads_into_encoder(tmp_path, prefix, suffix):
    torch.manual_seed(0)
    source = create_model(ModelConfig(**CFG))
    state = {prefix + k: v for k, v in _encoder_state(source).items()}
    state[prefix + "fc.weight"] = torch.zeros(10, 512)  # a classifier head, as in torchvision checkpoints
    path = tmp_path / f"resnet18{suffix}"
    if suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(state, str(path))
    else:
        torch.save(state, path)
    torch.manual_seed(1)
    model = create_model(ModelConfig(**{**CFG, "encoder_weights": str(path)}))
    for k, v in _encoder_state(source).items():
        assert torch.equal(model.encoder.state_dict()[k], v), k


def test_wrong_file_is_a_clear_error(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"conv1.weight": torch.zeros(3, 3)}, path)
    with pytest.raises(WeightsError, match="do not fit encoder"):
        create_model(ModelConfig(**{**CFG, "encoder_weights": str(path)}))
    with pytest.raises(WeightsError, match="does not exist"):
        create_model(ModelConfig(**{**CFG, "encoder_weights": str(tmp_path / "nope.pth")}))


def test_unreachable_hub(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HOME", str(tmp_path))  # empty cache
    monkeypatch.setattr(W, "hub_reachable", lambda *a, **k: False)
    with pytest.raises(WeightsError, match="cannot be reached.*encoder_weights=PATH"):
        create_model(ModelConfig(**{**CFG, "encoder_weights": "imagenet"}))
    model = create_model(ModelConfig(**CFG))
    assert W.load_encoder_weights(model, ModelConfig(**{**CFG, "encoder_weights": "auto"})) is None


def test_hub_location_known_for_smp_encoders():
    repo, _, filename = W.hub_location("resnet34")
    assert repo.endswith("resnet34.imagenet") and filename == "model.safetensors"
