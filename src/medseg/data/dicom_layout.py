"""DICOM datasets: one pair per frame, its mask a PNG named after the frame or a label file per series.

::

    images/                 DICOM files (.dcm or extension-less), multi-frame files, or a sub-folder per series
    masks/ (or labels/)     for each frame, the first that applies:
      <frame>.png             a mask named after the frame, in the same sub-folder as its image:
                              <file stem>.png, or <file stem>_f003.png for frame 3 of a multi-frame file
                              (what ``medseg convert labels`` writes)
      *.dcm (SEG)             a DICOM SEG, any name: matched by the instances it references
      <series>.nii.gz/.nrrd   a label volume named after the series folder (images/case7/ ->
                              labels/case7.nii.gz) or the multi-frame file (images/mr.dcm -> labels/mr.nrrd),
                              matched to each slice by geometry
      <frame>.json            a LabelMe file named after the frame

Case ids are the frame's path under ``images/`` without suffix, folders joined by ``__``.
"""

from __future__ import annotations

import os
from pathlib import Path

from medseg.data.pairs import MASK_SUFFIXES, Pair, Problem
from medseg.io.dicom import DicomFrame
from medseg.io.dicom_series import scan_dicom
from medseg.io.formats import formats, mask_format, strip_suffix
from medseg.io.labels import read_seg


def _key(path: Path, root: Path, name: str | None = None) -> str:
    rel = path.relative_to(root)
    return (rel.parent / (name or rel.name)).as_posix().removeprefix("./")


def _mask_files(masks_dir: Path) -> tuple[dict[str, list[Path]], dict[Path, str]]:
    """Files under ``masks_dir`` by how they are matched to frames: "named" (a mask file of its own,
    named after the frame: images, LabelMe), "seg" (referencing the frames) and "volume" (named after
    the series: any other frame-bound format), with what each file is (for the layout's description)."""
    by_format: dict[str, list[Path]] = {f.name: [] for f in formats()}
    described: dict[Path, str] = {}
    for dirpath, dirnames, filenames in os.walk(masks_dir):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for n in sorted(filenames):
            p = Path(dirpath) / n
            if not n.startswith(".") and (fmt := mask_format(p)) is not None:
                by_format[fmt.name].append(p)
                described[p] = "images named after the frame" if fmt.name == "image" else fmt.description
    out: dict[str, list[Path]] = {"named": [], "seg": [], "volume": []}
    for fmt in formats():  # in registry order: a LabelMe file named like an image file wins, as before
        out["named" if fmt.read_labels else "seg" if fmt.name == "seg" else "volume"] += by_format[fmt.name]
    return out, described


def match_dicom(images_dir: Path, masks_dir: Path) -> tuple[list[Pair], list[Problem], str]:
    """Pairs (one per DICOM frame) and problems for a DICOM images folder; see the module docstring."""
    scan = scan_dicom(images_dir)
    problems = [Problem(strip_suffix(p.name), p, "unreadable-image", msg) for p, msg in scan.failed]
    files, described = _mask_files(masks_dir)
    by_name: dict[str, Path] = {}
    for p in files["named"]:
        stem = _key(p, masks_dir, strip_suffix(p.name))
        for sfx in MASK_SUFFIXES:
            if sfx and stem.endswith(sfx):
                by_name.setdefault(stem[: -len(sfx)], p)
        by_name[stem] = p
    by_series_name = {_key(p, masks_dir, strip_suffix(p.name)): p for p in files["volume"]}
    segs = []
    for p in files["seg"]:
        try:
            segs.append((p, read_seg(p)))
        except Exception as err:  # a broken SEG is reported, the rest goes on
            problems.append(Problem(strip_suffix(p.name), p, "unreadable-mask", str(err)))
    used: set[Path] = set()
    pairs: list[Pair] = []
    for frame in scan.frames:
        key = _key(frame.path, images_dir, frame.name)
        mask = by_name.get(key) or _seg_for(frame, segs) or _volume_for(frame, images_dir, by_series_name)
        case_id = key.replace("/", "__")
        if mask is None:
            shown = f"{frame.path}" + (f" frame {frame.frame}" if frame.frame else "")
            problems.append(Problem(case_id, frame.path, "missing-mask",
                                    f"DICOM image {shown} has no mask in {masks_dir} (expected {key}.png, "
                                    "a SEG referencing it, or a label volume named after its series)"))
            continue
        used.add(mask)
        pairs.append(Pair(case_id, frame.path, mask, frame=frame.frame))
    for p in files["named"] + files["volume"] + [p for p, _ in segs]:
        if p not in used:
            problems.append(Problem(strip_suffix(p.name), p, "missing-image",
                                    f"mask {p} matches no DICOM image in {images_dir}"))
    kinds = list(dict.fromkeys(described[p] for paths in files.values() for p in paths if p in used))
    return pairs, problems, f"DICOM frames; masks: {', '.join(kinds) or 'none found'}"


def _seg_for(frame: DicomFrame, segs) -> Path | None:
    return next((path for path, seg in segs if (frame.sop_instance_uid, frame.frame) in seg.referenced
                 or (frame.sop_instance_uid, None) in seg.referenced), None)


def _volume_for(frame: DicomFrame, images_dir: Path, volumes: dict[str, Path]) -> Path | None:
    if not volumes:
        return None
    rel = frame.path.relative_to(images_dir)
    names = [strip_suffix(rel.as_posix())] + [p.as_posix() for p in rel.parents if p.as_posix() != "."]
    return next((volumes[n] for n in names if n in volumes), None)
