"""Kill training and prediction with SIGKILL at random moments on real data, resume, and report outcomes.

    .venv/bin/python bench/crash_resume.py [--trials 10] [--n-train 48] [--size 128] [--epochs 3]

Not a timing benchmark. Training (default model, fp32, one checkpoint per epoch, the first ``--n-train``
ISIC 2018 images): one uninterrupted reference run, then ``--trials`` runs each killed once (every third
one while a checkpoint is being written, the others at a random moment in steps or validation) and
resumed with ``--resume``. Each trial records whether ``last.pt``/``best.pt`` loaded right after the kill,
whether the resumed run reached the same number of epochs, whether its final weights equal the
reference's bit for bit, and whether any temporary file was left. Prediction: the reference model
over the validation images, killed ``--trials`` times at random moments and restarted each time;
the final folder must equal an uninterrupted run's file for file, byte for byte.
Writes bench/results/crash_resume.json and prints Markdown tables.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _subset import ROOT, env, machine, manifest

sys.path.insert(0, str(ROOT / "src"))
import torch  # noqa: E402

from medseg.engine.checkpoint import load_checkpoint  # noqa: E402
from medseg.engine.history import read_history  # noqa: E402


def train_cmd(data: Path, run: Path, args, *extra: str) -> list[str]:
    sets = [f"data.image_size={args.size}", "model.encoder_weights=none", "train.precision=fp32",
            "train.batch_size=8", "train.checkpoint_every_s=0", "train.threads=1", "train.augment=low",
            "train.patience=1000"]
    return [sys.executable, "-m", "medseg", "train", "--manifest", str(data), "--out", str(run), "--epochs",
            str(args.epochs), *[a for s in sets for a in ("--set", s)], *extra]


def loads(path: Path) -> bool | None:
    if not path.exists():
        return None
    try:
        load_checkpoint(path)
        return True
    except Exception:  # noqa: BLE001
        return False


def train_trial(i: int, data: Path, tmp: Path, ref: Path, duration: float, rng: random.Random, args) -> dict:
    run, log = tmp / f"trial{i}", tmp / f"trial{i}.log"
    point = "checkpoint write" if i % 3 == 0 else "random"
    with log.open("w") as f:
        proc = subprocess.Popen(train_cmd(data, run, args), env=env(1), stdout=f, stderr=f)
    t0 = time.monotonic()
    if point == "random":
        delay = rng.uniform(0.1, 1.0) * duration
        while time.monotonic() - t0 < delay and proc.poll() is None:
            time.sleep(0.01)
    else:
        while not list(run.glob(".*.pt.*.tmp")) and proc.poll() is None:
            time.sleep(0.002)
    finished_first = proc.poll() is not None
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = time.monotonic() - t0
    state = load_checkpoint(run / "last.pt")["state"] if loads(run / "last.pt") else None
    outcome = {"trial": i, "kill": point, "killed_after_s": round(killed_at, 1), "finished_before_kill":
               finished_first, "last_pt_loads": loads(run / "last.pt"), "best_pt_loads": loads(run / "best.pt"),
               "epochs_at_kill": state["epoch"] if state else 0}
    resume = ["--resume"] if (run / "last.pt").exists() else ["--overwrite"]
    done = subprocess.run(train_cmd(data, run, args, *resume), env=env(1), capture_output=True, text=True)
    outcome["resume_exit"] = done.returncode
    epochs = [r["epoch"] for r in read_history(run / "metrics.csv")]
    outcome["same_epochs"] = epochs == list(range(1, args.epochs + 1))
    a, b = load_checkpoint(ref / "last.pt")["model"], load_checkpoint(run / "last.pt")["model"]
    outcome["same_weights"] = all(torch.equal(v, b[k]) for k, v in a.items())
    outcome["temp_files_left"] = len(list(run.glob(".*.tmp")))
    return outcome


def predict_trials(ref: Path, images: Path, tmp: Path, rng: random.Random, args) -> list[dict]:
    cmd = [sys.executable, "-m", "medseg", "-q", "predict", str(ref), str(images), "--set", "infer.batch_size=1"]
    clean = tmp / "pred_clean"
    t0 = time.monotonic()
    subprocess.run([*cmd, "--out", str(clean)], env=env(1), check=True, capture_output=True)
    duration = time.monotonic() - t0
    want = {p.name: p.read_bytes() for p in clean.iterdir()}
    out, rows = tmp / "pred_killed", []
    for i in range(1, args.trials + 1):
        shutil.rmtree(out, ignore_errors=True)
        proc = subprocess.Popen([*cmd, "--out", str(out)], env=env(1), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.3, 0.9) * duration)
        finished_first = proc.poll() is not None
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        n_before = len(list(out.glob("*.png"))) if out.exists() else 0
        again = subprocess.run([*cmd, "--out", str(out)], env=env(1), capture_output=True, text=True)
        got = {p.name: p.read_bytes() for p in out.iterdir()}
        rows.append({"trial": i, "masks_before_restart": n_before, "of": len(want) - 1,
                     "finished_before_kill": finished_first, "restart_exit": again.returncode,
                     "identical_files": got == want})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=10)
    ap.add_argument("--n-train", type=int, default=48)
    ap.add_argument("--n-val", type=int, default=31)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--seed", type=int, default=14)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "crash_resume.json")
    args = ap.parse_args()
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        data = manifest(tmp / "data", args.n_train, args.n_val)
        t0 = time.monotonic()
        subprocess.run(train_cmd(data, tmp / "ref", args), env=env(1), check=True, capture_output=True)
        duration = time.monotonic() - t0
        train_rows = [train_trial(i, data, tmp, tmp / "ref", duration, rng, args) for i in range(1, args.trials + 1)]
        images = tmp / "val_images"
        images.mkdir()
        for line in (tmp / "data" / "manifest.csv").read_text().splitlines()[1:]:
            img, _, split = line.split(",")
            if split == "val":
                shutil.copy(img, images)
        pred_rows = predict_trials(tmp / "ref", images, tmp, rng, args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": machine(), "settings": {k: str(v) for k, v in vars(args).items()},
                                    "train": train_rows, "predict": pred_rows}, indent=2))
    print("\n| trial | kill | after (s) | epochs at kill | last.pt loads | best.pt loads | resumed to all epochs "
          "| same weights | temp files left |")
    print("|---" * 9 + "|")
    for r in train_rows:
        print(f"| {r['trial']} | {r['kill']}{' (run had ended)' if r['finished_before_kill'] else ''} | "
              f"{r['killed_after_s']} | {r['epochs_at_kill']} | {r['last_pt_loads']} | {r['best_pt_loads']} | "
              f"{r['same_epochs']} | {r['same_weights']} | {r['temp_files_left']} |")
    print("\n| trial | masks before restart | restart exit | identical files |")
    print("|---|---|---|---|")
    for r in pred_rows:
        print(f"| {r['trial']} | {r['masks_before_restart']} / {r['of']} | {r['restart_exit']} | "
              f"{r['identical_files']} |")
    ok = sum(r["same_weights"] and r["same_epochs"] and r["last_pt_loads"] is not False for r in train_rows)
    print(f"\ntraining: {ok}/{len(train_rows)} kills survived with identical weights; prediction: "
          f"{sum(r['identical_files'] for r in pred_rows)}/{len(pred_rows)} restarts identical")


if __name__ == "__main__":
    main()
