"""The DICOM node's spool: received instances on disk, grouped into runs, surviving ``kill -9``.

Layout under the spool folder (names are hashes of UIDs: no patient data in any path)::

    partial/                        files being written (emptied at start)
    assoc/<assoc>/<series>__<sop>.dcm  instances of an association still open
    collecting/<series>/<sop>.dcm   instances of released associations, waiting for the series to go idle
    ready/<series>.<stamp>/<sop>.dcm  complete runs, waiting for (or in) segmentation
    answered/<series>.txt           SOP keys already taken into a run (duplicates are ignored)
    failed/<run>/                   runs that could not be segmented, with reason.txt

A run moves between these folders by ``os.replace`` (one step), so a process killed at any point
leaves every instance in exactly one place. At start, ``assoc/`` holds only instances of associations
that were never released: they are dropped, as for an aborted association. ``collecting/`` and
``ready/`` are kept and processed.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import threading
import time
import uuid
from pathlib import Path

from medseg.io.dicom_series import series_tag

log = logging.getLogger(__name__)

#: C-STORE status codes (PS3.4 Annex B.2.3, PS3.7 C.4.2.1.4)
SUCCESS, OUT_OF_RESOURCES, DATA_SET_MISMATCH, CANNOT_UNDERSTAND = 0x0000, 0xA700, 0xA900, 0xC000


def uid_key(uid: str, n: int = 16) -> str:
    """A short hash of a UID, used as a file or folder name (reveals nothing about the patient)."""
    return hashlib.sha1(str(uid).encode()).hexdigest()[:n]


class Spool:
    """Thread-safe spool: association threads :meth:`store`, :meth:`release`, :meth:`abort`; a scheduler
    takes complete runs with :meth:`take_due`.

    ``min_free_bytes``: below this much free disk space a store answers 0xA700 (out of resources).
    ``answered_days``: how long the SOP keys of answered runs are kept for duplicate detection.
    """

    def __init__(self, root: str | Path, *, min_free_bytes: int = 512 * 2**20, answered_days: float = 7.0) -> None:
        self.root = Path(root)
        self.min_free_bytes = int(min_free_bytes)
        self.answered_days = answered_days
        self._lock = threading.Lock()
        self._assocs: dict[str, list[tuple[str, str]]] = {}  # association -> its (series key, sop key) files
        self._pending: dict[str, set[str]] = {}  # series key -> sop keys in open associations or collecting
        self._answered: dict[str, set[str]] = {}
        self._last_arrival: dict[str, float] = {}
        for name in ("partial", "assoc", "collecting", "ready", "answered", "failed"):
            (self.root / name).mkdir(parents=True, exist_ok=True)
        self._recover()

    # ------------------------------------------------------------------ start
    def _recover(self) -> None:
        shutil.rmtree(self.root / "partial", ignore_errors=True)
        (self.root / "partial").mkdir()
        dropped = 0
        for assoc in (self.root / "assoc").iterdir():
            dropped += sum(1 for _ in assoc.iterdir()) if assoc.is_dir() else 1
            shutil.rmtree(assoc, ignore_errors=True) if assoc.is_dir() else assoc.unlink()
        if dropped:
            log.warning("spool: dropped %d instance(s) of associations that were never released", dropped)
        horizon = time.time() - self.answered_days * 86400
        for record in (self.root / "answered").glob("*.txt"):
            if record.stat().st_mtime < horizon:
                record.unlink()
            else:
                self._answered[record.stem] = set(record.read_text().split())
        for folder in (self.root / "collecting").iterdir():
            files = list(folder.glob("*.dcm"))
            if not files:
                folder.rmdir()
                continue
            self._pending[folder.name] = {f.stem for f in files}
            self._last_arrival[folder.name] = max(f.stat().st_mtime for f in files)
        waiting = sum(len(v) for v in self._pending.values())
        ready = self.ready_runs()
        if waiting or ready:
            log.info("spool: %d instance(s) waiting in %d series, %d complete run(s) to segment", waiting,
                     len(self._pending), len(ready))

    # ------------------------------------------------------------------ association threads
    def store(self, assoc_id: str, series_uid: str, sop_uid: str, data: bytes) -> tuple[int, bool]:
        """Write one encoded instance (DICOM file format bytes) for association ``assoc_id``.

        Returns (C-STORE status, stored): a duplicate SOP Instance UID answers success and is not stored.
        """
        skey, okey = series_tag(series_uid), uid_key(sop_uid)  # the series as outputs and logs name it
        with self._lock:
            if okey in self._pending.get(skey, ()) or okey in self._answered.get(skey, ()):
                return SUCCESS, False
            if shutil.disk_usage(self.root).free - len(data) < self.min_free_bytes:
                return OUT_OF_RESOURCES, False
            self._pending.setdefault(skey, set()).add(okey)  # claimed: a concurrent duplicate is ignored
            self._last_arrival[skey] = time.time()
        target = self.root / "assoc" / assoc_id / f"{skey}__{okey}.dcm"
        tmp = self.root / "partial" / f"{uuid.uuid4().hex}.tmp"
        try:
            tmp.write_bytes(data)
            target.parent.mkdir(exist_ok=True)
            os.replace(tmp, target)
        except OSError:
            tmp.unlink(missing_ok=True)
            with self._lock:
                self._pending[skey].discard(okey)
            return OUT_OF_RESOURCES, False
        with self._lock:
            self._assocs.setdefault(assoc_id, []).append((skey, okey))
            self._last_arrival[skey] = time.time()
        return SUCCESS, True

    def release(self, assoc_id: str) -> int:
        """The association was released: its instances join their series' collecting run. Returns how many."""
        with self._lock:
            files = self._assocs.pop(assoc_id, None)
            if files is None:
                return 0
            folder = self.root / "assoc" / assoc_id
            for skey, okey in files:
                target = self.root / "collecting" / skey / f"{okey}.dcm"
                target.parent.mkdir(exist_ok=True)
                os.replace(folder / f"{skey}__{okey}.dcm", target)
                self._last_arrival[skey] = time.time()
            shutil.rmtree(folder, ignore_errors=True)
            return len(files)

    def abort(self, assoc_id: str) -> int:
        """The association was aborted (or its connection lost): its instances are deleted. Returns how many."""
        with self._lock:
            files = self._assocs.pop(assoc_id, None)
            shutil.rmtree(self.root / "assoc" / assoc_id, ignore_errors=True)
            for skey, okey in files or []:
                self._pending.get(skey, set()).discard(okey)
            return len(files or [])

    # ------------------------------------------------------------------ scheduler
    def take_due(self, idle_seconds: float, now: float | None = None) -> list[Path]:
        """Runs now complete (no open association holds their series, nothing arrived for ``idle_seconds``):
        moved from ``collecting/`` to ``ready/``, their SOP keys recorded as answered."""
        now = time.time() if now is None else now
        due = []
        with self._lock:
            busy = {skey for files in self._assocs.values() for skey, _ in files}
            for folder in sorted((self.root / "collecting").iterdir()):
                skey = folder.name
                if skey in busy or now - self._last_arrival.get(skey, 0.0) < idle_seconds:
                    continue
                keys = {f.stem for f in folder.glob("*.dcm")}
                stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now))
                run = self.root / "ready" / f"{skey}.{stamp}{uuid.uuid4().hex[:4]}"
                answered = self._answered.setdefault(skey, set())
                new = keys - answered
                if new:
                    with open(self.root / "answered" / f"{skey}.txt", "a") as f:
                        f.write("".join(k + "\n" for k in sorted(new)))
                answered |= keys
                os.replace(folder, run)
                self._pending.pop(skey, None)
                self._last_arrival.pop(skey, None)
                due.append(run)
        return due

    def ready_runs(self) -> list[Path]:
        """Complete runs waiting to be segmented, oldest first."""
        runs = [p for p in (self.root / "ready").iterdir() if p.is_dir()]
        return sorted(runs, key=lambda p: (p.name.split(".", 1)[-1], p.name))

    def finish(self, run: Path) -> None:
        """The run was answered: its instances are deleted."""
        shutil.rmtree(run, ignore_errors=True)

    def fail(self, run: Path, reason: str) -> Path:
        """The run could not be segmented: kept under ``failed/`` with ``reason.txt``."""
        target = self.root / "failed" / run.name
        shutil.rmtree(target, ignore_errors=True)
        os.replace(run, target)
        (target / "reason.txt").write_text(reason + "\n", encoding="utf-8")
        return target

    def waiting(self) -> int:
        """Instances received and not yet in a complete run (open associations and collecting)."""
        with self._lock:
            return sum(len(v) for v in self._pending.values())
