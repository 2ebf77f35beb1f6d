"""`medseg export`, `medseg predict` on an .onnx file with --tta/--uncertainty, `medseg tune-postprocess`."""

from __future__ import annotations

import json
import shutil

import numpy as np
import onnx
import pytest
import yaml
from PIL import Image
from typer.testing import CliRunner

import medseg
from medseg.cli import app

pytestmark = pytest.mark.slow
runner = CliRunner()


def invoke(*args: str):
    result = runner.invoke(app, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.parametrize("command", ["export", "tune-postprocess", "predict"])
def test_help_describes_every_option(command):
    out = invoke(command, "--help")
    for option in {"export": ["--int8", "--tta", "--out", "DATA", "--calibration", "--format"],
                   "tune-postprocess": ["--split", "--dry-run"],
                   "predict": ["--tta", "--uncertainty", "--threshold"]}[command]:
        assert option in out


def test_export_tta_then_predict_from_the_onnx_file(tiny_run, tmp_path):
    model = tmp_path / "tta.onnx"
    out = invoke("export", str(tiny_run), "--format", "onnx", "--tta", "--out", str(model))
    assert "mask agreement" in out and "flip TTA h/v" in out
    meta = {p.key: p.value for p in onnx.load(str(model)).metadata_props}
    assert json.loads(meta["tta_flips"]) == ["h", "v"]
    src = tmp_path / "in"
    src.mkdir()
    rng = np.random.default_rng(5)
    Image.fromarray(rng.integers(0, 255, (77, 131, 3), dtype=np.uint8)).save(src / "odd.jpg")
    out = invoke("predict", str(model), str(src), "--out", str(tmp_path / "masks"), "--uncertainty")
    assert "ONNX Runtime fp32" in out and "TTA x3" in out  # flips baked in the graph, 3 scales in Python
    for name in ("odd.png", "odd_uncertainty.png"):
        assert np.array(Image.open(tmp_path / "masks" / name)).shape == (77, 131)


def test_tune_postprocess_stores_the_choice_in_the_run(tiny_run, tiny_dataset, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    out = invoke("tune-postprocess", str(run), str(tiny_dataset), "--split", "val")
    assert "threshold" in out and "stored in" in out
    report = json.loads((run / "postprocess.json").read_text())
    assert report["dice_after"] >= report["dice_before"] and report["n_images"] == 4
    from medseg.inference.crf import crf_available

    assert report["crf_tried"] == crf_available() and "crf" in report["infer"]
    stored = yaml.safe_load((run / "config.yaml").read_text())["infer"]
    assert stored["threshold"] == report["infer"]["threshold"]
    assert medseg.load(run / "best.pt").config.infer.threshold == report["infer"]["threshold"]
    dry = invoke("tune-postprocess", str(run), str(tiny_dataset), "--dry-run")
    assert "stored in" not in dry
