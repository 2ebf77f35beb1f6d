"""Throughput and latency of ``medseg dicom-listen``: synthetic CT series in, DICOM SEGs out, loopback.

    .venv/bin/python bench/dicom_node_throughput.py MODEL [--series 20] [--slices 16] [--size 256]
        [--senders 2] [--idle-seconds 1]

A node (subprocess, as deployed) receives ``--series`` synthetic CT series of ``--slices`` slices
(``--size`` px, uncompressed) from ``--senders`` concurrent pynetdicom SCUs, one association per
series, and forwards each SEG to an in-process Storage SCP. Measured: series per minute and slices
per second over the whole run; per series the latency from association release to SEG arrival
(p50/p99; it includes ``--idle-seconds``, also shown subtracted); the node's peak RSS (VmHWM).
Bounded: gives up after ``--timeout`` seconds. Records the CPU model and flags (bf16, AMX, AVX-512),
prints a Markdown table and writes bench/results/dicom_node.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "results" / "dicom_node.json"
SEG = "1.2.840.10008.5.1.4.1.1.66.4"
sys.path.insert(0, str(ROOT))  # the node is started and stopped as the DICOM network tests do it
from tests._dicom_net import HOST, free_port, process  # noqa: E402
from tests._paths import child_env  # noqa: E402


def cpu() -> dict:
    info = {"model": platform.processor() or platform.machine(), "flags": []}
    try:
        text = Path("/proc/cpuinfo").read_text()
        for line in text.splitlines():
            if line.startswith("model name"):
                info["model"] = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                info["flags"] = sorted(flags & {"avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "avx2"})
                break
    except OSError:
        pass
    info["cores"] = len(os.sched_getaffinity(0))
    return info


def ct_series(n: int, size: int, rng) -> list[Dataset]:
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    out = []
    for i in range(n):
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.PatientName, ds.PatientID, ds.StudyInstanceUID, ds.SeriesInstanceUID = "BENCH^X", "B1", study, series
        ds.StudyDate, ds.StudyTime, ds.StudyID, ds.AccessionNumber = "20240101", "120000", "1", ""
        ds.ReferringPhysicianName, ds.PatientBirthDate, ds.PatientSex = "", "", ""
        ds.Modality, ds.SeriesNumber, ds.InstanceNumber, ds.Manufacturer = "CT", 1, i + 1, "bench"
        ds.FrameOfReferenceUID, ds.PositionReferenceIndicator = frame, ""
        ds.ImagePositionPatient, ds.ImageOrientationPatient = [0, 0, 2.5 * i], [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing, ds.SliceThickness, ds.ImageType = [0.7, 0.7], 2.5, ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.RescaleSlope, ds.RescaleIntercept, ds.WindowCenter, ds.WindowWidth = 1, -1024, 40, 400
        ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.Rows, ds.Columns = 1, "MONOCHROME2", size, size
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        hu = rng.normal(0, 80, (size, size))
        yy, xx = np.mgrid[:size, :size]
        hu[(yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (size / 5) ** 2] += 300
        ds.PixelData = (hu + 1024).astype("<i2").tobytes()
        out.append(ds)
    return out


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    from pynetdicom import AE, evt

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model")
    p.add_argument("--series", type=int, default=20)
    p.add_argument("--slices", type=int, default=16)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--senders", type=int, default=2)
    p.add_argument("--idle-seconds", type=float, default=1.0)
    p.add_argument("--timeout", type=float, default=1800)
    args = p.parse_args()

    rng = np.random.default_rng(0)
    series = [ct_series(args.slices, args.size, rng) for _ in range(args.series)]
    arrived: dict[str, float] = {}
    lock = threading.Lock()

    def on_seg(event):
        ds = event.dataset
        with lock:
            arrived.setdefault(str(ds.StudyInstanceUID), time.monotonic())
        return 0

    dest_port, node_port = free_port(), free_port()
    dest = AE(ae_title="BENCHDEST")
    dest.add_supported_context(SEG, ExplicitVRLittleEndian)
    server = dest.start_server((HOST, dest_port), block=False, evt_handlers=[(evt.EVT_C_STORE, on_seg)])
    tmp = Path(tempfile.mkdtemp(prefix="medseg-bench-"))
    released: dict[str, float] = {}
    # the node's output goes to a log; the process is terminated (then killed) however the run ends
    node_args = [sys.executable, "-c", "from medseg.cli import main; main()", "--quiet", "dicom-listen", args.model,
                 "--port", str(node_port), "--spool", str(tmp / "spool"),
                 "--forward", f"BENCHDEST@{HOST}:{dest_port}", "--idle-seconds", str(args.idle_seconds)]
    with process(node_args, tmp / "node.log", env=child_env()) as node:
        try:
            probe = AE(ae_title="BENCH")
            probe.add_requested_context("1.2.840.10008.1.1")
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline:
                a = probe.associate(HOST, node_port, ae_title="MEDSEG")
                if a.is_established:
                    a.release()
                    break
                if node.poll() is not None:
                    raise SystemExit(f"the node exited at start; its log: {tmp / 'node.log'}")
                time.sleep(1)

            def send(datasets: list[Dataset]) -> None:
                ae = AE(ae_title="BENCH")
                ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
                assoc = ae.associate(HOST, node_port, ae_title="MEDSEG")
                for ds in datasets:
                    assoc.send_c_store(ds)
                assoc.release()
                released[str(datasets[0].StudyInstanceUID)] = time.monotonic()

            t0 = time.monotonic()
            with ThreadPoolExecutor(args.senders) as pool:
                list(pool.map(send, series))
            while len(arrived) < len(series) and time.monotonic() - t0 < args.timeout:
                time.sleep(0.2)
            total = time.monotonic() - t0
            rss = peak_rss_mb(node.pid)
        finally:
            server.shutdown()

    lat = sorted(arrived[k] - released[k] for k in arrived if k in released)
    q = statistics.quantiles(lat, n=100) if len(lat) > 1 else lat * 99
    result = {"cpu": cpu(), "date": time.strftime("%Y-%m-%d"), "args": vars(args), "answered": len(arrived),
              "seconds": total, "series_per_min": 60 * len(arrived) / total,
              "slices_per_s": len(arrived) * args.slices / total, "latency_p50_s": q[49] if lat else None,
              "latency_p99_s": q[98] if lat else None, "node_peak_rss_mb": rss}
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=2))
    c = result["cpu"]
    print(f"\n{result['date']}, {c['model']}, {c['cores']} cores, flags: {', '.join(c['flags']) or 'none'}\n")
    print("| series x slices (px) | senders | answered | series/min | slices/s | latency p50 / p99 (s) "
          "| minus idle p50 (s) | node peak RSS (MB) |")
    print("|---|---|---|---|---|---|---|---|")
    if lat:
        print(f"| {args.series} x {args.slices} ({args.size}) | {args.senders} | {len(arrived)}/{args.series} "
              f"| {result['series_per_min']:.1f} | {result['slices_per_s']:.1f} | {q[49]:.2f} / {q[98]:.2f} "
              f"| {q[49] - args.idle_seconds:.2f} | {rss:.0f} |")


if __name__ == "__main__":
    main()
