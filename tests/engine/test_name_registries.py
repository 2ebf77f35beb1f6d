"""Each list of names lives in one registry that config validation reads: architectures and encoders
(models.factory), losses (losses.LOSSES), augmentations (data.augmentations.AUGMENTATIONS)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from medseg.config import LossConfig, ModelConfig, TrainConfig, build_config
from medseg.data.augmentations import AUGMENTATIONS, build_augmentation
from medseg.errors import ConfigError
from medseg.losses import LOSSES


def test_unknown_architecture_and_encoder_fail_when_the_config_is_built():
    with pytest.raises(ConfigError, match=r"unknown architecture 'unett' \(did you mean 'unet'\?\); valid names: "):
        ModelConfig(arch="unett")
    with pytest.raises(ConfigError, match="unknown encoder 'resnet343' for fpn"):
        ModelConfig(arch="fpn", encoder="resnet343")
    with pytest.raises(ConfigError, match="psp_bins does not apply to unet"):
        build_config("default", overrides=["model.psp_bins=[1, 2]"])
    assert ModelConfig(arch="unet_classic", encoder="anything").encoder == "anything"  # no encoder: not checked


def test_loss_names_come_from_the_loss_registry(monkeypatch):
    with pytest.raises(ValidationError, match="dice_focal"):
        LossConfig(name="lovasz")
    with pytest.raises(ConfigError, match=r"loss.name: 'lovasz' is not one of " + ", ".join(LOSSES.names())):
        build_config("default", overrides=["loss.name=lovasz"])
    monkeypatch.setitem(LOSSES._items, "lovasz", lambda **kw: None)  # a registered loss is a valid name
    assert LossConfig(name="lovasz").name == "lovasz"


def test_augmentation_names_come_from_the_augmentation_registry():
    assert TrainConfig(augment="pspnet-mid").augment == "pspnet-mid"
    with pytest.raises(ConfigError, match=r"train.augment: 'midd' is not one of .*\(did you mean 'mid'\?\)"):
        build_config("default", overrides=["train.augment=midd"])
    assert build_augmentation("none") is None
    for name in AUGMENTATIONS:
        assert name == "none" or len(build_augmentation(name, 64).transforms) > 0
    with pytest.raises(ConfigError, match="unknown augmentation 'midd'"):
        build_augmentation("midd")
