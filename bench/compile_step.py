"""Training step: eager PyTorch vs ``torch.compile``, images/s at equal input size and batch (issue 9).

    .venv/bin/python bench/compile_step.py                   # eager vs torch.compile: at most 8 minutes
    .venv/bin/python bench/compile_step.py --modes eager max-autotune-no-cudagraphs \
        --cases monai_unet32@128 dynunet32@128 --out bench/results/compile_step_autotune.json   # ~5 minutes
    .venv/bin/python bench/compile_step.py --steps 2 --warmup 0 --cases monai_unet32@128   # a quick check

Cases (``NET@SIZE``): today's default (SMP U-Net ResNet-34, letterbox 256, from scratch) and the plan's
from-scratch networks (``monai_unet32``, ``dynunet32`` from ``medseg.plan.catalogue``) on 256 px inputs
(letterbox; the default at 256 only, as it trains) and 128 px patches, all at the same batch (8) with
Dice + BCE and AdamW, stepped as ``medseg train`` steps: bf16 autocast + channels_last where the CPU
has native bf16 (``engine.runtime``), fp32 otherwise.

Modes: ``eager``; ``default`` = ``torch.compile(model)``; ``max-autotune-no-cudagraphs`` =
``torch.compile(model, mode=...)`` (longer to compile: only when asked). Each (case, mode) runs in its
own process with ``--compile-timeout`` seconds for its first step, so a crash or a compilation that
takes too long is recorded, not fatal; nothing starts after ``--time-limit`` seconds (7.5 minutes).
From one seed and one synthetic batch, each process reports:

- ``first_step_s``: the first step (compilation included); ``compile_s`` = that minus a warm eager step
- ``steps_per_s`` / ``img_per_s``: ``--steps`` timed steps after ``--warmup`` untimed ones
- ``loss_max_abs_diff``: largest |loss - eager loss| over the first ``--loss-steps`` steps (same
  weights and data: the compiled graph's numerical drift)

Records the CPU model and flags (bf16, AMX, AVX-512), prints a Markdown table and writes
bench/results/compile_step.json (``--out``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _subset import env, machine  # noqa: E402

OUT = Path(__file__).resolve().parent / "results" / "compile_step.json"
CASES = ("default@256", "monai_unet32@256", "dynunet32@256", "monai_unet32@128", "dynunet32@128")
MODES = ("eager", "default", "max-autotune-no-cudagraphs")


def model_section(net: str) -> dict:
    """The ``model`` config of a case's network: the default preset's, or a plan catalogue entry."""
    if net == "default":
        return {"encoder_weights": None}
    from medseg.plan.catalogue import CATALOGUE

    return dict(CATALOGUE[net].model)


def measure(case: str, mode: str, steps: int, warmup: int, loss_steps: int, batch: int) -> dict:
    """One (case, mode) in this process: the figures listed in the module docstring."""
    import numpy as np
    import torch

    from medseg.config import build_config
    from medseg.data.transforms import normalize_batch
    from medseg.engine.runtime import resolve_runtime
    from medseg.losses import build_loss
    from medseg.models import create_model

    net_name, size = case.split("@")
    size = int(size)
    cfg = build_config(overrides={"model": model_section(net_name), "data": {"image_size": size},
                                  "loss": {"name": "dice_bce"}})
    torch.manual_seed(0)
    model = create_model(cfg.model, load_weights=False)
    rt = resolve_runtime("auto", "auto")
    model.to(rt.device, memory_format=rt.memory_format()).train()
    criterion = build_loss(cfg.loss)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
    rng = np.random.default_rng(0)
    images = torch.from_numpy(rng.integers(0, 256, (batch, 3, size, size), dtype=np.uint8))
    yy, xx = np.mgrid[:size, :size]
    masks = np.stack([((yy - size / 2 + 9 * i) ** 2 + (xx - size / 2) ** 2 < (size / 4) ** 2) for i in range(batch)])
    x = normalize_batch(images, *cfg.data.mean_std).to(rt.device, memory_format=rt.memory_format())
    y = torch.from_numpy(masks[:, None].astype(np.float32)).to(rt.device)
    net = model if mode == "eager" else torch.compile(model, **({} if mode == "default" else {"mode": mode}))

    def step() -> float:
        optimizer.zero_grad(set_to_none=True)
        with rt.autocast():
            out = net(x)
        loss = criterion(out, y)
        loss.backward()
        optimizer.step()
        return float(loss.item())

    t0 = time.monotonic()
    losses = [step()]
    first = time.monotonic() - t0
    losses += [step() for _ in range(loss_steps - 1)]
    for _ in range(warmup):
        step()
    t0 = time.monotonic()
    for _ in range(steps):
        step()
    timed = time.monotonic() - t0
    params = sum(p.numel() for p in model.parameters()) / 1e6
    return {"case": case, "mode": mode, "batch": batch, "size": size, "params_m": round(params, 2),
            "runtime": rt.describe(), "first_step_s": first, "steps_per_s": steps / timed,
            "img_per_s": steps * batch / timed, "losses": losses, "crashed": False}


def run_isolated(case: str, mode: str, args, seconds_left: float) -> dict:
    """:func:`measure` in a child process (crash and timeout isolation), within ``seconds_left``."""
    cmd = [sys.executable, __file__, "--child", case, mode, "--steps", str(args.steps), "--warmup", str(args.warmup),
           "--loss-steps", str(args.loss_steps), "--batch", str(args.batch)]
    allowed = args.compile_timeout + 60 + 10 * (args.steps + args.warmup + args.loss_steps)
    timeout = min(allowed, seconds_left)
    if timeout < 20:
        return {"case": case, "mode": mode, "crashed": False, "error": "not run: --time-limit reached"}
    try:
        proc = subprocess.run(cmd, env=env(), capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        why = "stopped at --time-limit" if timeout < allowed else "timed out"
        return {"case": case, "mode": mode, "crashed": False, "error": f"{why} after {timeout:.0f} s"}
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or [f"exit code {proc.returncode}"]
        return {"case": case, "mode": mode, "crashed": True, "error": tail[0][:300]}
    return json.loads(lines[-1])


def table(rows: list[dict]) -> str:
    eager = {r["case"]: r for r in rows if r["mode"] == "eager" and "img_per_s" in r}
    out = ["| case | mode | runtime | compile s | img/s | vs eager | max abs loss diff | crashed |",
           "|---|---|---|---:|---:|---:|---:|---|"]
    for r in rows:
        e = eager.get(r["case"])
        if "img_per_s" not in r:
            out.append(f"| {r['case']} | {r['mode']} | | | | | | {'yes' if r['crashed'] else 'no'}: {r['error']} |")
            continue
        speed = f"{r['img_per_s'] / e['img_per_s']:.2f}x" if e else ""
        diff = f"{r['loss_max_abs_diff']:.2e}" if r.get("loss_max_abs_diff") is not None else ""
        compile_s = f"{r['compile_s']:.1f}" if "compile_s" in r else ""
        out.append(f"| {r['case']} | {r['mode']} | {r['runtime']} | {compile_s} | "
                   f"{r['img_per_s']:.2f} | {speed} | {diff} | no |")
    return "\n".join(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cases", nargs="+", default=list(CASES), help="NET@SIZE (NET: default or a plan network)")
    p.add_argument("--modes", nargs="+", default=["eager", "default"], choices=MODES)
    p.add_argument("--steps", type=int, default=6, help="timed steps after the warm-up")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps after the loss steps")
    p.add_argument("--loss-steps", type=int, default=3, help="first steps whose losses are compared with eager")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--compile-timeout", type=int, default=200, help="seconds allowed for a first (compiling) step")
    p.add_argument("--out", type=Path, default=OUT, help="JSON results file")
    p.add_argument("--time-limit", type=float, default=450, help="seconds for the whole script: what would "
                   "start later is recorded as not run")
    p.add_argument("--child", nargs=2, metavar=("CASE", "MODE"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(measure(*args.child, args.steps, args.warmup, args.loss_steps, args.batch)))
        return
    t0 = time.monotonic()
    rows = []
    for case in args.cases:
        for mode in ["eager"] + [m for m in args.modes if m != "eager"]:  # eager first: the reference
            r = run_isolated(case, mode, args, args.time_limit - (time.monotonic() - t0))
            ref = next((e for e in rows if e["case"] == case and e["mode"] == "eager" and "losses" in e), None)
            if "losses" in r and ref is not None and r is not ref and mode != "eager":
                r["loss_max_abs_diff"] = max(abs(a - b) for a, b in zip(r["losses"], ref["losses"], strict=True))
                r["compile_s"] = max(0.0, r["first_step_s"] - 1 / ref["steps_per_s"])
            print(f"{case} {mode}: {r.get('img_per_s', float('nan')):.2f} img/s {r.get('error', '')}", flush=True)
            rows.append(r)
    settings = {k: str(v) if k == "out" else v for k, v in vars(args).items() if k != "child"}
    result = {"machine": machine(), "settings": settings,
              "seconds": time.monotonic() - t0, "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    m = result["machine"]
    flags = ", ".join(f for f, on in m["flags"].items() if on)
    print(f"\n{m['cpu']} ({m['cores']} cores; {flags}; torch {m['torch']}); {result['seconds']:.0f} s\n")
    print(table(rows))
    print(f"\nwritten to {args.out}")


if __name__ == "__main__":
    main()
