"""Never write over an input: predict, convert and export refuse, and leave every input byte for byte."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from medseg.cli import app
from medseg.io.outputs import OutputError, check_not_input, check_outputs


def _digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def _photos(folder: Path, names: list[str]) -> Path:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in names:
        Image.fromarray(rng.integers(0, 255, (40, 56, 3), dtype=np.uint8)).save(folder / name)
    return folder


def test_check_outputs_refuses_an_input_and_a_shared_name(tmp_path):
    a, b = tmp_path / "a.png", tmp_path / "a.jpg"
    with pytest.raises(OutputError, match="would overwrite the input .*a.png"):
        check_outputs([(a, tmp_path / "a.png")])
    with pytest.raises(OutputError, match="a.png and .*a.jpg would both be written to .*a.png"):
        check_outputs([(a, tmp_path / "out" / "a.png"), (b, tmp_path / "out" / "a.png")])
    with pytest.raises(OutputError, match="overwrite the input"):  # the same file through another spelling
        check_outputs([(a, tmp_path / "sub" / ".." / "a.png")])
    check_outputs([(a, tmp_path / "out" / "a.png"), (b, tmp_path / "out" / "a_jpg.png")])  # fine
    with pytest.raises(OutputError, match="is also an input"):
        check_not_input(tmp_path / "x" / ".." / "src", [tmp_path / "src"])


def test_predict_into_its_own_input_folder_is_refused_and_inputs_stay_byte_for_byte(tiny_run, tmp_path):
    photos = _photos(tmp_path / "photos", ["x.png", "y.png", "z.jpg"])
    before = _digest(photos)
    result = CliRunner().invoke(app, ["predict", str(tiny_run), str(photos), "--out", str(photos)])
    assert isinstance(result.exception, OutputError), result.output
    assert "x.png" in str(result.exception) and "never writes over its inputs" in str(result.exception)
    assert _digest(photos) == before  # nothing replaced, nothing added (not even z.png)


def test_two_inputs_with_one_mask_name_are_refused_before_any_write(tiny_run, tmp_path):
    photos = _photos(tmp_path / "photos", ["a.png", "a.jpg", "b.png"])
    before = _digest(photos)
    out = tmp_path / "masks"
    result = CliRunner().invoke(app, ["predict", str(tiny_run), str(photos), "-o", str(out)])
    assert isinstance(result.exception, OutputError)
    assert "would both be written to" in str(result.exception)
    assert not out.exists() and _digest(photos) == before


def test_overlay_names_are_checked_too(tiny_run, tmp_path):
    photos = _photos(tmp_path / "photos", ["a.jpg", "a_overlay.png"])
    result = CliRunner().invoke(app, ["predict", str(tiny_run), str(photos), "-o", str(photos), "--overlay"])
    assert isinstance(result.exception, OutputError) and "a_overlay.png" in str(result.exception)


def test_predict_jpegs_beside_themselves_is_allowed(tiny_run, tmp_path):
    """Masks of JPEG inputs are new PNG names: writing them next to the photos overwrites nothing."""
    photos = _photos(tmp_path / "photos", ["p.jpg"])
    before = _digest(photos)
    result = CliRunner().invoke(app, ["predict", str(tiny_run), str(photos), "-o", str(photos)])
    assert result.exit_code == 0, result.output
    after = _digest(photos)
    assert after["p.jpg"] == before["p.jpg"] and "p.png" in after


def test_convert_never_writes_into_its_source_folder(tmp_path, shared_data):
    src = tmp_path / "scans"
    shutil.copytree(shared_data / "dicom" / "ct2_series_16px", src)
    before = _digest(src)
    result = CliRunner().invoke(app, ["convert", "dicom", str(src), "-o", str(src)])
    assert isinstance(result.exception, OutputError)
    assert _digest(src) == before
    ok = CliRunner().invoke(app, ["convert", "dicom", str(src), "-o", str(tmp_path / "png")])
    assert ok.exit_code == 0, ok.output
    labels = CliRunner().invoke(app, ["convert", "labels", str(tmp_path / "png"), "--reference", str(src), "-o",
                                      str(src)])
    assert isinstance(labels.exception, OutputError) and _digest(src) == before


def test_export_refuses_to_replace_its_source(tiny_run, tmp_path):
    fake = tmp_path / "model.onnx"
    shutil.copy(tiny_run / "best.pt", fake)  # a checkpoint that happens to end in .onnx
    result = CliRunner().invoke(app, ["export", str(fake), "-o", str(fake)])
    assert isinstance(result.exception, OutputError)
    assert fake.read_bytes() == (tiny_run / "best.pt").read_bytes()
