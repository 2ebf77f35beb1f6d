"""Inference speed and accuracy of one trained run on four paths, side by side, in one process.

    .venv/bin/python bench/inference_speed.py [--run bench/results/isic_medseg] [--data ../shared/data/isic2018_256]

Paths: PyTorch eager fp32; PyTorch eager bf16 + channels_last; ONNX Runtime fp32; ONNX Runtime int8
(both ONNX files made by `medseg export`, with its parity check and int8 Dice guard). Each path is
measured in a fresh process (as it would be deployed), one after the other:

- latency per image (batch 1) and throughput (batch 8) at 256 and 512 px: the backend call on a
  letterboxed uint8 batch (normalisation, network and sigmoid included), median of repeated runs
  after warm-up;
- validation Dice on the val split through the one Predictor (`medseg.evaluate`, original size),
  and the end-to-end images/s of that evaluation (reading, letterbox, post-processing included).

Writes bench/results/inference_speed.json and prints a Markdown table for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import statistics
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from medseg.engine.runtime import set_threads  # noqa: E402
from medseg.evaluation import evaluate  # noqa: E402
from medseg.export import export_onnx  # noqa: E402
from medseg.inference.predictor import Predictor  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "isic2018_256"
RUN = ROOT / "bench" / "results" / "isic_medseg"
OUT = ROOT / "bench" / "results" / "inference_speed.json"


def timed(fn, batch: np.ndarray, repeats: int, warmup: int = 2) -> float:
    """Median seconds of ``fn(batch)`` over ``repeats`` calls after ``warmup`` calls (0 when no repeats)."""
    for _ in range(warmup):
        fn(batch)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn(batch)
        times.append(time.perf_counter() - t0)
    return statistics.median(times) if times else 0.0


def speed(backend, sizes: list[int], repeats: int) -> dict[str, float]:
    rng = np.random.default_rng(0)
    out = {}
    for size in sizes:
        reps = max(3, repeats * 256 * 256 // (size * size))
        one = rng.integers(0, 255, (1, size, size, 3), dtype=np.uint8)
        eight = rng.integers(0, 255, (8, size, size, 3), dtype=np.uint8)
        timed(backend, eight, 0, warmup=2)  # steady state: allocator and kernel caches warm for both sizes
        out[f"latency_ms_{size}"] = 1000 * timed(backend, one, reps, warmup=5)
        out[f"throughput_{size}"] = 8 / timed(backend, eight, max(3, reps // 4))
    return out


def measure(source: str, kwargs: dict, run: str, data: str, sizes: list[int], repeats: int, skip_dice: bool,
            eval_dir: str) -> dict:
    """Speed (and validation Dice) of one path; runs in its own process."""
    set_threads(None)
    pred = Predictor.load(source, **kwargs)
    r = {"backend": pred.backend.describe()}
    r.update(speed(pred.backend, sizes, repeats))
    if not skip_dice:
        t0 = time.monotonic()
        summary = evaluate(run, data, split="val", out=eval_dir, progress=False, predictor=pred)
        r.update(dice=summary["dice"], iou=summary["iou"], n_val=summary["n_images"],
                 eval_img_per_s=summary["n_images"] / (time.monotonic() - t0))
    return r


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--run", type=Path, default=RUN)
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    ap.add_argument("--repeats", type=int, default=30, help="batch-1 repeats at 256 px (fewer at larger sizes)")
    ap.add_argument("--skip-dice", action="store_true", help="timings only")
    args = ap.parse_args()
    set_threads(None)
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="medseg-bench-") as tmp:
        tmp = Path(tmp)
        exports = {}
        for name, int8 in (("onnx_fp32", False), ("onnx_int8", True)):
            t0 = time.monotonic()
            report = export_onnx(args.run, tmp / f"{name}.onnx", int8=int8, data=args.data)
            exports[name] = report.to_dict() | {"export_seconds": time.monotonic() - t0}
            print(f"exported {name} in {time.monotonic() - t0:.0f} s: parity {report.parity}", flush=True)
        paths = {
            "torch_fp32": (str(args.run), {"precision": "fp32", "channels_last": "off"}),
            "torch_bf16_cl": (str(args.run), {"precision": "bf16", "channels_last": "on"}),
            "onnx_fp32": (str(tmp / "onnx_fp32.onnx"), {}),
            "onnx_int8": (str(tmp / "onnx_int8.onnx"), {}),
        }
        spawn = multiprocessing.get_context("spawn")  # each path in a fresh process, as it would be deployed
        for name, (source, kwargs) in paths.items():
            with ProcessPoolExecutor(max_workers=1, mp_context=spawn) as pool:
                r = pool.submit(measure, source, kwargs, str(args.run), str(args.data), args.sizes, args.repeats,
                                args.skip_dice, str(tmp / f"eval_{name}")).result()
            results[name] = r
            print(json.dumps({name: r}), flush=True)
    base = results["torch_fp32"]
    for r in results.values():
        for size in args.sizes:
            r[f"speedup_latency_{size}"] = base[f"latency_ms_{size}"] / r[f"latency_ms_{size}"]
            r[f"speedup_throughput_{size}"] = r[f"throughput_{size}"] / base[f"throughput_{size}"]
    meta = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine": machine(),
            "run": str(args.run), "data": str(args.data), "torch": torch.__version__}
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps({"meta": meta, "results": results, "exports": exports}, indent=2))
    print_table(results, args.sizes, meta, exports)


def machine() -> str:
    import onnxruntime

    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"{model}, {len(os.sched_getaffinity(0))} cores, torch {torch.__version__}, "
            f"onnxruntime {onnxruntime.__version__}")


def print_table(results: dict, sizes: list[int], meta: dict, exports: dict) -> None:
    names = {"torch_fp32": "PyTorch eager fp32", "torch_bf16_cl": "PyTorch eager bf16 + channels_last",
             "onnx_fp32": "ONNX Runtime fp32", "onnx_int8": "ONNX Runtime int8 (static, QDQ)"}
    head = ["path"] + [f"{s} px: ms/img (b1)" for s in sizes] + [f"{s} px: img/s (b8)" for s in sizes]
    head += ["val Dice", "end-to-end img/s"]
    print(f"\n{meta['date']}, {meta['machine']}\n")
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for key, r in results.items():
        cells = [names[key]]
        cells += [f"{r[f'latency_ms_{s}']:.1f} ({r[f'speedup_latency_{s}']:.2f}x)" for s in sizes]
        cells += [f"{r[f'throughput_{s}']:.1f} ({r[f'speedup_throughput_{s}']:.2f}x)" for s in sizes]
        cells += [f"{r['dice']:.4f}" if "dice" in r else "-", f"{r['eval_img_per_s']:.1f}" if "dice" in r else "-"]
        print("| " + " | ".join(cells) + " |")
    for name, e in exports.items():
        p = e["parity"]
        line = (f"\n{name}: exported in {e['export_seconds']:.0f} s; vs PyTorch fp32 on {p['n_images']} val images: "
                f"max |diff| {p['max_abs_diff']:.2e}, mask agreement {p['mask_agreement']:.5%}")
        if e.get("int8"):
            q = e["int8"]
            line += (f"; int8 guard: Dice {q['dice_int8']:.4f} vs {q['dice_float']:.4f} float (drop "
                     f"{q['dice_drop']:.4f}, limit {q['max_drop']}), int8 mask agreement with PyTorch "
                     f"{q['parity_vs_pytorch']['mask_agreement']:.4%}")
        print(line)


if __name__ == "__main__":
    main()
