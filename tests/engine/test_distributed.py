"""Multi-process training on CPU (gloo): the numbers of N processes are the numbers of one.

Launches go through torchrun (``python -m torch.distributed.run``), as users run them. Tolerance for the
loss curves: with the same effective batch an optimiser step sees the same images in 1 and 2 processes
(see ShardedSampler), so the only difference is BatchNorm's batch statistics (per process, not
synchronised on CPU); each epoch's mean training loss agrees within 3 % (observed: < 1 %).
"""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from medseg.engine.checkpoint import load_checkpoint
from medseg.engine.distributed import DistContext, ShardedSampler, gather_in_order, plan_batches, shard
from medseg.engine.history import read_history
from medseg.errors import ConfigError
from tests._paths import ROOT, child_env

TINY = ["data.image_size=32", "model.encoder=resnet18", "model.encoder_weights=none", "train.precision=fp32",
        "train.augment=none", "optim.warmup_epochs=0", "train.batch_size=8", "train.effective_batch_size=8",
        "train.checkpoint_every_s=0"]

DIST_VALIDATE = ROOT / "tests" / "_dist_validate.py"  # run by torchrun as a script


def sets(overrides: list[str]) -> list[str]:
    return [a for o in overrides for a in ("--set", o)]


def env() -> dict[str, str]:
    return child_env(OMP_NUM_THREADS="1", MEDSEG_PROGRESS="1")  # these tests watch the progress bar in a log


def torchrun(*args: str, nproc: int = 2) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={nproc}", *args]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def odd_data(tmp_path_factory) -> Path:
    """15 training and 5 validation images: odd counts everywhere."""
    from medseg.data.synthetic import make_synthetic_dataset

    return make_synthetic_dataset(tmp_path_factory.mktemp("dist") / "data", n_train=15, n_val=5, n_test=0,
                                  size=64, seed=3)


# ------------------------------------------------------------------------------------------ unit level
def test_plan_batches_keeps_the_effective_batch():
    assert plan_batches(16, None, 2, 100) == plan_batches(16, None, 2, 100)
    assert plan_batches(16, None, 2, 100).effective == 32  # standard DDP: grows with the processes
    for world in (1, 2, 4):
        p = plan_batches(4, 16, world, 100)
        assert p.effective == 16 and p.micro <= 4
    assert (plan_batches(8, 24, 2, 100).micro, plan_batches(8, 24, 2, 100).accum) == (6, 2)
    with pytest.raises(ConfigError, match="cannot be split over 2 processes"):
        plan_batches(8, 15, 2, 100)


def test_sharded_sampler_steps_cover_the_same_images_for_any_world():
    data = list(range(23))
    one = list(ShardedSampler(data, DistContext(), seed=5))
    ranks = [ShardedSampler(data, DistContext(rank=r, world=2), seed=5) for r in range(2)]
    shares = [list(s) for s in ranks]
    assert len(shares[0]) == len(shares[1]) == 12  # padded so that both run the same steps
    micro = 4  # two processes x 4 = one process x 8: step k sees one[8k:8k+8] either way
    for k in range(2):
        both = shares[0][micro * k: micro * (k + 1)] + shares[1][micro * k: micro * (k + 1)]
        assert sorted(both) == sorted(one[8 * k: 8 * (k + 1)])
    s = ShardedSampler(data, DistContext(), seed=5)
    s.set_epoch(1)
    assert list(s) != one  # reseeded every epoch
    s.set_epoch(0)
    s.set_start(16)
    assert list(s) == one[16:]  # a resumed epoch continues where it stopped


def test_validation_shards_without_padding_and_gathers_in_order():
    items = list(range(7))
    assert shard(items, DistContext(rank=1, world=3)) == [1, 4]
    assert gather_in_order(DistContext(), [x * 10 for x in items], 7) == [x * 10 for x in items]


