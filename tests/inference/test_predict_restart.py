"""Restartable, sharded ``medseg predict``: kill it, start it again, get exactly the files of one clean run."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from medseg.errors import MedsegError
from medseg.inference.folder_run import MANIFEST, predict_folder_restartable
from medseg.inference.predictor import Predictor
from tests._paths import child_env

ONE_BY_ONE = ["infer.batch_size=1"]  # each image computed alone: bytes independent of how work is split


def env() -> dict[str, str]:
    return child_env(OMP_NUM_THREADS="1")


def kill_tree(pid: int) -> None:
    """SIGKILL ``pid`` and every descendant (torchrun's workers live in their own sessions)."""
    from medseg.engine.distributed import _children

    pids, i = [pid], 0
    while i < len(pids):
        pids += _children(pids[i])
        i += 1
    for p in reversed(pids):
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass


def files_of(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.fixture(scope="module")
def photos(tiny_dataset, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("photos")
    for p in sorted(tiny_dataset.rglob("*.jpg")):
        shutil.copy(p, folder / p.name)
    assert len(list(folder.iterdir())) >= 20
    return folder


@pytest.fixture(scope="module")
def reference(tiny_run, photos, tmp_path_factory) -> Path:
    """One uninterrupted, single-process run."""
    out = tmp_path_factory.mktemp("reference")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the torchrun workers
    try:
        predict_folder_restartable(Predictor.load(tiny_run, overrides=ONE_BY_ONE), photos, out, progress=False)
    finally:
        torch.set_num_threads(threads)
    return out


def test_rerun_skips_complete_outputs_and_redoes_broken_ones(tiny_run, photos, reference, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(reference, out)
    victims = sorted(out.glob("*.png"))[:2]
    victims[0].unlink()
    victims[1].write_bytes(victims[1].read_bytes()[:50])  # torn by a writer that was not atomic
    (out / f".{victims[0].name}.abc123.tmp").write_bytes(b"partial")
    predictor = Predictor.load(tiny_run, overrides=ONE_BY_ONE)
    result = predict_folder_restartable(predictor, photos, out, progress=False)
    assert sorted(p.name for p in result.written) == sorted(v.name for v in victims)
    assert len(result.skipped) == len(list(photos.iterdir())) - 2
    assert files_of(out).keys() == files_of(reference).keys()
    # another model or other settings into the same folder: refused, nothing touched
    other = Predictor.load(tiny_run, overrides=["infer.threshold=0.3"])
    with pytest.raises(MedsegError, match="another model or other settings"):
        predict_folder_restartable(other, photos, out, progress=False)
    assert predict_folder_restartable(other, photos, out, overwrite=True, progress=False).written
    assert (out / MANIFEST).is_file()


@pytest.mark.slow
def test_sharded_predict_killed_and_restarted_matches_one_clean_run(tiny_run, photos, reference, tmp_path):
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", "-m", "medseg",
           "predict", str(tiny_run), str(photos), "--out", str(out), "--set", ONE_BY_ONE[0]]
    first = subprocess.Popen(cmd, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             start_new_session=True)
    deadline = time.monotonic() + 300
    while len(list(out.glob("*.png"))) < 3:  # some masks written, most not
        assert first.poll() is None and time.monotonic() < deadline, "prediction ended before it could be killed"
        time.sleep(0.05)
    kill_tree(first.pid)
    first.wait()
    for p in out.glob("*.png"):  # what a kill leaves is complete: partial files only ever have temporary names
        assert p.read_bytes().endswith(b"IEND\xaeB`\x82"), p
    done_before = len(list(out.glob("*.png")))
    total = len(list(photos.iterdir()))
    assert done_before < total

    second = subprocess.run(cmd, env=env(), capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stderr[-3000:]
    m = re.search(r"wrote (\d+) masks to .*, (\d+) already complete by 2 processes", second.stdout)
    assert m, second.stdout
    assert (int(m[1]), int(m[2])) == (total - done_before, done_before)  # each file written once
    assert files_of(out) == files_of(reference)  # same names, same bytes, no partial file left
