"""Every preset trains end to end on tiny synthetic data (a few steps), then predicts."""

from __future__ import annotations

import csv

import numpy as np
import pytest

import medseg
from medseg.config import build_config, preset_names
from medseg.data.augmentations import AUGMENTATIONS

FAST = ["data.image_size=64", "model.encoder_weights=none", "train.batch_size=4", "train.precision=fp32"]
TUTORIAL_PRESETS = ["isic-deeplabv3", "dicom-vgg16-unet", "isic-unet", "dicom-pspnet"]


def test_the_four_tutorial_presets_exist_with_their_recipe():
    assert set(TUTORIAL_PRESETS) <= set(preset_names())
    d = build_config("isic-deeplabv3")
    assert (d.model.arch, d.model.encoder, d.data.image_size, d.optim.schedule, d.train.patience) == (
        "isic-deeplabv3", "resnet50", 512, "plateau", 10)
    v = build_config("dicom-vgg16-unet")
    assert (v.model.classes, v.loss.name, v.optim.milestones, v.optim.milestone_lrs, v.data.window) == (
        2, "dice_focal", [10, 20], [5e-5, 1e-5], "soft_tissue")
    u = build_config("isic-unet")
    assert (u.model.arch, u.model.base_channels, u.optim.lr, u.optim.weight_decay) == ("unet_classic", 64, 1e-4, 1e-5)
    p = build_config("dicom-pspnet")
    assert p.model.psp_bins == [1, 3, 5, 7] and p.loss.alpha == 0.7 and p.loss.class_weights == "auto"
    assert [(s.lr, s.data_fraction) for s in p.train.stages] == [(1e-4, 0.2), (5e-5, 0.6), (1e-5, 1.0)]


def test_augmentation_names_match_the_config():
    from typing import get_args

    from medseg.config import Augment

    assert set(get_args(Augment)) == set(AUGMENTATIONS)


@pytest.mark.slow
@pytest.mark.parametrize("preset", TUTORIAL_PRESETS)
def test_preset_trains_and_predicts(preset, tiny_dataset, tmp_path):
    over = FAST + ["train.epochs=1"]
    if preset == "dicom-pspnet":  # three one-epoch stages instead of 10 epochs each
        over.append("train.stages=[{epochs: 1, lr: 1.0e-4, data_fraction: 0.25, augment: pspnet-low}, "
                    "{epochs: 1, lr: 1.0e-5, data_fraction: 1.0, augment: pspnet-high}]")
    if preset == "isic-unet":
        over.append("model.base_channels=16")
    run = medseg.train(tiny_dataset, tmp_path / preset, config=preset, overrides=over, progress=False)
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    assert len(rows) == (2 if preset == "dicom-pspnet" else 1)
    mask = medseg.load(run).predict(np.zeros((70, 90, 3), np.uint8))
    assert mask.shape == (70, 90)
