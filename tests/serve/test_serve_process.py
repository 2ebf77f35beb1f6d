"""`medseg serve` as a process: token file, request ids in the log, graceful shutdown on SIGTERM."""

from __future__ import annotations

import io
import os
import re
import signal
import subprocess
import sys
import threading
import time

import httpx
import numpy as np
import pytest
from PIL import Image

from tests._serve_helpers import TOKEN, free_port, wait_ready

pytestmark = pytest.mark.slow


def test_sigterm_lets_in_flight_requests_finish(tiny_run, tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    rng = np.random.default_rng(0)
    uploads = []
    for side in (320, 200):  # 320 px: sliding windows of the 64 px model, seconds of work; 200 px: letterboxed
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 255, (side, side, 3), dtype=np.uint8)).save(buf, format="JPEG")
        uploads.append(buf.getvalue())
    big, data = uploads
    port = free_port()
    log_file = tmp_path / "serve.log"
    env = {**os.environ, "MEDSEG_TOKEN": ""}
    with log_file.open("w") as log:
        proc = subprocess.Popen([sys.executable, "-c", "from medseg.cli import main; main()", "serve", str(tiny_run),
                                 "--port", str(port), "--token-file", str(token_file), "--max-queue", "16"],
                                stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    auth = {"Authorization": f"Bearer {TOKEN}"}
    try:
        with httpx.Client(base_url=url, timeout=120) as http:
            deadline = time.monotonic() + 120
            while True:  # wait for the socket, then for the model
                try:
                    http.get("/livez")
                    break
                except httpx.TransportError:
                    assert proc.poll() is None and time.monotonic() < deadline, log_file.read_text()
                    time.sleep(0.2)
            wait_ready(http.get)
            assert http.post("/v1/segment", content=data).status_code == 401
            first = http.post("/v1/segment", content=data, headers={**auth, "X-Request-ID": "first-request"})
            assert first.status_code == 200 and first.headers["x-request-id"] == "first-request"

            results: list[tuple[float, int | str]] = []

            def send(body: bytes) -> None:
                try:
                    with httpx.Client(base_url=url, timeout=120) as c:
                        r = c.post("/v1/segment", content=body, headers=auth)
                        results.append((time.monotonic(), r.status_code))
                except httpx.TransportError as err:
                    results.append((time.monotonic(), type(err).__name__))

            threads = [threading.Thread(target=send, args=(body,)) for body in [big] + [data] * 5]
            for t in threads:
                t.start()
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:  # until an upload is being answered (the probe itself is one)
                text = http.get("/metrics", headers=auth).text
                in_flight = float(re.search(r"^medseg_requests_in_flight (\S+)$", text, re.M).group(1))
                if in_flight >= 2:
                    break
            stopped = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            for t in threads:
                t.join(120)
        assert proc.wait(90) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal once it has shut down
    finally:
        if proc.poll() is None:
            proc.kill()
    finished_after = [status for when, status in results if when > stopped]
    assert 200 in finished_after, results  # in-flight requests were answered after SIGTERM
    assert all(status in (200, "ConnectError") for _, status in results), results
    log = log_file.read_text()
    assert "[first-request] medseg.serve: POST /v1/segment 200" in log
    assert TOKEN not in log and "stopped" in log
