"""Resident memory of `medseg predict` over a folder of many images: flat, or growing with the count?

    .venv/bin/python bench/predict_memory.py --run RUN [--images 10000] [--marks 1000,10000] [--side 600]

Makes a folder of ``--images`` JPEG photos (``--distinct`` different pictures of ``--side`` px, hard-linked
under distinct names), runs ``medseg predict RUN FOLDER --out OUT`` in a child process and samples the
child's resident set size (VmRSS, /proc) and the number of masks written every ``--every`` seconds.
Records the RSS when the masks written first reach each mark (and the peak up to then), and the
child's final peak (ru_maxrss). Flat memory: the RSS at 10,000 images is within a few per cent of the
RSS at 1,000.

Writes bench/results/predict_memory.json and prints a Markdown table for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from PIL import Image

from _subset import machine

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "results" / "predict_memory.json"


def make_folder(folder: Path, n: int, distinct: int, side: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    h, w = int(side * 0.75), side
    yy, xx = np.mgrid[0:h, 0:w]
    sources = []
    for i in range(min(distinct, n)):
        cy, cx, r = rng.uniform(0.3, 0.7) * h, rng.uniform(0.3, 0.7) * w, rng.uniform(0.1, 0.3) * h
        lesion = ((yy - cy) ** 2 + (xx - cx) ** 2) < r**2
        img = rng.normal(190, 12, (h, w, 3))
        img[lesion] -= rng.uniform(60, 110)
        path = folder / f"img_{i:05d}.jpg"
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(path, quality=90)
        sources.append(path)
    for i in range(len(sources), n):
        os.link(sources[i % len(sources)], folder / f"img_{i:05d}.jpg")


def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def count_masks(folder: Path) -> int:
    try:
        return sum(1 for e in os.scandir(folder) if e.name.endswith(".png") and not e.name.startswith("."))
    except FileNotFoundError:
        return 0


def measure(run: Path, images: Path, out: Path, marks: list[int], every: float) -> dict:
    cmd = [sys.executable, "-c", "from medseg.cli import main; main()", "--quiet", "predict", str(run), str(images),
           "--out", str(out)]
    # the child's output goes to a file: a pipe that is read only at the end fills up (progress bars) and
    # blocks the child after a few thousand images
    log = tempfile.TemporaryFile(mode="w+")
    child = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, text=True)
    samples, at_mark, peak = [], {}, 0.0
    t0 = time.time()
    while child.poll() is None:
        rss, done = rss_mb(child.pid), count_masks(out)
        if rss is not None:
            peak = max(peak, rss)
            samples.append((round(time.time() - t0, 1), done, round(rss, 1)))
            for m in marks:
                if m not in at_mark and done >= m:
                    at_mark[m] = {"rss_mb": round(rss, 1), "peak_so_far_mb": round(peak, 1),
                                  "seconds": round(time.time() - t0, 1)}
        time.sleep(every)
    child.wait()
    log.seek(0)
    output = log.read()
    log.close()
    done = count_masks(out)
    return {"returncode": child.returncode, "written": done, "at_mark": {str(k): v for k, v in at_mark.items()},
            "child_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1),
            "seconds": round(time.time() - t0, 1), "samples": samples[:: max(1, len(samples) // 400)],
            "output_tail": output[-1000:]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, required=True, help="run folder or checkpoint to predict with")
    ap.add_argument("--images", type=int, default=10000)
    ap.add_argument("--marks", default="1000,10000", help="image counts at which the RSS is recorded")
    ap.add_argument("--distinct", type=int, default=100, help="different pictures (the rest are hard links)")
    ap.add_argument("--side", type=int, default=600, help="image width in px (height 3/4 of it)")
    ap.add_argument("--every", type=float, default=0.5, help="seconds between RSS samples")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    marks = sorted(int(m) for m in args.marks.split(",") if m)
    with tempfile.TemporaryDirectory(prefix="predict_memory_") as tmp:
        make_folder(Path(tmp) / "in", args.images, args.distinct, args.side)
        result = measure(args.run, Path(tmp) / "in", Path(tmp) / "out", marks, args.every)
    meta = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": machine(),
            "run": str(args.run), "images": args.images, "side": args.side, "distinct": args.distinct}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"meta": meta, **result}, indent=2))
    m = meta["machine"]
    f = m["flags"]
    print(f"\n{meta['date']}, {m['cpu']}, {m['cores']} cores (bf16 {f['avx512_bf16']}, AMX "
          f"{f['amx_bf16'] or f['amx_tile']}, AVX-512 {f['avx512f']}); {args.images} JPEGs of "
          f"{args.side}x{int(args.side * 0.75)} px\n")
    print("| masks written | RSS (MB) | peak so far (MB) | elapsed (s) |")
    print("|---|---|---|---|")
    for mark, r in result["at_mark"].items():
        print(f"| {mark} | {r['rss_mb']:.0f} | {r['peak_so_far_mb']:.0f} | {r['seconds']:.0f} |")
    print(f"\nexit {result['returncode']}, {result['written']} masks, child peak RSS "
          f"{result['child_peak_rss_mb']:.0f} MB, {result['seconds']:.0f} s")
    marks_done = [result["at_mark"][str(k)]["rss_mb"] for k in marks if str(k) in result["at_mark"]]
    if len(marks_done) >= 2:
        print(f"RSS growth from {marks[0]} to {marks[-1]} images: {marks_done[-1] - marks_done[0]:+.0f} MB "
              f"({(marks_done[-1] / marks_done[0] - 1):+.1%})")
    if result["returncode"] != 0:
        print(result["output_tail"])


if __name__ == "__main__":
    main()
