"""Multi-class targets (label maps, colour palettes) and the training plan: stages, sampling, freezing."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
from PIL import Image

import medseg
from medseg.config import build_config
from medseg.data.pairs import Pair
from medseg.data.readers import TargetSpec, read_pair_target
from medseg.engine.epoch_plan import plan_epoch
from medseg.errors import DataError
from medseg.metrics import batch_dice_multiclass
from tests.conftest import TINY  # noqa: I001

PALETTE = [[0, 0, 0], [255, 0, 0], [0, 0, 255]]


def _labels(rng, size=64):
    labels = np.zeros((size, size), np.uint8)
    y, x = rng.integers(8, size - 24, 2)
    labels[y : y + 16, x : x + 16] = 1
    cy, cx = rng.integers(12, size - 12, 2)
    yy, xx = np.ogrid[:size, :size]
    labels[(yy - cy) ** 2 + (xx - cx) ** 2 < 36] = 2
    return labels


@pytest.fixture(scope="module")
def three_class_data(tmp_path_factory):
    """12 images with a square (class 1) and a disc (class 2); masks as label maps and as colours."""
    root = tmp_path_factory.mktemp("mc")
    rng = np.random.default_rng(0)
    for name in ("labels", "colours"):
        (root / name / "images").mkdir(parents=True)
        (root / name / "masks").mkdir()
    for i in range(12):
        labels = _labels(rng)
        image = np.full((64, 64, 3), 60, np.uint8)
        image[labels == 1] = (200, 180, 40)
        image[labels == 2] = (40, 90, 220)
        image = (image + rng.integers(0, 30, image.shape)).clip(0, 255).astype(np.uint8)
        for name in ("labels", "colours"):
            Image.fromarray(image).save(root / name / "images" / f"c{i:02d}.png")
        Image.fromarray(labels).save(root / "labels" / "masks" / f"c{i:02d}.png")
        Image.fromarray(np.array(PALETTE, np.uint8)[labels]).save(root / "colours" / "masks" / f"c{i:02d}.png")
    return root


def test_targets_from_label_maps_and_palettes(three_class_data):
    labels_pair = Pair("c00", three_class_data / "labels/images/c00.png", three_class_data / "labels/masks/c00.png")
    colour_pair = Pair("c00", three_class_data / "colours/images/c00.png", three_class_data / "colours/masks/c00.png")
    from_labels = read_pair_target(labels_pair, TargetSpec(classes=3))
    from_colours = read_pair_target(colour_pair, TargetSpec(classes=3, palette=tuple(map(tuple, PALETTE))))
    assert set(np.unique(from_labels)) == {0, 1, 2}
    np.testing.assert_array_equal(from_labels, from_colours)
    with pytest.raises(DataError, match="holds labels .* expected 0..1"):
        read_pair_target(labels_pair, TargetSpec(classes=2))
    with pytest.raises(DataError, match="colour-coded; give data.palette"):
        read_pair_target(colour_pair, TargetSpec(classes=3))
    with pytest.raises(DataError, match="outside data.palette"):
        read_pair_target(colour_pair, TargetSpec(classes=2, palette=((0, 0, 0), (255, 0, 0))))
    inverted = read_pair_target(labels_pair, TargetSpec(classes=1, invert=True))
    assert inverted[from_labels == 0].min() == 1 and inverted[from_labels > 0].max() == 0


def test_multiclass_dice_conventions():
    truth = torch.tensor([[[0, 1], [2, 2]], [[0, 0], [0, 0]]])
    pred = torch.tensor([[[0, 1], [2, 0]], [[0, 0], [0, 0]]])
    # image 1: class 1 dice 1, class 2 dice 2*1/(1+2)=2/3 -> mean 5/6; image 2: no foreground anywhere -> 1
    np.testing.assert_allclose(batch_dice_multiclass(pred, truth, 3).numpy(), [5 / 6, 1.0], rtol=1e-6)


def test_stage_plan_grows_data_and_augmentation():
    cfg = build_config(overrides={"train": {"stages": [
        {"epochs": 1, "lr": 1e-4, "data_fraction": 0.2, "augment": "low"},
        {"epochs": 2, "lr": 5e-5, "data_fraction": 0.6, "augment": "mid"},
        {"epochs": 1, "lr": 1e-5, "data_fraction": 1.0, "augment": "high"}]}})
    plans = [plan_epoch(cfg, e, 50) for e in range(1, 5)]
    assert cfg.train.epochs == 4
    assert [p.lr for p in plans] == [1e-4, 5e-5, 5e-5, 1e-5]
    assert [len(p.indices or range(50)) for p in plans] == [10, 30, 30, 50]
    assert set(plans[0].indices) <= set(plans[1].indices)
    assert [p.augment for p in plans] == ["low", "mid", "mid", "high"]


@pytest.mark.slow
@pytest.mark.parametrize("source", ["labels", "colours"])
def test_multiclass_training_end_to_end(three_class_data, tmp_path, source):
    over = TINY + ["model.classes=3", "loss.name=dice_ce", "loss.class_weights=auto", "train.sampler=class_balanced",
                   "data.val_fraction=0.25", "train.freeze_encoder_epoch=2"]
    if source == "colours":
        over.append(f"data.palette={PALETTE}")
    run = medseg.train(three_class_data / source, tmp_path / "run", config="default", overrides=over,
                       progress=False)
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    assert len(rows) == 2 and all(0 <= float(r["val_dice"]) <= 1 for r in rows)


@pytest.mark.slow
def test_progressive_stages_train(tiny_dataset, tmp_path):
    over = TINY + ["train.stages=[{epochs: 1, lr: 0.001, data_fraction: 0.5, augment: low}, "
                   "{epochs: 1, lr: 0.0005, data_fraction: 1.0, augment: high}]"]
    run = medseg.train(tiny_dataset, tmp_path / "run", config="default", overrides=over, progress=False)
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    assert [int(r["train_images"]) for r in rows] == [8, 16]
    assert [float(r["lr"]) for r in rows] == [0.001, 0.0005]


@pytest.mark.slow
def test_multiclass_evaluate_and_predict_outputs(three_class_data, tmp_path):
    """Per-class metrics match a recomputation from the written index PNGs; overlays are in colour."""
    from medseg.evaluation import evaluate
    from medseg.inference.predictor import Predictor
    from medseg.metrics import image_metrics

    over = TINY + ["model.classes=3", "loss.name=dice_ce", "data.val_fraction=0.25", "train.epochs=1",
                   "data.class_names=[bg, square, disc]"]
    run = medseg.train(three_class_data / "labels", tmp_path / "run", config="default", overrides=over,
                       progress=False)
    summary = evaluate(run, three_class_data / "labels", split="val", overlays=2, progress=False)
    assert set(summary["per_class"]) == {"square", "disc"}
    macro = np.mean([summary["per_class"][c]["dice"] for c in ("square", "disc")])
    assert summary["dice"] == pytest.approx(macro)
    rows = list(csv.DictReader((run / "eval_val" / "per_image.csv").open()))
    assert len(rows) == summary["n_images"] == 3
    assert len(list((run / "eval_val" / "overlays").glob("*.png"))) == 2

    predictor = Predictor.load(run)
    images = three_class_data / "labels" / "images"
    predictor.predict_folder(images, tmp_path / "pred", overlay=True, progress=False)
    for row in rows:
        with Image.open(tmp_path / "pred" / f"{row['case_id']}.png") as im:
            assert im.mode == "P"
            pred = np.asarray(im)
        truth = np.asarray(Image.open(three_class_data / "labels" / "masks" / f"{row['case_id']}.png"))
        assert pred.max() < 3
        expected = image_metrics(pred == 1, truth == 1)["dice"]
        assert float(row["dice_square"]) == pytest.approx(expected, abs=1e-6)
    overlay = np.asarray(Image.open(tmp_path / "pred" / "c00_overlay.png"))
    assert overlay.shape == (64, 64, 3)
