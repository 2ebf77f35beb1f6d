"""One name per idea and an Examples section, checked over every command of the Typer app.

The walk covers whatever commands the app has, so a command added later is held to the same rules.
"""

from __future__ import annotations

import re

import pytest
import typer.main
from typer.core import TyperArgument, TyperOption
from typer.testing import CliRunner

from medseg.cli import app
from medseg.cli_style import hoist_global_flags

#: idea -> the one spelling (parameter names that mean it, in any command)
ONE_NAME = {
    "time_budget": "--time-budget",
    "threshold": "--threshold",
    "set_": "--set",
    "overlay": "--overlay",
}
#: spellings that must not be visible: another name for an idea above, or for --out / DATA
OTHER_NAMES = {"--minutes", "--budget", "--overlays", "--output", "--outdir", "--out-dir", "--dst", "--to",
               "--data", "--thresh", "--override", "--config-set", "--dataset"}


def _commands(cmd, path: tuple[str, ...] = ()):
    if hasattr(cmd, "commands"):
        for name, sub in cmd.commands.items():
            yield from _commands(sub, path + (name,))
    else:
        yield path, cmd


ROOT = typer.main.get_command(app)
COMMANDS = list(_commands(ROOT))
IDS = [" ".join(p) for p, _ in COMMANDS]


def _help(path: tuple[str, ...]) -> str:
    result = CliRunner().invoke(app, [*path, "--help"], terminal_width=100)
    assert result.exit_code == 0, result.output
    return result.output


def test_the_walk_finds_the_commands():
    assert {"train", "evaluate", "predict", "export", "demo", "data check", "convert dicom"} <= set(IDS)


@pytest.mark.parametrize("path,cmd", COMMANDS, ids=IDS)
def test_help_has_examples_and_plain_metavars(path, cmd):
    text = _help(path)
    assert "Examples:" in text
    examples = text.split("Examples:", 1)[1]
    lines = [line.strip() for line in examples.splitlines() if line.strip().startswith("medseg ")]
    assert lines, f"no example command line in `medseg {' '.join(path)} --help`"
    assert all(line.startswith(f"medseg {' '.join(path[:1])}") for line in lines[:1]), lines
    for bad in ("<bool>", "<path>", "<str>", "<int>", "<float>", "list[", "{", "╭"):
        assert bad not in text.replace("{0,255}", ""), f"{bad!r} in the help of medseg {' '.join(path)}"
    too_long = [line for line in text.splitlines() if len(line) > 100]
    assert not too_long, f"medseg {' '.join(path)} --help is wider than 100 columns: {too_long}"


@pytest.mark.parametrize("path,cmd", COMMANDS, ids=IDS)
def test_one_name_per_idea(path, cmd):
    where = f"medseg {' '.join(path)}"
    for param in cmd.params:
        if getattr(param, "hidden", False):
            continue  # deprecated aliases stay hidden
        names = set(param.opts) | set(param.secondary_opts)
        assert not names & OTHER_NAMES, f"{where}: {sorted(names & OTHER_NAMES)} instead of the common name"
        if param.name in ONE_NAME:
            assert ONE_NAME[param.name] in param.opts, f"{where}: {param.name} is spelled {param.opts}"
        if param.name == "set_":
            assert param.metavar == "KEY=VALUE" and param.multiple
        if param.name == "out":
            assert isinstance(param, TyperOption), f"{where}: the output is an option, --out/-o"
            assert {"--out", "-o"} <= set(param.opts), f"{where}: --out without -o"
        if param.name in ("data", "run") or getattr(param, "metavar", None) == "DATA":
            assert isinstance(param, TyperArgument), f"{where}: {param.name.upper()} is positional"
        if param.name == "time_budget":
            assert param.metavar == "MINUTES"
        if isinstance(param, TyperOption) and param.is_flag and param.name in ("overlay",):
            assert not param.secondary_opts  # a plain switch


def test_commands_that_write_take_out():
    writers = {"train", "evaluate", "predict", "export", "demo", "convert dicom", "convert labels", "models"}
    for path, cmd in COMMANDS:
        if " ".join(path) in writers:
            assert any(p.name == "out" for p in cmd.params), " ".join(path)


def test_debug_and_version_anywhere(tmp_path):
    assert hoist_global_flags(["train", "data", "--debug"]) == ["--debug", "train", "data"]
    assert hoist_global_flags(["predict", "r", "--", "--debug"]) == ["predict", "r", "--", "--debug"]
    version = CliRunner().invoke(app, ["presets", "--version"])
    assert version.exit_code == 0 and re.match(r"medseg \d+\.\d+", version.output)
    result = CliRunner().invoke(app, ["data", "check", str(tmp_path / "none"), "--debug"])
    assert "does not exist" in str(result.exception)  # --debug was accepted after the command


def test_deprecated_spellings_still_work(tiny_run, tiny_dataset, tmp_path):
    result = CliRunner().invoke(app, ["evaluate", str(tiny_run), str(tiny_dataset), "--overlays", "2",
                                      "-o", str(tmp_path / "ev")])
    assert result.exit_code == 0, result.output
    assert len(list((tmp_path / "ev" / "overlays").glob("*.png"))) == 2


def test_presets_say_what_to_choose_on_cpu_and_models_fit_100_columns():
    presets = CliRunner().invoke(app, ["presets"], terminal_width=200).output
    assert "On a CPU choose `default`" in presets and "demo" in presets
    models = CliRunner().invoke(app, ["models", "--size", "64"], terminal_width=200)
    assert models.exit_code == 0, models.output
    assert "unet" in models.output
    table = models.stdout.splitlines()  # the progress bar goes to stderr
    assert max(len(line) for line in table) <= 100
