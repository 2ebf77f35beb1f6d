"""One process against N processes (torchrun, DDP over gloo on CPU) at the same effective batch.

    .venv/bin/python bench/distributed_overhead.py [--nproc 2] [--n-train 400] [--epochs 3] [--size 256]

Trains the default model (ResNet-34 U-Net, no pretrained weights, fp32 so that the curves compare) on the
first ``--n-train`` ISIC 2018 images twice: ``medseg train`` with 1 process and with ``--devices N``,
both with ``train.effective_batch_size`` fixed, so every optimiser step sees the same images. Each
process gets cores/N threads. Reports training images/s (all processes together, per process, the
first epoch left out as warm-up) and the per-epoch training loss and validation Dice of both runs.
On one machine N processes share the same cores, so N > 1 cannot be faster: this measures the cost
of DDP (gradient all-reduce, padding, duplicated data loading). Writes
bench/results/distributed_overhead.json and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _subset import ROOT, env, machine, manifest

sys.path.insert(0, str(ROOT / "src"))
from medseg.engine.history import read_history  # noqa: E402


def run(nproc: int, data: Path, out: Path, args) -> dict:
    sets = [f"data.image_size={args.size}", "model.encoder_weights=none", "train.precision=fp32",
            f"train.batch_size={args.batch}", f"train.effective_batch_size={args.effective_batch}",
            "train.augment=none", "train.patience=1000", "optim.warmup_epochs=0"]
    cmd = [sys.executable, "-m", "medseg", "-q", "train", "--manifest", str(data), "--out", str(out),
           "--epochs", str(args.epochs), *[a for s in sets for a in ("--set", s)]]
    if nproc > 1:
        cmd += ["--devices", str(nproc)]
    t0 = time.monotonic()
    subprocess.run(cmd, env=env(), check=True)
    rows = read_history(out / "metrics.csv")
    steady = rows[1:] or rows
    return {"nproc": nproc, "wall_s": time.monotonic() - t0,
            "img_per_s": statistics.mean(r["train_img_per_s"] for r in steady),
            "img_per_s_per_process": statistics.mean(r.get("img_per_s_per_process", r["train_img_per_s"])
                                                     for r in steady),
            "train_loss": [r["train_loss"] for r in rows], "val_dice": [r["val_dice"] for r in rows],
            "effective_batch": rows[-1].get("effective_batch")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nproc", type=int, default=2)
    ap.add_argument("--n-train", type=int, default=400)
    ap.add_argument("--n-val", type=int, default=101, help="odd on purpose: unequal validation shards")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--batch", type=int, default=8, help="largest micro-batch per process")
    ap.add_argument("--effective-batch", type=int, default=16)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "distributed_overhead.json")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = manifest(Path(tmp) / "data", args.n_train, args.n_val)
        results = [run(n, data, Path(tmp) / f"run{n}", args) for n in (1, args.nproc)]
    meta = {"machine": machine(), "settings": vars(args) | {"out": str(args.out)}}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"meta": meta, "results": results}, indent=2))
    m = meta["machine"]
    flags = ", ".join(f for f, on in m["flags"].items() if on) or "none"
    print(f"\n{m['cpu']}, {m['cores']} cores (flags: {flags}; torch {m['torch']}, {m['cpu_capability']}); "
          f"{args.n_train} ISIC images at {args.size} px, effective batch {args.effective_batch}, fp32\n")
    print("| processes | images/s (all) | images/s per process | overhead vs 1 | wall (s) |")
    print("|---|---|---|---|---|")
    base = results[0]["img_per_s"]
    for r in results:
        print(f"| {r['nproc']} | {r['img_per_s']:.2f} | {r['img_per_s_per_process']:.2f} | "
              f"{base / r['img_per_s'] - 1:+.0%} | {r['wall_s']:.0f} |")
    print("\n| epoch | " + " | ".join(f"loss {r['nproc']}p | val Dice {r['nproc']}p" for r in results) + " |")
    print("|---" * (1 + 2 * len(results)) + "|")
    for e in range(len(results[0]["train_loss"])):
        cells = " | ".join(f"{r['train_loss'][e]:.4f} | {r['val_dice'][e]:.4f}" for r in results)
        print(f"| {e + 1} | {cells} |")


if __name__ == "__main__":
    main()
