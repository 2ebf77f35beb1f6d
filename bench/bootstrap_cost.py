"""How long the evaluation statistics take: bootstrap intervals of every summary figure, pooled pixel
AUC / AP / ECE intervals, and surface metrics per image, at dataset sizes from ISIC val to large.

    python bench/bootstrap_cost.py                      # n = 400, 2594, 10000 images; 2000 resamples
    python bench/bootstrap_cost.py --sizes 50 --resamples 200   # a quick check

Synthetic per-image values (the cost does not depend on them). Prints a Markdown table; writes
bench/results/bootstrap_cost.json with the CPU model and flags.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from _subset import machine
from medseg.evaluation.pixel_scores import BINS, pooled_scores
from medseg.evaluation.stats import bootstrap_means
from medseg.evaluation.surface import surface_metrics


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[400, 2594, 10000])
    ap.add_argument("--resamples", type=int, default=2000)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    results = []
    for n in args.sizes:
        columns = {f"m{i}": rng.random(n) for i in range(17)}
        t0 = time.perf_counter()
        bootstrap_means(columns, n_resamples=args.resamples)
        t_means = time.perf_counter() - t0
        hists = rng.integers(0, 50, size=(n, 2, BINS))
        t0 = time.perf_counter()
        pooled_scores(hists, n_resamples=args.resamples)
        t_pixel = time.perf_counter() - t0
        a = np.zeros((256, 256), bool)
        a[60:180, 50:200] = True
        b = np.roll(a, 7, axis=1)
        t0 = time.perf_counter()
        for _ in range(20):
            surface_metrics(a, b, spacing=(0.5, 0.7))
        t_surface = (time.perf_counter() - t0) / 20
        results.append({"images": n, "resamples": args.resamples, "means_17_figures_s": t_means,
                        "pixel_auc_ap_ece_s": t_pixel, "surface_per_256px_image_ms": 1000 * t_surface})
    info = {"cpu": machine(), "results": results}
    flags = [name for name, present in info["cpu"]["flags"].items() if present and name != "avx2"]
    print(f"CPU: {info['cpu']['cpu']} ({', '.join(flags) or 'no AVX-512/AMX'})\n")
    print("| images | resamples | 17 per-image means (s) | pixel AUC+AP+ECE (s) "
          "| surface metrics / 256 px image (ms) |")
    print("|---:|---:|---:|---:|---:|")
    for r in results:
        print(f"| {r['images']} | {r['resamples']} | {r['means_17_figures_s']:.2f} | {r['pixel_auc_ap_ece_s']:.2f} | "
              f"{r['surface_per_256px_image_ms']:.1f} |")
    out = Path(__file__).parent / "results" / "bootstrap_cost.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(info, indent=2) + "\n")


if __name__ == "__main__":
    main()
