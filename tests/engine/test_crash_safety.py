"""Crash-safe runs: SIGKILL at any moment, full disks and file-size limits never corrupt a checkpoint."""

from __future__ import annotations

import random
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from medseg.engine.checkpoint import load_checkpoint
from medseg.engine.history import read_history
from tests._paths import child_env

# fp32, one thread, no warm-up: bit-reproducible; a checkpoint every epoch
TINY = ["data.image_size=64", "model.encoder=resnet18", "model.encoder_weights=none", "train.precision=fp32",
        "train.augment=low", "optim.warmup_epochs=0", "train.batch_size=4", "train.checkpoint_every_s=0",
        "train.threads=1"]


def env() -> dict[str, str]:
    return child_env(OMP_NUM_THREADS="1", MEDSEG_PROGRESS="1")  # these tests watch the progress bar in a log


def limit_file_size(limit: int):
    """preexec_fn: files may not grow past ``limit`` bytes (writes fail with EFBIG, as on a full disk)."""
    def apply() -> None:
        import resource

        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


def train_cmd(data: Path, run: Path, epochs: int, *extra: str) -> list[str]:
    sets = [a for o in TINY for a in ("--set", o)]
    return [sys.executable, "-m", "medseg", "train", str(data), "--out", str(run), "--preset", "default", "--epochs",
            str(epochs),
            *sets, *extra]


def test_failed_checkpoint_write_keeps_the_previous_one(tmp_path):
    code = textwrap.dedent(f"""
        import resource, signal, torch
        from medseg.engine.checkpoint import save_checkpoint, load_checkpoint
        from medseg.errors import WriteError
        path = {str(tmp_path / 'last.pt')!r}
        torch.manual_seed(0)
        save_checkpoint(path, torch.nn.Linear(300, 300), {{}}, epoch=1)
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))
        try:
            save_checkpoint(path, torch.nn.Linear(300, 300), {{}}, epoch=2)
        except WriteError as err:
            print(err)
    """)
    proc = subprocess.run([sys.executable, "-c", code], env=env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert re.fullmatch(r"cannot write .*last\.pt \(File too large\); any earlier last\.pt is left unchanged\n",
                        proc.stdout), proc.stdout
    ckpt = load_checkpoint(tmp_path / "last.pt")
    torch.manual_seed(0)
    assert ckpt["epoch"] == 1 and torch.equal(ckpt["model"]["weight"], torch.nn.Linear(300, 300).weight)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]  # no temporary left behind


@pytest.mark.slow
def test_training_on_a_full_disk_stops_with_one_clear_error(tiny_dataset, tmp_path):
    run = tmp_path / "run"
    cmd = train_cmd(tiny_dataset, run, 1)
    cmd.insert(3, "-q")  # medseg -q train ...
    proc = subprocess.run(cmd, env=env(), capture_output=True, text=True, timeout=600,
                          preexec_fn=limit_file_size(200_000))
    assert proc.returncode == 2, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and re.search(r"cannot write .*\.pt \(File too large\)", errors[0]), proc.stderr
    assert "Traceback" not in proc.stderr
    assert not list(run.glob(".*.tmp")) and not list(run.glob("*.pt"))


@pytest.mark.slow
def test_sigkill_at_random_moments_then_resume_ends_with_the_same_weights(tiny_dataset, tmp_path):
    epochs = 3
    ref = subprocess.run(train_cmd(tiny_dataset, tmp_path / "ref", epochs), env=env(), capture_output=True,
                         text=True, timeout=600)
    assert ref.returncode == 0, ref.stderr[-2000:]
    run, rng, kills = tmp_path / "run", random.Random(14), []
    # kill points: while a checkpoint is being written, then two random moments in steps or validation
    for point in ("checkpoint", "random", "random", None):
        log = tmp_path / f"log{len(kills)}.txt"
        resume = ["--resume"] if (run / "last.pt").exists() else ["--overwrite"]
        with log.open("w") as f:
            proc = subprocess.Popen(train_cmd(tiny_dataset, run, epochs, *resume), env=env(), stdout=f, stderr=f)
        if point is None:
            assert proc.wait(timeout=600) == 0, log.read_text()[-2000:]
            break
        deadline = time.monotonic() + 300
        while "batch" not in log.read_text(errors="replace"):  # training has started
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-2000:]
            time.sleep(0.05)
        if point == "checkpoint":
            while not list(run.glob(".*.pt.*.tmp")):
                assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-2000:]
                time.sleep(0.002)
        else:
            time.sleep(rng.uniform(0.5, 6.0))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills.append(point)
        for name in ("last.pt", "best.pt"):  # whatever the moment, what is there loads
            if (run / name).exists():
                load_checkpoint(run / name)
    assert len(kills) == 3
    assert [r["epoch"] for r in read_history(run / "metrics.csv")] == list(range(1, epochs + 1))
    assert not list(run.glob(".*.tmp"))
    a, b = load_checkpoint(tmp_path / "ref" / "last.pt"), load_checkpoint(run / "last.pt")
    assert a["state"]["epoch"] == b["state"]["epoch"] == epochs
    for key, value in a["model"].items():  # deterministic fp32: the same weights as without kills
        assert torch.equal(value, b["model"][key]), key


@pytest.mark.slow
def test_resume_keeps_every_epoch_row_when_metrics_csv_is_behind_last_pt(tiny_dataset, tmp_path):
    """A kill between saving last.pt and writing metrics.csv must not lose that epoch's row on resume."""
    from medseg.engine.history import write_history
    from medseg.engine.train import train

    run = tmp_path / "run"
    train(tiny_dataset, run, overrides=[*TINY, "train.epochs=2"], progress=False)
    rows = read_history(run / "metrics.csv")
    write_history(run / "metrics.csv", rows[:1])  # as if killed after last.pt (epoch 2), before the csv
    train(tiny_dataset, run, overrides=[*TINY, "train.epochs=3"], resume=True, progress=False)
    assert [r["epoch"] for r in read_history(run / "metrics.csv")] == [1, 2, 3]
