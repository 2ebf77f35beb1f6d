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


def test_download_ahead_for_offline_use(monkeypatch, tmp_path):
    """`medseg models --download ENC --to FILE`: fetched once, saved, and the file trains offline."""
    import huggingface_hub
    from safetensors.torch import save_file
    from typer.testing import CliRunner

    from medseg.cli import app

    torch.manual_seed(0)
    source = create_model(ModelConfig(**CFG))
    hub_file = tmp_path / "hub" / "model.safetensors"
    hub_file.parent.mkdir()
    save_file(_encoder_state(source), str(hub_file))
    calls = []

    def fake_download(repo_id, filename, revision=None, local_files_only=False):
        calls.append((repo_id, local_files_only))
        if local_files_only:
            raise FileNotFoundError("not cached")
        return str(hub_file)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    monkeypatch.setattr(W, "hub_reachable", lambda *a, **k: True)
    for name in ("resnet18.pth", "resnet18.safetensors"):
        result = CliRunner().invoke(app, ["models", "--download", "resnet18", "--to", str(tmp_path / name)])
        assert result.exit_code == 0, result.output
        assert "encoder_weights=" in result.output
        model = create_model(ModelConfig(**{**CFG, "encoder_weights": str(tmp_path / name)}))
        for k, v in _encoder_state(source).items():
            assert torch.equal(model.encoder.state_dict()[k], v), k
    assert calls[0][0].endswith("resnet18.imagenet") and [c[1] for c in calls[:2]] == [True, False]

    monkeypatch.setattr(W, "hub_reachable", lambda *a, **k: False)
    result = CliRunner().invoke(app, ["models", "--download", "resnet18"])  # main() turns these into exit 2
    assert isinstance(result.exception, WeightsError) and "cannot be reached" in str(result.exception)
    result = CliRunner().invoke(app, ["models", "--to", str(tmp_path / "x.pth")])
    assert "only goes with --download" in str(result.exception)
