"""One DataSource (where the data is) parsed one way by every command, and one config argument for train()."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer.main
import yaml
from typer.testing import CliRunner

import medseg
from medseg.cli import app
from medseg.config import Config, build_config, resolve_config
from medseg.data.prepare import discover_and_check
from medseg.data.source import DataSource
from medseg.errors import ConfigError, DataError
from tests.conftest import TINY  # noqa: I001

#: every command that reads a dataset takes the same DATA argument and data options
READERS = ["train", "evaluate", "compare", "report", "export", "tune-postprocess", "data check", "data fingerprint"]


def test_bad_combinations_fail_when_the_source_is_built(tmp_path):
    with pytest.raises(DataError, match="--images and --masks"):
        DataSource(masks=tmp_path)
    with pytest.raises(DataError, match="--images and --masks"):
        DataSource(root=tmp_path, images=tmp_path)
    assert not DataSource() and not DataSource.of(None)
    source = DataSource.of(str(tmp_path))
    assert source == DataSource(root=tmp_path) and isinstance(source.root, Path) and str(source) == str(tmp_path)
    assert DataSource.of(source) is source
    with pytest.raises(DataError, match="does not exist"):
        DataSource(tmp_path / "nowhere").find()


def test_two_folders_find_the_same_pairs_as_their_parent(tiny_dataset):
    whole = discover_and_check(DataSource(tiny_dataset))
    folders = discover_and_check(DataSource(images=tiny_dataset / "images", masks=tiny_dataset / "masks"))
    assert [p.case_id for p in whole.good] == [p.case_id for p in folders.good] and len(whole.good) == 24


def test_recorded_source_round_trip(tmp_path, tiny_dataset):
    source = DataSource(images=tiny_dataset / "images", masks=tiny_dataset / "masks")
    source.record(tmp_path)
    saved = json.loads((tmp_path / "data_source.json").read_text())
    assert saved == {k: str((tiny_dataset / k).resolve()) for k in ("images", "masks")}
    assert DataSource().or_recorded(tmp_path / "best.pt") == DataSource(images=saved["images"], masks=saved["masks"])
    assert DataSource().or_recorded(tmp_path) == DataSource().or_recorded(tmp_path / "best.pt")
    assert DataSource(tiny_dataset).or_recorded(tmp_path) == DataSource(tiny_dataset)
    (tmp_path / "data_source.json").write_text('{"masks": "/only/masks"}')  # damaged: treated as none
    with pytest.raises(DataError, match="records none"):
        DataSource().or_recorded(tmp_path)


@pytest.mark.parametrize("command", READERS)
def test_every_reading_command_takes_data_and_the_same_options(command):
    cmd = typer.main.get_command(app)
    for name in command.split():
        cmd = cmd.commands[name]
    params = {p.name: p for p in cmd.params}
    assert params["data"].metavar == "DATA" and not params["data"].required
    for name in ("images", "masks", "manifest"):
        assert params[name].opts == [f"--{name}"]


def test_cli_masks_without_images_is_one_sentence(tmp_path):
    result = CliRunner().invoke(app, ["evaluate", str(tmp_path), "--masks", str(tmp_path)])
    assert result.exit_code != 0
    assert "give both an images folder and a masks folder" in str(result.exception) + result.output


def test_evaluate_on_two_folders_matches_the_data_folder(tiny_run, tiny_dataset, tmp_path):
    folder = medseg.evaluate(tiny_run, tiny_dataset, out=tmp_path / "a", progress=False)
    result = CliRunner().invoke(app, ["evaluate", str(tiny_run), "--images", str(tiny_dataset / "images"),
                                      "--masks", str(tiny_dataset / "masks"), "-o", str(tmp_path / "b")])
    assert result.exit_code == 0, result.output
    folders = json.loads((tmp_path / "b" / "summary.json").read_text())
    assert folders["n_images"] == folder["n_images"] == 4 and folders["dice"] == folder["dice"]
    assert folders["data"] == str(tiny_dataset / "images")


def test_one_config_argument(tmp_path):
    default = build_config("default")
    assert resolve_config() == resolve_config("default") == default
    assert resolve_config("isic-unet") == build_config("isic-unet")
    over = resolve_config(default, ["optim.lr=0.1"])
    assert over.optim.lr == 0.1 and default.optim.lr != 0.1  # the Config given is not changed
    assert resolve_config(default) is default
    path = tmp_path / "plan.yaml"
    path.write_text(yaml.safe_dump({"model": {"encoder": "resnet18"}, "train": {"epochs": 3}}))
    for given in (path, str(path)):
        cfg = resolve_config(given, ["train.epochs=4"])
        assert isinstance(cfg, Config) and cfg.model.encoder == "resnet18" and cfg.train.epochs == 4
    with pytest.raises(ConfigError, match="does not exist"):
        resolve_config(tmp_path / "missing.yml")
    with pytest.raises(ConfigError, match="unknown preset 'isic-unett'"):
        resolve_config("isic-unett")


def test_train_from_a_yaml_file_and_a_source(tiny_run, tiny_dataset, tmp_path):
    """A run's config.yaml (or a `medseg plan` output, also a config YAML) trains through the same path."""
    source = DataSource(images=tiny_dataset / "images", masks=tiny_dataset / "masks")
    run = medseg.train(source, tmp_path / "run", config=tiny_run / "config.yaml", epochs=1, progress=False)
    again = yaml.safe_load((run / "config.yaml").read_text())
    first = yaml.safe_load((tiny_run / "config.yaml").read_text())
    assert again["train"].pop("epochs") == 1 and first["train"].pop("epochs") == 2
    assert all(again[k] == first[k] for k in ("data", "model", "loss", "optim", "train"))
    assert DataSource().or_recorded(run) == DataSource(images=(tiny_dataset / "images").resolve(),
                                                  masks=(tiny_dataset / "masks").resolve())
    assert build_config("default", overrides=TINY).model == resolve_config(run / "config.yaml").model
