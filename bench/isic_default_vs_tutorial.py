"""ISIC 2018 (256 px): medseg's default pipeline against the tutorials' plain fp32 eager loop.

Both train the same model (SMP U-Net, ResNet-34 encoder, from scratch: no weights can be downloaded
here) on the train split of ../shared/data/isic2018_256 for the same wall-clock budget, then both are
evaluated by the same Predictor code on the val split at the original size.

    .venv/bin/python bench/isic_default_vs_tutorial.py --minutes 20 [--only medseg|tutorial]

Writes bench/results/isic_default_vs_tutorial.json and prints a Markdown table for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from medseg.config import build_config  # noqa: E402
from medseg.engine.checkpoint import save_checkpoint  # noqa: E402
from medseg.engine.runtime import resolve_runtime  # noqa: E402
from medseg.engine.train import train  # noqa: E402
from medseg.evaluation import evaluate  # noqa: E402
from medseg.inference.predictor import Predictor  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "isic2018_256"
OUT = ROOT / "bench" / "results"


def tutorial_loop(minutes: float, run: Path) -> dict:
    """The loop from the popular tutorials: fp32, eager, contiguous, images decoded every epoch."""
    import albumentations as A
    import segmentation_models_pytorch as smp
    from PIL import Image
    from torch.utils.data import DataLoader, Dataset

    from medseg.data.layouts import find_pairs
    from medseg.losses import DiceBCELoss

    pairs = [p for p in find_pairs(DATA).pairs if p.split == "train"]
    aug = A.Compose([A.HorizontalFlip(), A.VerticalFlip(), A.Normalize()])

    class DS(Dataset):
        def __len__(self):
            return len(pairs)

        def __getitem__(self, i):
            img = np.array(Image.open(pairs[i].image).convert("RGB").resize((256, 256)))
            mask = (np.array(Image.open(pairs[i].mask).convert("L").resize((256, 256))) > 127).astype(np.float32)
            out = aug(image=img, mask=mask)
            return torch.from_numpy(out["image"]).permute(2, 0, 1), torch.from_numpy(out["mask"])[None]

    torch.manual_seed(42)
    model = smp.Unet("resnet34", encoder_weights=None, in_channels=3, classes=1)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    loss_fn = DiceBCELoss()
    loader = DataLoader(DS(), batch_size=16, shuffle=True, drop_last=True)
    t0, seen, epochs, deadline = time.monotonic(), 0, 0, time.monotonic() + minutes * 60
    train_seconds = 0.0
    while time.monotonic() < deadline:
        model.train()
        for x, y in loader:
            s = time.monotonic()
            if s >= deadline:
                break
            loss = loss_fn(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            seen += len(x)
            train_seconds += time.monotonic() - s
        else:
            epochs += 1
            print(f"tutorial epoch {epochs}: {seen / (time.monotonic() - t0):.2f} img/s", flush=True)
            continue
        break
    elapsed = time.monotonic() - t0
    cfg = build_config("default", overrides=["model.encoder_weights=none", "train.precision=fp32"])
    save_checkpoint(run / "best.pt", model, cfg.model_dump(mode="json"))
    return {"img_per_s": seen / train_seconds, "epochs": seen / len(pairs), "seconds": elapsed,
            "images_seen": seen}


def medseg_default(minutes: float, run: Path) -> dict:
    t0 = time.monotonic()
    train(DATA, run, config="default", overrides=[f"train.time_budget_min={minutes}"], overwrite=True,
          progress=False)
    elapsed = time.monotonic() - t0
    import csv

    rows = list(csv.DictReader((run / "metrics.csv").open()))
    seen = sum(int(r["train_images"]) for r in rows)
    train_seconds = sum(float(r["train_seconds"]) for r in rows)
    n_train = sum(1 for line in (run / "splits.csv").open() if line.rstrip().endswith(",train"))
    return {"img_per_s": seen / train_seconds, "epochs": seen / n_train, "seconds": elapsed, "images_seen": seen,
            "best_val_dice_at_model_size": max(float(r["val_dice"]) for r in rows)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--minutes", type=float, default=20.0)
    ap.add_argument("--only", choices=["medseg", "tutorial"])
    args = ap.parse_args()
    if not DATA.is_dir():
        raise SystemExit(f"{DATA} not found")
    OUT.mkdir(parents=True, exist_ok=True)
    results = {}
    for name, fn, precision in (("medseg", medseg_default, "auto"), ("tutorial", tutorial_loop, "fp32")):
        if args.only and args.only != name:
            continue
        run = OUT / f"isic_{name}"
        print(f"== {name}: training for {args.minutes} min", flush=True)
        r = fn(args.minutes, run)
        pred = Predictor.load(run / "best.pt", precision=precision)
        summary = evaluate(run, DATA, split="val", out=run / "eval_val", progress=False, predictor=pred)
        r.update({k: summary[k] for k in ("dice", "iou", "thresholded_jaccard", "failure_rate")})
        r["runtime"] = pred.runtime.describe()
        results[name] = r
        print(json.dumps({name: r}, indent=1), flush=True)
    meta = {"date": time.strftime("%Y-%m-%d"), "machine": f"{platform.processor() or platform.machine()}, "
            f"{os.cpu_count()} cores, torch {torch.__version__}", "minutes": args.minutes,
            "runtime_auto": resolve_runtime().describe()}
    path = OUT / "isic_default_vs_tutorial.json"
    old = json.loads(path.read_text()) if path.is_file() else {}
    old.update(results)
    old["meta"] = meta
    path.write_text(json.dumps(old, indent=2))
    if "medseg" in old and "tutorial" in old:
        m, t = old["medseg"], old["tutorial"]
        print("| pipeline | train img/s | epochs | val Dice | val IoU | thresholded Jaccard |")
        print("|---|---|---|---|---|---|")
        for name, r in (("medseg default (bf16 + channels_last, cached)", m), ("tutorial fp32 eager", t)):
            print(f"| {name} | {r['img_per_s']:.1f} | {r['epochs']:.1f} | {r['dice']:.4f} | {r['iou']:.4f} | "
                  f"{r['thresholded_jaccard']:.4f} |")
        print(f"throughput ratio: {m['img_per_s'] / t['img_per_s']:.2f}x")


if __name__ == "__main__":
    main()
