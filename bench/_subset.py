"""Helpers shared by the distributed and crash benchmarks: the machine's CPU and a small real-data subset."""

from __future__ import annotations

import csv
import os
import platform
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
ISIC = ROOT.parent / "shared" / "data" / "isic2018_256"


def machine() -> dict:
    """CPU model, cores and the flags that decide CPU training speed (bf16, AMX, AVX-512)."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    wanted = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")
    return {"cpu": model, "cores": len(os.sched_getaffinity(0)), "torch": torch.__version__,
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "flags": {f: f in flags for f in wanted}}


def manifest(out: Path, n_train: int, n_val: int, data: Path = ISIC) -> Path:
    """A manifest.csv of the first ``n_train`` + ``n_val`` ISIC pairs (absolute paths, split column)."""
    images = sorted((data / "images").glob("*.jpg"))[: n_train + n_val]
    if len(images) < n_train + n_val:
        raise SystemExit(f"{data} holds {len(images)} images; need {n_train + n_val}")
    out.mkdir(parents=True, exist_ok=True)
    path = out / "manifest.csv"
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image", "mask", "split"])
        for i, img in enumerate(images):
            mask = data / "masks" / f"{img.stem}_segmentation.png"
            w.writerow([img, mask, "train" if i < n_train else "val"])
    return path


def env(threads: int | None = None) -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    e["PYTHONPATH"] = str(ROOT / "src") + os.pathsep + e.get("PYTHONPATH", "")
    e["NO_ALBUMENTATIONS_UPDATE"] = "1"
    if threads:
        e["OMP_NUM_THREADS"] = str(threads)
    return e
