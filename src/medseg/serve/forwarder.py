"""Send DICOM SEG files to C-STORE destinations, retrying with back-off, then a dead-letter folder.

An *outbox* entry is a folder of SEG files with ``pending.json`` (the destinations not yet served,
with their attempt counts). It is created by one ``os.replace`` and rewritten atomically after every
attempt, so a restart resumes where the last process stopped. A destination that still fails after
``retries`` retries (delays ``retry_delay`` x 1, 2, 4, ... seconds, at most 5 minutes) gets a copy of
the files in ``<dead-letter>/<AE>@<host>_<port>/<entry>/`` with ``reason.txt``.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from medseg.errors import MedsegError
from medseg.io.files import write_text_atomic

log = logging.getLogger(__name__)

#: C-STORE statuses that mean stored: success and the warnings of PS3.4 B.2.3
STORED = frozenset({0x0000, 0xB000, 0xB006, 0xB007})
MAX_DELAY_S = 300.0


@dataclass(frozen=True)
class Destination:
    """A C-STORE SCP: ``AE@HOST:PORT``."""

    ae_title: str
    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> Destination:
        m = re.fullmatch(r"([^@]{1,16})@(\[[0-9a-fA-F:.]+\]|[^:@]+):(\d{1,5})", text.strip())
        if not m or not m.group(1).strip() or not 0 < int(m.group(3)) < 65536:
            raise MedsegError(f"--forward {text!r} is not AE@HOST:PORT (AE title of at most 16 characters, "
                              "e.g. PACS@10.0.0.5:104)")
        return cls(m.group(1).strip(), m.group(2).strip("[]"), int(m.group(3)))

    def __str__(self) -> str:
        return f"{self.ae_title}@{self.host}:{self.port}"


def send_files(dest: Destination, files: list[Path], *, calling_ae: str, timeout: float = 30.0) -> None:
    """C-STORE every file to ``dest`` in one association; OSError with the reason on any failure."""
    from pydicom import dcmread
    from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
    from pynetdicom import AE

    datasets = [dcmread(f) for f in files]
    ae = AE(ae_title=calling_ae)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
    for sop_class in sorted({str(ds.SOPClassUID) for ds in datasets}):
        ae.add_requested_context(sop_class, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    assoc = ae.associate(dest.host, dest.port, ae_title=dest.ae_title)
    if not assoc.is_established:
        raise OSError(f"association with {dest} was {'rejected' if assoc.is_rejected else 'not established'}")
    try:
        for i, ds in enumerate(datasets, start=1):
            status = assoc.send_c_store(ds)
            code = int(status.Status) if status and "Status" in status else None
            if code not in STORED:
                raise OSError(f"{dest} answered C-STORE of file {i}/{len(datasets)} with "
                              + (f"status 0x{code:04X}" if code is not None else "no response"))
    finally:
        if assoc.is_established:
            assoc.release()


class Outbox:
    """Entries waiting to be sent, under ``root``; failed sends end in ``dead_letter``."""

    def __init__(self, root: str | Path, dead_letter: str | Path, *, calling_ae: str, retries: int = 5,
                 retry_delay: float = 2.0, timeout: float = 30.0) -> None:
        self.root, self.dead_letter = Path(root), Path(dead_letter)
        self.calling_ae, self.retries, self.retry_delay, self.timeout = calling_ae, retries, retry_delay, timeout
        self.root.mkdir(parents=True, exist_ok=True)
        for tmp in self.root.glob(".tmp-*"):
            shutil.rmtree(tmp, ignore_errors=True)

    def staging(self, name: str) -> Path:
        """An empty folder to write an entry's files into before :meth:`add`."""
        tmp = self.root / f".tmp-{name}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        return tmp

    def has(self, name: str) -> bool:
        return (self.root / name).is_dir()

    def add(self, staging: Path, name: str, destinations: list[Destination]) -> Path:
        """Move the staged files in as entry ``name``, pending for every destination."""
        pending = {str(d): {"ae": d.ae_title, "host": d.host, "port": d.port, "attempts": 0, "next": 0.0}
                   for d in destinations}
        write_text_atomic(staging / "pending.json", json.dumps(pending, indent=1))
        entry = self.root / name
        os.replace(staging, entry)
        return entry

    def entries(self) -> list[Path]:
        return sorted(p for p in self.root.iterdir() if p.is_dir() and not p.name.startswith("."))

    def send_due(self, now: float | None = None) -> int:
        """One attempt for every (entry, destination) whose time has come; returns how many were tried."""
        tried = 0
        for entry in self.entries():
            pending = json.loads((entry / "pending.json").read_text())
            files = sorted(entry.glob("*.dcm"))
            for key, d in list(pending.items()):
                if d["next"] > (time.time() if now is None else now):
                    continue
                tried += 1
                dest = Destination(d["ae"], d["host"], int(d["port"]))
                try:
                    send_files(dest, files, calling_ae=self.calling_ae, timeout=self.timeout)
                    log.info("sent %d SEG file(s) of %s to %s", len(files), entry.name, dest)
                    del pending[key]
                except (OSError, RuntimeError, ValueError) as err:
                    d["attempts"] += 1
                    if d["attempts"] > self.retries:
                        self._dead_letter(entry, files, dest, f"{err} (after {d['attempts']} attempts)")
                        del pending[key]
                    else:
                        delay = min(self.retry_delay * 2 ** (d["attempts"] - 1), MAX_DELAY_S)
                        d["next"] = time.time() + delay
                        log.warning("sending %s to %s failed (%s); retry %d/%d in %.0f s", entry.name, dest, err,
                                    d["attempts"], self.retries, delay)
            if pending:
                write_text_atomic(entry / "pending.json", json.dumps(pending, indent=1))
            else:
                shutil.rmtree(entry, ignore_errors=True)
        return tried

    def _dead_letter(self, entry: Path, files: list[Path], dest: Destination, reason: str) -> None:
        folder = re.sub(r"[^A-Za-z0-9@._-]", "_", f"{dest.ae_title}@{dest.host}_{dest.port}")
        target = self.dead_letter / folder / entry.name
        target.mkdir(parents=True, exist_ok=True)
        for f in files:
            shutil.copy2(f, target / f.name)
        write_text_atomic(target / "reason.txt", f"{dest}: {reason}\n")
        log.error("gave up sending %s to %s: %s; files kept in %s", entry.name, dest, reason, target)


class Forwarder(threading.Thread):
    """Background thread calling :meth:`Outbox.send_due` until ``stop`` is set."""

    def __init__(self, outbox: Outbox, stop: threading.Event, poll_s: float = 0.5) -> None:
        super().__init__(name="medseg-forwarder", daemon=True)
        self.outbox, self.stop, self.poll_s = outbox, stop, poll_s

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                self.outbox.send_due()
            except Exception:  # never let the sender die; the entry stays and is retried
                log.exception("forwarder: unexpected error")
            self.stop.wait(self.poll_s)
