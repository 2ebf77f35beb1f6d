"""What a newcomer meets first: the public API, the data check report, and the small messages."""

from __future__ import annotations

import inspect
import shutil

import pytest
from typer.testing import CliRunner

import medseg
from medseg.cli import app
from medseg.data.check import check_pairs
from medseg.data.layouts import find_pairs
from medseg.errors import MedsegError


def test_dir_medseg_holds_only_the_api():
    assert dir(medseg) == ["__version__", "evaluate", "load", "plan", "train"]


@pytest.mark.parametrize("name", ["load", "train", "evaluate", "plan"])
def test_api_functions_have_real_signatures_and_docstrings(name):
    fn = getattr(medseg, name)
    sig = inspect.signature(fn)
    assert not any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values())
    assert sig.return_annotation is not inspect.Signature.empty
    doc = inspect.getdoc(fn)
    for section in ("Args:", "Returns:", "Raises:", "Example"):
        assert section in doc, f"medseg.{name}: no {section}"


def test_evaluate_without_data_reuses_the_runs_data(tiny_run, tiny_dataset, tmp_path):
    assert (tiny_run / "data_source.json").is_file()
    summary = medseg.evaluate(tiny_run, split="test", out=tmp_path / "ev", progress=False)
    again = medseg.evaluate(tiny_run, tiny_dataset, split="test", out=tmp_path / "ev2", progress=False)
    assert summary["n_images"] == again["n_images"] == 4 and summary["dice"] == again["dice"]
    result = CliRunner().invoke(app, ["evaluate", str(tiny_run), "--split", "test", "-o", str(tmp_path / "ev3"),
                                      "--threshold", "0.3", "--overlay"])
    assert result.exit_code == 0, result.output
    assert len(list((tmp_path / "ev3" / "overlays").glob("*.png"))) == 4  # --overlay without --worst: all


def test_worst_alone_writes_the_overlays_of_the_worst_images(tiny_run, tmp_path):
    result = CliRunner().invoke(app, ["evaluate", str(tiny_run), "--split", "test", "-o", str(tmp_path / "ev"),
                                      "--worst", "2"])
    assert result.exit_code == 0, result.output
    assert len(list((tmp_path / "ev" / "overlays").glob("*.png"))) == 2


@pytest.mark.parametrize("args, message", [
    (["--set", "optim.lr=0.1"], "only inference settings"),
    (["--set", "data.image_size=65"], "data.* was fixed"),
    (["--no-tta", "--uncertainty"], "drop --no-tta"),
])
def test_predict_refuses_settings_it_would_ignore(tiny_run, tiny_dataset, tmp_path, args, message):
    image = next(tiny_dataset.rglob("*.jpg"))
    result = CliRunner().invoke(app, ["predict", str(tiny_run), str(image), "-o", str(tmp_path / "out"), *args])
    assert isinstance(result.exception, MedsegError) and message in str(result.exception), result.output
    assert not (tmp_path / "out").exists()


def test_evaluate_overlays_are_off_by_default(tiny_run, tmp_path):
    medseg.evaluate(tiny_run, split="test", out=tmp_path / "ev", progress=False)
    assert sorted(p.name for p in (tmp_path / "ev").iterdir()) == ["per_image.csv", "summary.json"]


def test_predict_reports_each_skip_once_and_no_phantom_folder(tiny_run, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    (src / "broken.png").write_bytes(b"not a png")
    result = CliRunner().invoke(app, ["predict", str(tiny_run), str(src), "-o", str(tmp_path / "out")])
    assert result.exit_code == 1
    assert result.output.count("skipped") == 1 and result.output.count("broken.png") == 1
    assert "wrote no masks" in result.output and "wrote 0" not in result.output
    assert not (tmp_path / "out").exists()


def test_data_check_shows_splits_foreground_and_ignored_folders(tiny_dataset, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(tiny_dataset, data)
    (data / "fov_masks").mkdir()
    lines = check_pairs(find_pairs(data)).summary_lines()
    text = "\n".join(lines)
    assert "splits: 4 test, 16 train, 4 val" in text
    assert "foreground: " in text and "% of the pixels on average" in text
    assert "ignored folders (no image or mask used from them): fov_masks/" in text


def test_data_check_flags_mostly_foreground_masks(tmp_path):
    import numpy as np
    from PIL import Image

    for folder in ("images", "masks"):
        (tmp_path / folder).mkdir()
    for i in range(3):
        Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(tmp_path / "images" / f"{i}.png")
        mask = np.full((16, 16), 255, np.uint8)
        mask[4:6] = 0  # the structure is stored as 0, as in ISBI 2012
        Image.fromarray(mask).save(tmp_path / "masks" / f"{i}.png")
    text = "\n".join(check_pairs(find_pairs(tmp_path)).summary_lines())
    assert "87.5% of the pixels" in text and "data.invert_masks=true" in text
