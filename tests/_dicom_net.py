"""Plain helpers for DICOM network tests: free loopback ports, processes that are always cleaned up,
bounded waits (no fixtures here)."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from tests._paths import child_env

HOST = "127.0.0.1"
DCMTK = shutil.which("echoscu") and shutil.which("storescu") and shutil.which("storescp")


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def echo(port: int, *, calling: str = "ECHOSCU", called: str = "MEDSEG") -> subprocess.CompletedProcess:
    return subprocess.run(["echoscu", "-to", "5", "-aet", calling, "-aec", called, HOST, str(port)],
                          capture_output=True, text=True, timeout=30)


def wait_for(predicate, timeout: float, what: str, proc: subprocess.Popen | None = None, log: Path | None = None):
    """Poll ``predicate`` until it returns something truthy; AssertionError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"process exited ({proc.returncode}) while waiting for {what}: "
                                 + (log.read_text()[-3000:] if log else ""))
        time.sleep(0.3)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}"
                         + (f": {log.read_text()[-3000:]}" if log else ""))


@contextmanager
def process(args: list[str], log: Path, *, env: dict | None = None):
    """Start ``args`` with output to ``log``; on exit terminate it (then kill), whatever happened."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=30)


def node_args(model: Path, port: int, spool: Path, *extra: str) -> list[str]:
    return [sys.executable, "-c", "from medseg.cli import main; main()", "dicom-listen", str(model),
            "--ae-title", "MEDSEG", "--port", str(port), "--spool", str(spool), *extra]


def node_env() -> dict:
    return child_env()


@contextmanager
def dicom_node(model: Path, port: int, spool: Path, log: Path, *extra: str, calling: str = "ECHOSCU"):
    """A running ``medseg dicom-listen`` subprocess, answering C-ECHO (waits up to 180 s for it)."""
    with process(node_args(model, port, spool, *extra), log, env=node_env()) as proc:
        wait_for(lambda: echo(port, calling=calling).returncode == 0, 180, "the node to answer C-ECHO", proc, log)
        yield proc


@contextmanager
def storescp(port: int, out: Path, log: Path, *, ae: str = "DEST"):
    """dcmtk's storescp as a C-STORE destination writing into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    with process(["storescp", "-aet", ae, "-od", str(out), str(port)], log) as proc:
        wait_for(lambda: echo(port, called=ae).returncode == 0, 30, "storescp to answer C-ECHO", proc, log)
        yield proc
