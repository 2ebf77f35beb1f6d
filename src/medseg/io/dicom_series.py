"""DICOM series: find the DICOM files under a path, group their frames by series, sort each series.

A series is sorted along the slice normal when every frame has one orientation and a position, else
by instance number then frame number. The same instance in several files (re-encoded copies) is used
once. Series are named by :func:`series_tag`, a hash of the Series Instance UID: never patient data.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from medseg.errors import DataError
from medseg.io.dicom import DicomFrame, frames_of, is_dicom


def has_dicom(folder: str | Path) -> bool:
    """True when ``folder`` (or a sub-folder) holds at least one DICOM file."""
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        if any(not n.startswith(".") and is_dicom(Path(dirpath) / n) for n in filenames):
            return True
    return False


def series_tag(uid: str) -> str:
    """A short, stable name for a series that reveals nothing (a hash of its Series Instance UID)."""
    return hashlib.sha1(str(uid).encode()).hexdigest()[:10]


@dataclass
class Series:
    """The frames of one series, sorted along the slice normal (else by instance and frame number)."""

    uid: str
    frames: list[DicomFrame]

    @cached_property
    def tag(self) -> str:
        return series_tag(self.uid)

    @property
    def files(self) -> list[Path]:
        return list(dict.fromkeys(f.path for f in self.frames))


@dataclass
class DicomScan:
    series: list[Series] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)  # (file, one-sentence reason)

    @property
    def frames(self) -> list[DicomFrame]:
        return [f for s in self.series for f in s.frames]


def sort_frames(frames: list[DicomFrame]) -> list[DicomFrame]:
    """Along the slice normal when every frame has one orientation and a position; else by numbers."""
    by_number = sorted(frames, key=lambda f: (f.instance_number is None, f.instance_number or 0, f.index,
                                              str(f.path)))
    orientations = {f.geometry.orientation for f in frames}
    if len(orientations) == 1 and None not in orientations and all(f.geometry.position for f in frames):
        return sorted(by_number, key=lambda f: round(f.geometry.along_normal(), 4))
    return by_number


def dicom_files(path: str | Path) -> list[Path]:
    """``path`` itself, or every DICOM file under the folder (recursively, hidden files skipped)."""
    path = Path(path)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise DataError(f"{path} does not exist; give a DICOM file or a folder of DICOM files")
    found = []
    for dirpath, dirnames, filenames in os.walk(path):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        found += [Path(dirpath) / n for n in sorted(filenames) if not n.startswith(".")
                  and is_dicom(Path(dirpath) / n)]
    return found


def scan_dicom(path: str | Path, *, dedupe: bool = True) -> DicomScan:
    """Read the headers of the DICOM files at ``path`` and group their frames into sorted series.

    ``dedupe``: a second file holding an instance already seen is reported and skipped.
    """
    scan = DicomScan()
    groups: dict[str, list[DicomFrame]] = {}
    seen: dict[str, Path] = {}
    for file in dicom_files(path):
        try:
            frames = frames_of(file)
        except DataError as err:
            scan.failed.append((file, str(err)))
            continue
        first = seen.setdefault(frames[0].sop_instance_uid, file) if frames[0].sop_instance_uid else file
        if dedupe and first != file:  # the same instance twice (e.g. re-encoded copies): keep the first file
            scan.failed.append((file, f"DICOM file {file} holds the same image (SOP Instance UID) as {first}; "
                                      "it is skipped"))
            continue
        for f in frames:
            groups.setdefault(f.series_instance_uid, []).append(f)
    scan.series = [Series(uid, sort_frames(frames)) for uid, frames in groups.items()]
    return scan