# ------------------------------------------------------------------------------------------ torchrun
def _load_worker():
    import importlib.util

    spec = importlib.util.spec_from_file_location("_dist_validate", DIST_VALIDATE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_two_process_validation_equals_one_process_exactly(odd_data, tmp_path):
    out = tmp_path / "val.json"
    proc = subprocess.run(torchrun("--standalone", str(DIST_VALIDATE),
                                   str(odd_data), str(out)), env=env(), capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = json.loads(out.read_text())
    evaluate = _load_worker().evaluate
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each torchrun worker
    try:
        one = evaluate(odd_data, DistContext())
    finally:
        torch.set_num_threads(threads)
    for r in ranks:  # every rank holds the global Dice, bit for bit that of one process
        assert (r["dice"], r["n"]) == (one["dice"], 5)
        # the loss is continuous: a logit's last bits depend on the batch it was computed in (oneDNN)
        assert r["loss"] == pytest.approx(one["loss"], rel=1e-6)
        assert r["stop"] is True  # one rank's SIGTERM stops all
        assert r["elapsed"] == 100.0  # rank 0's clock decides the time budget



@pytest.mark.slow
def test_two_nodes_match_one_process_and_resume_into_one(odd_data, tmp_path):
    """Two torchrun 'nodes' on loopback (c10d rendezvous) train like one process; then one process resumes."""
    from medseg.engine.train import train

    one = train(odd_data, tmp_path / "one", config="default", overrides=TINY + ["train.epochs=2"], progress=False)
    port = free_port()
    args = ["--nnodes=2", "--rdzv-backend=c10d", f"--rdzv-endpoint=127.0.0.1:{port}", "--rdzv-id=medseg-test",
            "-m", "medseg", "-q", "train", str(odd_data), "--out", str(tmp_path / "two"), "--preset", "default",
            "--epochs", "2",
            *sets(TINY)]
    nodes = [subprocess.Popen(torchrun(*args, nproc=1), env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True) for _ in range(2)]
    logs = [n.communicate(timeout=600)[0] for n in nodes]
    assert [n.returncode for n in nodes] == [0, 0], logs[0][-3000:] + logs[1][-3000:]
    h1, h2 = read_history(one / "metrics.csv"), read_history(tmp_path / "two" / "metrics.csv")
    assert [r["epoch"] for r in h2] == [1, 2]
    for a, b in zip(h1, h2, strict=True):
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=0.03)
        assert (a["world_size"], b["world_size"], a["effective_batch"], b["effective_batch"]) == (1, 2, 8, 8)
        assert (a["train_images"], b["train_images"]) == (15, 16)  # 2 ranks x 8: one image padded in
        assert b["img_per_s_per_process"] > 0
    assert json.loads((tmp_path / "two" / "postprocess.json").read_text())["n_images"] > 0  # rank 0 tuned
    # resume the 2-process run in one process: same schedule (effective batch), one more epoch
    train(odd_data, tmp_path / "two", resume=True, overrides=["train.epochs=3"], progress=False)
    h3 = read_history(tmp_path / "two" / "metrics.csv")
    assert [(r["epoch"], r["world_size"]) for r in h3] == [(1, 2), (2, 2), (3, 1)]
    assert load_checkpoint(tmp_path / "two" / "last.pt")["state"]["epoch"] == 3


@pytest.mark.slow
def test_sigterm_mid_epoch_saves_resume_state_and_exits_0(odd_data, tmp_path):
    run = tmp_path / "run"
    log = tmp_path / "train.log"
    cmd = [sys.executable, "-m", "medseg", "train", str(odd_data), "--out", str(run), "--preset", "default",
           "--devices", "2",
           "--epochs", "1", *sets(TINY + ["data.image_size=64", "train.batch_size=1", "train.effective_batch_size=2"])]
    with log.open("w") as f:
        proc = subprocess.Popen(cmd, env=env(), stdout=f, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 300
    while not re.search(r"epoch 1/1:\s+\d+%\|[^|]*\| [1-9]", log.read_text(errors="replace")):  # a step done
        assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 0, log.read_text()[-3000:]
    ckpt = load_checkpoint(run / "last.pt")
    done = ckpt["state"]["epoch_images"]
    assert ckpt["state"]["epoch"] == 0 and 0 < done < 16, ckpt["state"]
    assert not list(run.glob(".*.tmp"))
    assert not (run / "postprocess.json").exists()  # an unfinished run is tuned when it ends
    # one process finishes the epoch from where both stopped
    from medseg.engine.train import train

    train(odd_data, run, resume=True, progress=False)
    (row,) = read_history(run / "metrics.csv")
    assert row["epoch"] == 1 and row["train_images"] == 15 - done  # the rest of the epoch, nothing twice
