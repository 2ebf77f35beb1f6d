"""Checkpoints load with weights_only=True: a pickled object is refused and its code never runs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from medseg.engine.checkpoint import convert_trusted, load_checkpoint, save_checkpoint
from medseg.errors import CheckpointError


class _Payload:
    """Unpickling this writes a marker file: proof that the file's code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "code ran"))


def _hostile(tmp_path: Path) -> tuple[Path, Path]:
    marker, file = tmp_path / "ran.txt", tmp_path / "best.pt"
    torch.save({"model": {"w": torch.zeros(2)}, "config": {}, "extra": _Payload(marker)}, file)
    return file, marker


def test_pickled_object_is_refused_and_never_runs(tmp_path):
    file, marker = _hostile(tmp_path)
    with pytest.raises(CheckpointError, match=r"best\.pt holds a pickled Python object .*refused"):
        load_checkpoint(file)
    with pytest.raises(CheckpointError, match="refused"):
        load_checkpoint(tmp_path)  # the run folder
    from medseg.inference.predictor import Predictor

    with pytest.raises(CheckpointError, match="refused"):
        Predictor.load(tmp_path)
    assert not marker.exists()
    (tmp_path / "garbage.pt").write_bytes(b"not a checkpoint at all")  # corrupt, not hostile: said so
    with pytest.raises(CheckpointError, match=r"garbage\.pt cannot be read"):
        load_checkpoint(tmp_path / "garbage.pt")


def test_saved_checkpoint_is_plain(tmp_path):
    """Everything saved loads with PyTorch's restricted unpickler alone (numpy values, versions made plain)."""
    path = tmp_path / "last.pt"
    save_checkpoint(path, torch.nn.Linear(2, 1), {"name": "x"}, history=[{"loss": np.float64(0.5)}],
                    schedule={"best": -np.inf}, state={"epoch": np.int64(3)}, betas=(0.9, 0.999))
    raw = torch.load(path, weights_only=True)
    assert type(raw["history"][0]["loss"]) is float and raw["history"][0]["loss"] == 0.5
    assert type(raw["state"]["epoch"]) is int and raw["schedule"]["best"] == -np.inf
    assert raw["betas"] == (0.9, 0.999) and type(raw["versions"]["torch"]) is str
    with pytest.raises(CheckpointError, match="cannot hold a _Payload"):
        save_checkpoint(path, torch.nn.Linear(2, 1), {}, extra=_Payload(tmp_path / "x"))


def test_earlier_checkpoints_still_load_and_others_convert(tmp_path):
    """Files of earlier medseg versions (torch version object, numpy float64 history) load as they are;
    a file with other numpy types is refused, and converts on request for a file one trusts."""
    legacy = tmp_path / "legacy.pt"
    torch.save({"model": {"w": torch.ones(1)}, "config": {}, "versions": {"torch": torch.__version__},
                "history": [{"loss": np.float64(0.25)}]}, legacy)
    assert load_checkpoint(legacy)["history"][0]["loss"] == 0.25
    other = tmp_path / "other.pt"
    torch.save({"model": {"w": torch.ones(1)}, "config": {}, "val_dice": np.float32(0.75)}, other)
    with pytest.raises(CheckpointError, match="refused"):
        load_checkpoint(other)
    converted = convert_trusted(other, tmp_path / "converted.pt")
    assert load_checkpoint(converted)["val_dice"] == 0.75


def test_trained_run_resumes_and_loads_with_weights_only(tiny_run):
    for name in ("best.pt", "last.pt"):
        payload = torch.load(tiny_run / name, weights_only=True)
        assert {"model", "config", "versions"} <= payload.keys()


def test_cli_refuses_a_hostile_checkpoint(tmp_path):
    from PIL import Image
    from typer.testing import CliRunner

    from medseg.cli import app

    file, marker = _hostile(tmp_path)
    Image.new("RGB", (32, 32)).save(tmp_path / "photo.png")
    for args in (["predict", str(file), str(tmp_path / "photo.png"), "--out", str(tmp_path / "out")],
                 ["export", str(file), "--out", str(tmp_path / "model.onnx")]):
        result = CliRunner().invoke(app, args)  # the CLI's entry point prints a MedsegError in one line
        assert result.exit_code != 0 and isinstance(result.exception, CheckpointError)
        assert "refused, since loading it could run code" in str(result.exception)
    assert not marker.exists() and not (tmp_path / "out").exists()


@pytest.mark.parametrize("name", ["config.yaml", "curves.png"])
def test_a_run_file_that_is_no_checkpoint_points_to_the_run_folder(tiny_run, name):
    with pytest.raises(CheckpointError, match=rf"{name} is not a checkpoint; give its run folder"):
        load_checkpoint(tiny_run / name)
