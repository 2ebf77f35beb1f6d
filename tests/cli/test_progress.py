"""Progress bars only where someone watches: a terminal or a notebook, and never under --quiet."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from medseg import progress
from tests._paths import child_env


class _Stream:
    def __init__(self, tty: bool) -> None:
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty

    def write(self, text: str) -> int:
        return len(text)

    def flush(self) -> None:
        pass


@pytest.mark.parametrize("tty, quiet, shown", [(True, False, True), (False, False, False), (True, True, False)])
def test_bars_are_shown_on_a_terminal_unless_quiet(monkeypatch, tty, quiet, shown):
    monkeypatch.setattr(sys, "stderr", _Stream(tty))
    monkeypatch.delenv("MEDSEG_PROGRESS", raising=False)
    monkeypatch.setitem(progress._state, "quiet", quiet)
    assert progress.bars_shown() is shown
    assert progress.progress_bar(range(3)).disable is not shown
    assert progress.progress_bar(range(3), enabled=False).disable


def test_medseg_progress_draws_bars_into_a_redirected_stream_unless_quiet(monkeypatch):
    monkeypatch.setattr(sys, "stderr", _Stream(False))
    monkeypatch.setenv("MEDSEG_PROGRESS", "1")
    monkeypatch.setitem(progress._state, "quiet", False)
    assert progress.bars_shown()
    monkeypatch.setitem(progress._state, "quiet", True)
    assert not progress.bars_shown()


def test_a_redirected_log_gets_no_progress_bar(tiny_run, tiny_dataset, tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    for p in sorted(tiny_dataset.rglob("*.jpg"))[:4]:
        shutil.copy(p, photos / p.name)
    env = child_env()
    env.pop("MEDSEG_PROGRESS", None)
    run = subprocess.run([sys.executable, "-m", "medseg", "predict", str(tiny_run), str(photos), "-o",
                          str(tmp_path / "out")], capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "wrote 4 masks" in run.stdout
    assert "predicting" not in run.stderr and "\r" not in run.stderr, run.stderr
