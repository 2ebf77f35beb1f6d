"""A tiny train -> evaluate -> predict on synthetic data, through the Python API."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from PIL import Image

import medseg
from medseg.engine.checkpoint import load_checkpoint
from medseg.errors import CheckpointError
from tests.conftest import TINY  # noqa: I001

pytestmark = pytest.mark.slow


def test_run_folder_contents(tiny_run):
    for name in ("best.pt", "last.pt", "config.yaml", "metrics.csv", "curves.png", "splits.csv",
                 "data_report.txt"):
        assert (tiny_run / name).is_file(), name
    rows = list(csv.DictReader((tiny_run / "metrics.csv").open()))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert all(0.0 <= float(r["val_dice"]) <= 1.0 for r in rows)
    ckpt = load_checkpoint(tiny_run)
    assert ckpt["config"]["model"]["encoder"] == "resnet18"
    assert ckpt["config"]["model"]["encoder_weights"] is None
    assert "torch" in ckpt["versions"]
    assert Image.open(tiny_run / "curves.png").size[0] > 500


def test_evaluate_writes_reports(tiny_run, tiny_dataset, tmp_path):
    summary = medseg.evaluate(tiny_run, tiny_dataset, split="test", out=tmp_path / "ev", overlays=2, progress=False)
    assert summary["n_images"] == 4
    for key in ("dice", "iou", "sensitivity", "specificity", "precision", "accuracy", "thresholded_jaccard",
                "failure_rate"):
        assert 0.0 <= summary[key] <= 1.0, key
    rows = list(csv.DictReader((tmp_path / "ev" / "per_image.csv").open()))
    assert len(rows) == 4 and rows[0]["case_id"].startswith("SYN_")
    assert json.loads((tmp_path / "ev" / "summary.json").read_text())["split"] == "test"
    assert len(list((tmp_path / "ev" / "overlays").glob("*.png"))) == 2


def test_predict_folder_sizes_and_bad_files(tiny_run, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    rng = np.random.default_rng(0)
    sizes = {"wide": (72, 190), "tall": (301, 97), "square": (96, 96)}
    for name, (h, w) in sizes.items():
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(src / f"{name}.jpg")
    (src / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    predictor = medseg.load(tiny_run)
    result = predictor.predict_folder(src, tmp_path / "out", overlay=True, progress=False)
    assert [p.name for p, _ in result.failed] == ["broken.png"]
    assert "broken.png" in result.failed[0][1]
    for name, (h, w) in sizes.items():
        mask = np.array(Image.open(tmp_path / "out" / f"{name}.png"))
        assert mask.shape == (h, w) and set(np.unique(mask)) <= {0, 255}
        assert Image.open(tmp_path / "out" / f"{name}_overlay.png").size == (w, h)
    array_mask = predictor.predict(np.zeros((50, 70, 3), np.uint8))
    assert array_mask.shape == (50, 70) and array_mask.dtype == np.uint8


def test_load_accepts_checkpoint_file_and_rejects_junk(tiny_run, tmp_path):
    image = np.random.default_rng(1).integers(0, 255, (80, 120, 3), dtype=np.uint8)
    a = medseg.load(tiny_run).predict_proba(image)
    b = medseg.load(tiny_run / "best.pt").predict_proba(image)
    np.testing.assert_array_equal(a, b)
    with pytest.raises(CheckpointError, match="missing does not exist"):
        medseg.load(tmp_path / "missing")
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(CheckpointError, match="cannot be read"):
        medseg.load(tmp_path / "junk.pt")


def test_same_seed_same_result(tiny_dataset, tiny_run, tmp_path):
    again = medseg.train(tiny_dataset, tmp_path / "again", config="default", overrides=TINY, progress=False)
    first = list(csv.DictReader((tiny_run / "metrics.csv").open()))
    second = list(csv.DictReader((again / "metrics.csv").open()))
    assert [r["train_loss"] for r in first] == [r["train_loss"] for r in second]
    a, b = load_checkpoint(tiny_run)["model"], load_checkpoint(again)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_continues_from_last(tiny_dataset, tiny_run, tmp_path):
    import shutil

    run = tmp_path / "resumed"
    shutil.copytree(tiny_run, run)
    medseg.train(tiny_dataset, run, resume=True, overrides=["train.epochs=3"], progress=False)
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]


@pytest.mark.parametrize("batch_size", [12, 16])  # 16: the whole training split is one batch per epoch
def test_time_budget_stops_and_keeps_best(tiny_dataset, tmp_path, batch_size):
    run = medseg.train(tiny_dataset, tmp_path / "budget", config="default", progress=False,
                       overrides=TINY + ["train.epochs=50", "train.time_budget_min=0.05",
                                         f"train.batch_size={batch_size}"])
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    assert 1 <= len(rows) < 50
    assert all(int(r["train_images"]) == 16 for r in rows[:-1])  # no image left out of an epoch (16 % 12 = 4)
    assert load_checkpoint(run)["val_dice"] == pytest.approx(max(float(r["val_dice"]) for r in rows), abs=1e-5)


def test_existing_run_is_not_clobbered(tiny_dataset, tiny_run):
    with pytest.raises(CheckpointError, match="already holds a run; use --resume"):
        medseg.train(tiny_dataset, tiny_run, config="default", overrides=TINY, progress=False)


def test_training_skips_broken_pairs_and_lists_them(tiny_dataset, tmp_path, caplog):
    import shutil

    data = tmp_path / "messy"
    shutil.copytree(tiny_dataset, data)
    (data / "images" / "SYN_0002.jpg").write_bytes((data / "images" / "SYN_0002.jpg").read_bytes()[:300])
    (data / "masks" / "SYN_0005_segmentation.png").unlink()
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(data / "masks" / "SYN_0007_segmentation.png")
    with caplog.at_level("WARNING"):
        run = medseg.train(data, tmp_path / "run", config="default", overrides=TINY + ["train.epochs=1"],
                           progress=False)
    report = (run / "data_report.txt").read_text()
    for case in ("SYN_0002", "SYN_0005", "SYN_0007"):
        assert case in report and case in caplog.text
    splits = (run / "splits.csv").read_text()
    assert "SYN_0002" not in splits and "SYN_0007" not in splits and "SYN_0001" in splits
