"""Patch training vs letterbox, EMA on/off, at equal budget; and how well the budget holds (issue 9, items 2, 4, 8).

    .venv/bin/python bench/patches_ema_budget.py --minutes 20 [--only NAME ...]

Runs (all from scratch, encoder_weights none, one `train.time_budget_min` each):
  drive-letterbox: default preset on ../shared/data/drive_train (seeded split), letterbox 512;
  drive-patch: the same with data.patch_size=128 at native resolution (data.scale=1.0);
  drive-patch-ema: drive-patch with train.ema=0.999;
  isbi-letterbox / isbi-patch: ISBI 2012 membranes (invert_masks), letterbox 512 vs patches of 128;
  isic-default / isic-default-ema: ISIC 2018 (its split), default preset with and without EMA;
  budget-isic-deeplabv3: the isic-deeplabv3 preset (512 px) under a 1-minute budget: its wall time
  (around train(), from the call to the return) against the budget, the issue's overrun case.
Scores come from `medseg evaluate` on the val split at the images' own size (DRIVE: inside the field of
view). Writes bench/results/patches_ema_budget.json and prints a Markdown table with the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _subset import machine  # noqa: E402
from medseg.engine.history import read_history  # noqa: E402
from medseg.engine.train import train  # noqa: E402
from medseg.evaluation import evaluate  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
OUT = ROOT / "bench" / "results" / "patches_ema_budget"

PATCH = ["data.patch_size=128", "data.scale=1.0"]
ISBI = ["data.invert_masks=true"]
#: name: (preset, data folder, overrides, fixed budget in minutes or None for --minutes)
RUNS = {
    "drive-letterbox": ("default", "drive_train", ["data.image_size=512"], None),
    "drive-patch": ("default", "drive_train", PATCH, None),
    "drive-patch-ema": ("default", "drive_train", PATCH + ["train.ema=0.999"], None),
    "isbi-letterbox": ("default", "isbi2012_membrane", ISBI + ["data.image_size=512"], None),
    "isbi-patch": ("default", "isbi2012_membrane", ISBI + PATCH, None),
    "isic-default": ("default", "isic2018_256", [], None),
    "isic-default-ema": ("default", "isic2018_256", ["train.ema=0.999"], None),
    "budget-isic-deeplabv3": ("isic-deeplabv3", "isic2018_256", [], 1.0),
}


def run_one(name: str, minutes: float) -> dict:
    preset, data, extra, fixed = RUNS[name]
    budget = fixed or minutes
    over = ["model.encoder_weights=none", f"train.time_budget_min={budget}"] + extra
    run = OUT / name
    t0 = time.monotonic()
    train(DATA / data, run, config=preset, overrides=over, overwrite=True, progress=False)
    wall = time.monotonic() - t0
    rows = read_history(run / "metrics.csv")
    summary = evaluate(run, DATA / data, split="val", progress=False)
    return {"preset": preset, "data": data, "overrides": extra, "budget_min": budget, "train_wall_s": wall,
            "overrun_pct": 100 * (wall / (budget * 60) - 1), "dice": summary["dice"], "epochs": len(rows),
            "train_images": sum(r.get("train_images", 0) for r in rows)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=20.0, help="budget of every A/B run")
    ap.add_argument("--only", nargs="*", choices=sorted(RUNS))
    args = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT.parent / "patches_ema_budget.json"
    results = json.loads(path.read_text()) if path.is_file() else {}
    results["machine"] = machine()
    for name in args.only or RUNS:
        print(f"== {name}", flush=True)
        results[name] = run_one(name, args.minutes) | {"date": time.strftime("%Y-%m-%d")}
        path.write_text(json.dumps(results, indent=2))
        print(json.dumps(results[name]), flush=True)
    m = results["machine"]
    flags = ", ".join(f for f, on in m["flags"].items() if on)
    print(f"\nCPU: {m['cpu']} ({m['cores']} cores; {flags}; torch {m['torch']})\n")
    print("| run | data | settings | budget (min) | train wall (s) | over budget | val Dice | epochs | train items |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, r in results.items():
        if name == "machine":
            continue
        print(f"| {name} | {r['data']} | {' '.join(r['overrides']) or '-'} | {r['budget_min']:g} | "
              f"{r['train_wall_s']:.0f} | {r['overrun_pct']:+.1f} % | {r['dice']:.4f} | {r['epochs']} | "
              f"{r['train_images']} |")


if __name__ == "__main__":
    main()
