"""Load test of `medseg serve` on loopback: throughput, p50/p99 latency, peak RSS at 1x and 2x capacity.

For each model (a PyTorch run, an int8 ONNX file) and each micro-batch setting, the script starts
`medseg serve MODEL` on 127.0.0.1, measures its capacity with a short closed loop (as many concurrent
clients as the server can batch), then sends open-loop Poisson-free fixed-rate arrivals at 1x and 2x
that capacity for `--seconds` each, while probing `/livez` every 50 ms and sampling the server's RSS.
At 2x every reply must be 200 or 503 and `/livez` p99 must stay under 100 ms (printed PASS/FAIL).
Loopback only; every loop is bounded in requests and time; the server is stopped with SIGTERM.

    python bench/serve_load.py --run runs/isic20 --onnx isic20_int8.onnx --seconds 30 --micro-batch 1 4

Writes bench/results/serve_load.json and prints a Markdown table (CPU model and flags included).
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import psutil

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "results" / "serve_load.json"
ISIC = ROOT.parent / "shared" / "data" / "isic2018_256"
TOKEN = "serve-load-bench-token"
MAX_OUTSTANDING = 512  # client-side cap on open requests (arrivals beyond it are counted as dropped)


def machine() -> dict:
    info = {"cpu": platform.processor() or platform.machine(), "cores": len(os.sched_getaffinity(0))}
    flags: set[str] = set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    info.update({"avx512f": "avx512f" in flags, "avx512_bf16": "avx512_bf16" in flags,
                 "amx_bf16": "amx_bf16" in flags, "python": platform.python_version()})
    return info


def load_images(n: int) -> list[bytes]:
    """Up to ``n`` ISIC validation JPEGs from ../shared/data, else synthetic 256 px JPEGs."""
    split = ISIC / "split.csv"
    if split.is_file():
        with split.open() as f:
            ids = [r["image_id"] for r in csv.DictReader(f) if r["split"] == "val"][:n]
        files = [ISIC / "images" / f"{i}.jpg" for i in ids]
        if files and all(p.is_file() for p in files):
            return [p.read_bytes() for p in files]
    from io import BytesIO

    from PIL import Image

    rng = np.random.default_rng(0)
    out = []
    for _ in range(n):
        buf = BytesIO()
        Image.fromarray(rng.integers(0, 255, (256, 256, 3), dtype=np.uint8)).save(buf, format="JPEG")
        out.append(buf.getvalue())
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pct(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


class Server:
    """`medseg serve MODEL` in a subprocess on a free loopback port."""

    def __init__(self, model: str, micro_batch: int, workers: int, max_queue: int, token_file: Path, log: Path):
        self.port = free_port()
        cmd = [sys.executable, "-c", "from medseg.cli import main; main()", "serve", model, "--host", "127.0.0.1",
               "--port", str(self.port), "--token-file", str(token_file), "--workers", str(workers),
               "--max-queue", str(max_queue), "--micro-batch", str(micro_batch)]
        self.proc = subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT)
        self.url = f"http://127.0.0.1:{self.port}"

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("medseg serve exited during start-up")
            try:
                if httpx.get(self.url + "/readyz", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.25)
        raise RuntimeError("medseg serve did not become ready")

    def rss(self) -> int:
        try:
            p = psutil.Process(self.proc.pid)
            return p.memory_info().rss + sum(c.memory_info().rss for c in p.children(recursive=True))
        except psutil.Error:
            return 0

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()


async def closed_loop(url: str, images: list[bytes], concurrency: int, requests: int, seconds: float) -> float:
    """Completed requests per second with ``concurrency`` clients, at most ``requests`` or ``seconds``."""
    headers = {"Authorization": f"Bearer {TOKEN}"}
    done = 0
    deadline = time.perf_counter() + seconds
    async with httpx.AsyncClient(base_url=url, timeout=120) as client:
        async def worker(k: int) -> None:
            nonlocal done
            i = k
            while done < requests and time.perf_counter() < deadline:
                r = await client.post("/v1/segment", content=images[i % len(images)], headers=headers)
                r.raise_for_status()
                done += 1
                i += concurrency

        t0 = time.perf_counter()
        await asyncio.gather(*(worker(k) for k in range(concurrency)))
        return done / (time.perf_counter() - t0)


async def open_loop(server: Server, images: list[bytes], rate: float, seconds: float, max_requests: int) -> dict:
    """Fixed-rate arrivals for ``seconds`` (at most ``max_requests``); /livez probes and RSS samples meanwhile."""
    headers = {"Authorization": f"Bearer {TOKEN}"}
    n = max(1, min(max_requests, int(rate * seconds)))
    statuses: dict[str, int] = {}
    latencies: list[float] = []
    livez: list[float] = []
    peak = [server.rss()]
    stop = asyncio.Event()
    limits = httpx.Limits(max_connections=MAX_OUTSTANDING + 8, max_keepalive_connections=64)
    async with httpx.AsyncClient(base_url=server.url, timeout=120, limits=limits) as client, \
            httpx.AsyncClient(base_url=server.url, timeout=10) as probe:
        outstanding = 0

        async def one(i: int) -> None:
            nonlocal outstanding
            t0 = time.perf_counter()
            try:
                r = await client.post("/v1/segment", content=images[i % len(images)], headers=headers)
                key = str(r.status_code)
                if r.status_code == 200:
                    latencies.append(time.perf_counter() - t0)
            except httpx.HTTPError as err:
                key = type(err).__name__
            statuses[key] = statuses.get(key, 0) + 1
            outstanding -= 1

        async def probes() -> None:
            while not stop.is_set():
                t0 = time.perf_counter()
                try:
                    await probe.get("/livez")
                    livez.append(time.perf_counter() - t0)
                except httpx.HTTPError:
                    livez.append(10.0)
                peak[0] = max(peak[0], server.rss())
                await asyncio.sleep(0.05)

        prober = asyncio.create_task(probes())
        tasks = []
        t0 = time.perf_counter()
        for i in range(n):
            delay = t0 + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            if outstanding >= MAX_OUTSTANDING:
                statuses["client-dropped"] = statuses.get("client-dropped", 0) + 1
                continue
            outstanding += 1
            tasks.append(asyncio.create_task(one(i)))
        await asyncio.wait_for(asyncio.gather(*tasks), timeout=max(60.0, 4 * seconds))
        elapsed = time.perf_counter() - t0
        stop.set()
        await prober
    ok = statuses.get("200", 0)
    return {"offered_rps": rate, "requests": n, "seconds": elapsed, "statuses": statuses,
            "throughput_rps": ok / elapsed, "p50_ms": _ms(pct(latencies, 50)), "p99_ms": _ms(pct(latencies, 99)),
            "livez_p50_ms": _ms(pct(livez, 50)), "livez_p99_ms": _ms(pct(livez, 99)),
            "peak_rss_mb": peak[0] / 2**20,
            "only_200_or_503": set(statuses) <= {"200", "503"}}


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000


def bench_one(model: str, micro_batch: int, args, images: list[bytes], tmp: Path, deadline: float) -> dict:
    token_file = tmp / "token"
    server = Server(model, micro_batch, args.workers, args.max_queue, token_file, tmp / f"serve_{micro_batch}.log")
    try:
        server.wait_ready(min(300.0, max(10.0, deadline - time.monotonic())))
        concurrency = max(1, args.workers * micro_batch)
        asyncio.run(closed_loop(server.url, images, concurrency, 3, 60))  # warm-up
        capacity = asyncio.run(closed_loop(server.url, images, concurrency, args.calibration_requests,
                                           args.seconds))
        result = {"model": model, "micro_batch": micro_batch, "workers": args.workers, "max_queue": args.max_queue,
                  "capacity_rps": capacity, "idle_rss_mb": server.rss() / 2**20, "loads": {}}
        for factor in (1, 2):
            if time.monotonic() > deadline:
                result["loads"][f"{factor}x"] = {"skipped": "time limit"}
                continue
            result["loads"][f"{factor}x"] = asyncio.run(open_loop(server, images, factor * capacity, args.seconds,
                                                                  args.max_requests))
        two = result["loads"].get("2x", {})
        result["pass_2x"] = bool(two.get("only_200_or_503")) and (two.get("livez_p99_ms") or 1e9) < 100
        return result
    finally:
        server.stop()


def print_table(results: list[dict], meta: dict) -> None:
    m = meta["machine"]
    print(f"\n{m['cpu']}, {m['cores']} cores, AVX-512 {m['avx512f']}, AVX512-BF16 {m['avx512_bf16']}, "
          f"AMX-BF16 {m['amx_bf16']}; {meta['date']}\n")
    print("| model | micro-batch | capacity req/s | load | throughput req/s | p50 ms | p99 ms | 200 / 503 / other "
          "| /livez p99 ms | peak RSS MB |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        for name, load in r["loads"].items():
            if "skipped" in load:
                continue
            s = load["statuses"]
            other = sum(v for k, v in s.items() if k not in ("200", "503"))
            print(f"| {Path(r['model']).name} | {r['micro_batch']} | {r['capacity_rps']:.2f} | {name} | "
                  f"{load['throughput_rps']:.2f} | {load['p50_ms'] or 0:.0f} | {load['p99_ms'] or 0:.0f} | "
                  f"{s.get('200', 0)} / {s.get('503', 0)} / {other} | {load['livez_p99_ms']:.1f} | "
                  f"{load['peak_rss_mb']:.0f} |")
    for r in results:
        print(f"{Path(r['model']).name} micro-batch {r['micro_batch']}: 2x check "
              f"{'PASS' if r['pass_2x'] else 'FAIL'} (every reply 200 or 503, /livez p99 < 100 ms)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", help="PyTorch model: run folder or checkpoint")
    ap.add_argument("--onnx", help="exported .onnx model (e.g. int8, from `medseg export --int8`)")
    ap.add_argument("--seconds", type=float, default=30, help="duration of each load phase")
    ap.add_argument("--max-requests", type=int, default=5000, help="cap on requests per load phase")
    ap.add_argument("--calibration-requests", type=int, default=40, help="requests of the capacity measurement")
    ap.add_argument("--micro-batch", type=int, nargs="+", default=[1, 4], help="micro-batch settings to compare")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--max-queue", type=int, default=16)
    ap.add_argument("--images", type=int, default=50, help="distinct images sent in turn")
    ap.add_argument("--time-limit", type=float, default=1800, help="stop starting new phases after this (s)")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    models = [m for m in (args.run, args.onnx) if m]
    if not models:
        ap.error("give --run and/or --onnx")
    deadline = time.monotonic() + args.time_limit
    images = load_images(args.images)
    results = []
    with tempfile.TemporaryDirectory(prefix="serve-load-") as tmp:
        tmp = Path(tmp)
        (tmp / "token").write_text(TOKEN + "\n")
        (tmp / "token").chmod(0o600)
        for model in models:
            for mb in args.micro_batch:
                if time.monotonic() > deadline:
                    break
                print(f"{model}: micro-batch {mb} ...", flush=True)
                results.append(bench_one(model, mb, args, images, tmp, deadline))
    meta = {"machine": machine(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "command": " ".join(sys.argv), "images": len(images)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"meta": meta, "results": results}, indent=2))
    print_table(results, meta)
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
