"""The issue-9 peer, today's default and the plan, side by side at equal budget on real data.

    .venv/bin/python bench/peer_vs_plan.py --minutes 20 [--data isic drive isbi] [--only peer default plan]
    .venv/bin/python bench/peer_vs_plan.py --minutes 0.3 --subset 24 --data isic   # a quick check

Each contestant trains from scratch with ``train.time_budget_min = MINUTES`` on the data's own split
(ISIC: split.csv) or the seeded 80/20 split every config shares (DRIVE, ISBI; ISBI with
data.invert_masks=true: membranes are 0 in its files), then ``medseg evaluate`` scores the val split at
each image's original size (DRIVE: inside the field of view, from fov_masks/, as the literature does).

- peer: bench/configs/peer.yaml (MONAI UNet 32-512, letterbox 256, Dice+BCE, AdamW 1e-3 cosine, batch 8);
- default: the default preset (SMP U-Net ResNet-34, from scratch);
- plan: the command ``medseg train DATA --time-budget MINUTES`` (plans first, inside the budget, and
  chooses the post-processing at the end; the planning time is recorded). The default trains through
  ``medseg.train`` (post-processing chosen too); the peer is the bare recipe (engine train, none).

``--subset N`` trains on the first N pairs only (80 % train, 20 % val, a manifest under the results
folder) to check the script quickly. Records the CPU model and flags (bf16, AMX, AVX-512), prints a
Markdown table and writes bench/results/peer_vs_plan.json (merged with earlier runs).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import medseg  # noqa: E402
from _subset import machine  # noqa: E402
from medseg.config import build_config  # noqa: E402
from medseg.data.layouts import find_pairs  # noqa: E402
from medseg.data.source import DataSource  # noqa: E402
from medseg.engine.train import train  # noqa: E402
from medseg.evaluation import evaluate  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
OUT = ROOT / "bench" / "results" / "peer_vs_plan"
PEER = ROOT / "bench" / "configs" / "peer.yaml"
SETS = {"isic": ("isic2018_256", []), "drive": ("drive_train", []),
        "isbi": ("isbi2012_membrane", ["data.invert_masks=true"])}
CONTESTANTS = ("peer", "default", "plan")


def subset_manifest(data: Path, n: int, out: Path) -> Path:
    """manifest.csv of the first ``n`` pairs of ``data`` (80 % train, 20 % val; roi kept)."""
    pairs = [p for p in find_pairs(data).pairs if p.mask is not None][:n]
    n_train = max(1, round(0.8 * len(pairs)))
    out.mkdir(parents=True, exist_ok=True)
    path = out / "manifest.csv"
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image", "mask", "split", "roi"])
        for i, p in enumerate(pairs):
            w.writerow([p.image, p.mask, "train" if i < n_train else "val", p.roi or ""])
    return path


def run_one(name: str, key: str, minutes: float, subset: int | None) -> dict:
    folder, extra = SETS[key]
    run = OUT / f"{key}_{name}"
    source = (DataSource(DATA / folder) if not subset else
              DataSource(manifest=subset_manifest(DATA / folder, subset, run.with_name(run.name + "_data"))))
    over = [f"train.time_budget_min={minutes}"] + extra
    record: dict = {"data": folder, "contestant": name, "minutes": minutes, "subset": subset}
    t0 = time.monotonic()
    if name == "peer":
        train(source, run, config=PEER, overrides=over, overwrite=True, progress=False)
    elif name == "default":  # medseg.train: the default preset as the product trains it (post-processing too)
        medseg.train(source, run, config="default", overrides=over + ["model.encoder_weights=none"], overwrite=True,
              progress=False)
    else:  # the product's own command: `medseg train DATA --time-budget MINUTES` plans inside the budget
        cmd = [sys.executable, "-m", "medseg", "train", str(source), "-o", str(run), "--time-budget", f"{minutes:g}",
               "--overwrite"] + [a for x in extra for a in ("--set", x)]
        subprocess.run(cmd, check=True)
        planned = build_config(file=run / "plan.yaml")
        seconds = re.search(r"planned in ([0-9.]+) s", (run / "plan.yaml").read_text())
        record["plan_seconds"] = float(seconds.group(1)) if seconds else None
        record["plan"] = {"mode": "patches" if planned.data.patch_size else "letterbox",
                          "arch": planned.model.arch, "base_channels": planned.model.base_channels,
                          "image_size": planned.data.image_size}
    record["train_wall_s"] = round(time.monotonic() - t0, 1)
    tuned = run / "postprocess.json"
    record["postprocess"] = json.loads(tuned.read_text()) if tuned.is_file() else None
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    images = sum(int(r["train_images"]) for r in rows)
    seconds = sum(float(r["train_seconds"]) for r in rows)
    summary = evaluate(run, source, split="val", progress=False)
    record.update(epochs=len(rows), img_per_s=round(images / max(seconds, 1e-9), 2),
                  dice=summary["dice"], iou=summary["iou"], n_val=summary["n_images"],
                  summary={k: v for k, v in summary.items() if isinstance(v, (int, float))})
    return record


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=20.0)
    ap.add_argument("--data", nargs="*", choices=sorted(SETS), default=sorted(SETS))
    ap.add_argument("--only", nargs="*", choices=CONTESTANTS, default=list(CONTESTANTS))
    ap.add_argument("--subset", type=int, default=None, metavar="N", help="first N pairs only (a quick check)")
    args = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT.parent / "peer_vs_plan.json"
    results = json.loads(path.read_text()) if path.is_file() else {}
    results["machine"] = machine()
    for key in args.data:
        for name in args.only:
            tag = f"{key}/{name}" + (f"/subset{args.subset}" if args.subset else "")
            results[tag] = run_one(name, key, args.minutes, args.subset) | {"date": time.strftime("%Y-%m-%d")}
            path.write_text(json.dumps(results, indent=2))
            print(json.dumps(results[tag]), flush=True)
    m = results["machine"]
    flags = ", ".join(f for f, on in m["flags"].items() if on)
    print(f"\nCPU: {m['cpu']}, {m['cores']} cores, flags: {flags}; torch {m['torch']}\n")
    print("| data | contestant | minutes | val Dice | IoU | epochs | img/s | plan (mode, network, side) | plan s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for tag, r in results.items():
        if tag == "machine":
            continue
        p = r.get("plan")
        plan = f"{p['mode']}, {p['arch']} {p['base_channels'] or ''}, {p['image_size']}" if p else ""
        sub = f" (subset {r['subset']})" if r.get("subset") else ""
        print(f"| {r['data']}{sub} | {r['contestant']} | "
              f"{r['minutes']:g} | {r['dice']:.4f} | {r['iou']:.4f} | {r['epochs']} | {r['img_per_s']:.1f} | "
              f"{plan} | {r.get('plan_seconds', '')} |")


if __name__ == "__main__":
    main()
