"""The command line: help texts, exit codes and one-line errors without tracebacks."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import TINY  # noqa: I001

MEDSEG = [sys.executable, "-c", "from medseg.cli import main; main()"]


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1"}
    return subprocess.run(MEDSEG + list(args), capture_output=True, text=True, cwd=cwd, env=env, timeout=300)


def test_help_lists_commands_and_options():
    out = run("--help").stdout
    for cmd in ("train", "evaluate", "predict", "demo", "data", "presets"):
        assert cmd in out
    train_help = run("train", "--help").stdout
    assert "--time-budget" in train_help and "--resume" in train_help and "--set" in train_help


@pytest.mark.parametrize(
    "args,message",
    [
        (["data", "check", "/nonexistent/folder"], "does not exist"),
        (["train", "/nonexistent/folder", "--out", "x"], "does not exist"),
        (["train", ".", "--preset", "nope"], "unknown preset 'nope'"),
        (["train", ".", "--set", "train.epoch=3"], "unknown key 'train.epoch'"),
        (["predict", "/nonexistent/run", "."], "/nonexistent/run does not exist"),
    ],
)
def test_user_errors_are_one_line_without_traceback(args, message, tmp_path):
    result = run(*args, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().count("\n") == 0


def test_debug_shows_traceback(tmp_path):
    result = run("--debug", "data", "check", "/nonexistent/folder", cwd=tmp_path)
    assert result.returncode != 0 and "Traceback" in result.stderr


def test_data_check_exit_codes(tiny_dataset, tmp_path):
    ok = run("data", "check", str(tiny_dataset))
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "24" in ok.stdout
    broken = tmp_path / "broken"
    import shutil

    shutil.copytree(tiny_dataset, broken)
    (broken / "masks" / "SYN_0003_segmentation.png").unlink()
    (broken / "images" / "SYN_0004.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
    bad = run("data", "check", str(broken))
    assert bad.returncode == 1
    assert "SYN_0003" in bad.stdout and "SYN_0004" in bad.stdout


@pytest.mark.slow
def test_train_evaluate_predict_commands(tiny_dataset, tmp_path):
    sets = [a for s in TINY for a in ("--set", s)]
    r = run("train", str(tiny_dataset), "--out", str(tmp_path / "run"), "--preset", "default", "--epochs", "1", *sets)
    assert r.returncode == 0, r.stderr
    r = run("evaluate", str(tmp_path / "run"), str(tiny_dataset), "--split", "test")
    assert r.returncode == 0, r.stderr
    assert "thresholded_jaccard" in r.stdout and (tmp_path / "run" / "eval_test" / "summary.json").is_file()
    r = run("predict", str(tmp_path / "run"), str(tiny_dataset / "images"), "--out", str(tmp_path / "p"))
    assert r.returncode == 0, r.stderr
    assert len(list((tmp_path / "p").glob("*.png"))) == 24
