"""The four tutorial presets on real data under one fixed CPU budget each (issue 3).

    .venv/bin/python bench/presets_real_data.py --minutes 10 [--only NAME ...]

Runs (name: preset on data):
  isic-unet, isic-deeplabv3 on ../shared/data/isic2018_256 (its train/val split);
  dicom-vgg16-unet, dicom-pspnet on ../shared/data/isbi2012_membrane (membranes are 0 there: classes
  are background/membrane after inversion) and on ../shared/data/drive_train (vessels; seeded split);
  deeplab-attention-edge: the DeepLab tutorial's claim (attention + an edge auxiliary task) as
  deeplabv3plus + CBAM + edge head, same budget as isic-deeplabv3, with deeplabv3plus-plain (no
  attention, no edge head) to separate the architecture from the two additions;
  isic-deeplabv3-lr1e-3: the DeepLab preset with the default pipeline's learning rate (from scratch);
  default on each data set as the reference at equal budget.
Every run starts from scratch (no pretrained weights can be downloaded here). Writes
bench/results/presets_real_data.json and prints a Markdown table (Dice, IoU, params, GFLOPs, img/s).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import time
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from medseg.config import build_config  # noqa: E402
from medseg.engine.train import train  # noqa: E402
from medseg.evaluation import evaluate  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
OUT = ROOT / "bench" / "results" / "presets"

ISBI = ["data.invert_masks=true", "data.image_size=512"]  # membranes (0 in the files) are the foreground;
# both grey sets train at 512 px: their structures are 1-3 px wide and halving the size erases them
RUNS = {
    "isic-unet": ("isic-unet", "isic2018_256", []),
    "isic-deeplabv3": ("isic-deeplabv3", "isic2018_256", ["data.image_size=256"]),
    "deeplab-attention-edge": ("isic-deeplabv3", "isic2018_256",
                               ["data.image_size=256", "model.arch=deeplabv3plus", "model.attention=cbam",
                                "model.edge_head=true"]),
    "deeplabv3plus-plain": ("isic-deeplabv3", "isic2018_256", ["data.image_size=256", "model.arch=deeplabv3plus"]),
    "isic-deeplabv3-lr1e-3": ("isic-deeplabv3", "isic2018_256", ["data.image_size=256", "optim.lr=1e-3"]),
    "default-isic": ("default", "isic2018_256", []),
    "dicom-vgg16-unet-isbi": ("dicom-vgg16-unet", "isbi2012_membrane", []),
    "dicom-pspnet-isbi": ("dicom-pspnet", "isbi2012_membrane", []),
    "default-isbi": ("default", "isbi2012_membrane", []),
    "dicom-vgg16-unet-drive": ("dicom-vgg16-unet", "drive_train", ["data.image_size=512"]),
    "dicom-pspnet-drive": ("dicom-pspnet", "drive_train", ["data.image_size=512"]),
    "default-drive": ("default", "drive_train", ["data.image_size=512"]),
}


def run_one(name: str, minutes: float) -> dict:
    preset, data, extra = RUNS[name]
    over = ["model.encoder_weights=none", f"train.time_budget_min={minutes}"] + extra
    if data == "isbi2012_membrane":
        over += ISBI
    run = OUT / name
    t0 = time.monotonic()
    train(DATA / data, run, config=preset, overrides=over, overwrite=True, progress=False)
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    images = sum(int(r["train_images"]) for r in rows)
    seconds = sum(float(r["train_seconds"]) for r in rows)
    summary = evaluate(run, DATA / data, split="val", progress=False)
    from medseg.models import create_model
    from medseg.models.summary import model_summary

    cfg = build_config(preset, overrides=over)
    stats = model_summary(create_model(cfg.model, load_weights=False), size=cfg.data.image_size)
    return {"preset": preset, "data": data, "dice": summary["dice"], "iou": summary["iou"],
            "params_m": stats.get("parameters_m"), "gflops": stats.get("gflops"), "img_per_s": images / seconds,
            "epochs": len(rows), "wall_s": time.monotonic() - t0, "image_size": cfg.data.image_size}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--only", nargs="*", choices=sorted(RUNS))
    args = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT.parent / "presets_real_data.json"
    results = json.loads(path.read_text()) if path.is_file() else {}
    for name in args.only or RUNS:
        print(f"== {name} ({args.minutes} min)", flush=True)
        results[name] = run_one(name, args.minutes) | {"minutes": args.minutes, "date": time.strftime("%Y-%m-%d")}
        path.write_text(json.dumps(results, indent=2))
        print(json.dumps(results[name]), flush=True)
    print("| run | preset | data | px | val Dice | IoU | params (M) | GFLOPs | train img/s | epochs |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, r in results.items():
        print(f"| {name} | {r['preset']} | {r['data']} | {r['image_size']} | {r['dice']:.4f} | {r['iou']:.4f} | "
              f"{r['params_m']} | {r['gflops']} | {r['img_per_s']:.1f} | {r['epochs']} |")


if __name__ == "__main__":
    main()
