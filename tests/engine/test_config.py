from __future__ import annotations

import re

import pytest

from medseg.config import build_config, parse_overrides, preset_names
from medseg.errors import ConfigError


def test_presets_all_validate():
    assert {"default", "demo"} <= set(preset_names())
    for name in preset_names():
        cfg = build_config(name)
        assert cfg.name == name


def test_default_is_resnet34_unet():
    cfg = build_config("default")
    assert (cfg.model.arch, cfg.model.encoder, cfg.model.encoder_weights) == ("unet", "resnet34", "auto")


def test_overrides_are_typed_and_nested():
    cfg = build_config("default", overrides=["train.epochs=7", "optim.lr=3e-4", "model.encoder_weights=none"])
    assert cfg.train.epochs == 7 and cfg.optim.lr == pytest.approx(3e-4)
    assert cfg.model.encoder_weights is None
    assert parse_overrides(["a.b.c=1", "a.b.d=x"]) == {"a": {"b": {"c": 1, "d": "x"}}}


def test_unknown_key_lists_valid_keys():
    with pytest.raises(ConfigError, match=r"unknown key 'train.epoch'.*valid keys here: epochs, batch_size"):
        build_config("default", overrides=["train.epoch=3"])


def test_unknown_section_and_preset():
    with pytest.raises(ConfigError, match="unknown key 'trian'"):
        build_config(overrides=["trian.epochs=3"])
    with pytest.raises(ConfigError, match=r"unknown preset 'defualt' \(did you mean 'default'\?\); valid presets"):
        build_config("defualt")


def test_bad_values_and_syntax():
    with pytest.raises(ConfigError, match="train.precision"):
        build_config(overrides=["train.precision=fp8"])
    with pytest.raises(ConfigError, match="key=value"):
        build_config(overrides=["train.epochs"])


def test_config_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  epochs: 3\nmodel:\n  encoder: resnet18\n")
    cfg = build_config("default", path, ["train.epochs=4"])
    assert cfg.train.epochs == 4 and cfg.model.encoder == "resnet18"
    path.write_text("- not a mapping\n")
    with pytest.raises(ConfigError, match="mapping"):
        build_config(file=path)
    with pytest.raises(ConfigError, match="does not exist"):
        build_config(file=tmp_path / "missing.yaml")


@pytest.mark.parametrize("item,suggestion", [
    ("optim.lrr=1e-3", "optim.lr"), ("lr=1e-3", "optim.lr"), ("train.epoch=3", "train.epochs"),
    ("data.imagesize=64", "data.image_size")])
def test_unknown_set_keys_suggest_the_full_dotted_key(item, suggestion):
    with pytest.raises(ConfigError, match=rf"did you mean '{re.escape(suggestion)}'"):
        build_config(overrides=[item])
