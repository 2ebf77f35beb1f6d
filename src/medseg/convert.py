"""``medseg convert``: DICOM to PNG (+ geometry sidecars), and annotation-tool label maps to mask PNGs.

Names trace back to the source: ``<sub-folder>/<file stem>.png`` for a single-frame file and
``<file stem>_f003.png`` for frame 3 of a multi-frame file (1-based, as DICOM counts frames); each
PNG from DICOM gets a ``.json`` sidecar. Masks from ``convert labels`` carry the same names as the
images from ``convert dicom``, so the two folders form an ``images/`` + ``masks/`` dataset.
Sidecars never hold patient data (names, IDs, dates); ``anonymize`` also replaces the UIDs by
stable hashes (``2.25.<digits>``).
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import numpy as np

from medseg.errors import DataError, MedsegError
from medseg.io.dicom import DicomFrame, check_image, decode, read_dataset
from medseg.io.dicom_series import scan_dicom
from medseg.io.files import write_text_atomic
from medseg.io.formats import mask_format, read_image
from medseg.io.images import IMAGE_SUFFIXES, write_png
from medseg.io.outputs import BatchResult, check_not_input
from medseg.io.windowing import colour_to_uint8, grey_to_uint8, parse_window, rescale_of

log = logging.getLogger(__name__)

_OFTEN_BURNED_IN = frozenset({"US", "OT", "SC", "XC", "ES", "XA", "RF"})  # modalities with text in the pixels


def anonymous_uid(uid: str) -> str:
    """A stable replacement UID (``2.25.<decimal>``) that does not reveal the original."""
    return "2.25." + str(int(hashlib.sha256(str(uid).encode()).hexdigest()[:32], 16))


def claim_outputs(targets: list[Path], source: Path, claimed: dict[Path, Path]) -> str | None:
    """Reserve ``targets`` for ``source``; a sentence naming both inputs when another input has one.

    Two inputs that map to one output name (``scan.dcm`` and an extension-less ``scan`` in one folder)
    would silently overwrite each other: the first keeps the name and the second is refused.
    """
    for target in targets:
        other = claimed.get(target)
        if other is not None and other != source:
            return (f"{source} and {other} would both be written as {target.name}; the second is skipped "
                    "(rename one of them)")
    for target in targets:
        claimed[target] = source
    return None


def _out_path(frame: DicomFrame, src: Path, dst: Path, suffix: str) -> Path:
    rel = frame.path.parent.relative_to(src) if src.is_dir() else Path()
    return dst / rel / f"{frame.name}{suffix}"


def _sidecar(ds, frame: DicomFrame, src: Path, *, bits: int, window, offset: int, anonymize: bool) -> dict:
    uid = anonymous_uid if anonymize else str
    g = frame.geometry
    slope, intercept = rescale_of(ds, frame.index)
    out = {
        "source": frame.path.relative_to(src).as_posix() if src.is_dir() else frame.path.name,
        "frame": frame.frame,
        "rows": frame.rows, "columns": frame.columns,
        "modality": frame.modality,
        "sop_instance_uid": uid(frame.sop_instance_uid),
        "series_instance_uid": uid(frame.series_instance_uid),
        "study_instance_uid": uid(str(ds.get("StudyInstanceUID", ""))),
        "frame_of_reference_uid": uid(str(ds.get("FrameOfReferenceUID", ""))),
        "pixel_spacing": list(g.spacing) if g.spacing else None,
        "image_position_patient": list(g.position) if g.position else None,
        "image_orientation_patient": list(g.orientation) if g.orientation else None,
        "slice_thickness": g.thickness,
        "photometric_interpretation": str(ds.get("PhotometricInterpretation", "")),
        "png_bits": bits,
    }
    if bits == 16:
        out.update(rescale_slope=slope, rescale_intercept=intercept, png_offset=offset,
                   note="stored value = png - png_offset; modality value (HU for CT) = stored * slope + intercept")
    elif window is not None:
        out["window"] = {"center": window.center, "width": window.width, "source": window.source,
                         "function": window.function}
    elif "VOILUTSequence" in ds:
        out["window"] = {"source": "file VOI LUT"}
    return out


def convert_dicom(src: str | Path, dst: str | Path, *, window: str | None = None, bits: int = 8,
                  anonymize: bool = False) -> BatchResult:
    """One PNG (+ ``.json`` sidecar) per frame of every DICOM image under ``src``; see the module docstring."""
    src, dst = Path(src), Path(dst)
    if bits not in (8, 16):
        raise MedsegError(f"--bits must be 8 or 16, not {bits}")
    parse_window(window)
    check_not_input(dst, [src], what="output folder")  # sidecars and PNGs never land among the sources
    scan = scan_dicom(src, dedupe=False)  # every file is converted, re-encoded copies included
    result = BatchResult(failed=list(scan.failed))
    by_file: dict[Path, list[DicomFrame]] = {}
    for f in scan.frames:
        by_file.setdefault(f.path, []).append(f)
    claimed: dict[Path, Path] = {}
    for path, frames in by_file.items():
        try:
            clash = claim_outputs([_out_path(f, src, dst, ".png") for f in frames], path, claimed)
            if clash:
                result.failed.append((path, clash))
                continue
            ds = read_dataset(path)
            check_image(ds, path)
            pixels = decode(ds, path)
            for frame in frames:
                result.written.append(_write_frame(ds, pixels[frame.index], frame, src, dst, window, bits, anonymize))
        except (DataError, OSError, ValueError) as err:
            result.failed.append((path, str(err) if isinstance(err, DataError) else
                                  f"DICOM file {path} could not be converted ({type(err).__name__}: {err})"))
            continue
        burned = str(ds.get("BurnedInAnnotation", "")).upper()
        if anonymize and (burned == "YES" or burned != "NO" and frames[0].modality in _OFTEN_BURNED_IN):
            result.notes.append(f"{path} may have burned-in text (BurnedInAnnotation {burned or 'absent'}); "
                                "--anonymize cannot remove text from pixels")
    return result


def _write_frame(ds, stored: np.ndarray, frame: DicomFrame, src: Path, dst: Path, window, bits: int,
                 anonymize: bool) -> Path:
    colour = stored.ndim == 3 or str(ds.get("PhotometricInterpretation", "")) == "PALETTE COLOR"
    used, offset = None, 0
    if colour:
        image, bits = colour_to_uint8(ds, stored), 8
    elif bits == 16:
        offset = 32768 if stored.dtype.kind == "i" else 0
        image = (stored.astype(np.int64) + offset).clip(0, 65535).astype(np.uint16)
    else:
        image, used = grey_to_uint8(ds, stored, window, frame.index)
    target = _out_path(frame, src, dst, ".png")
    write_png(target, image)
    meta = _sidecar(ds, frame, src, bits=bits, window=used, offset=offset, anonymize=anonymize)
    write_text_atomic(target.with_suffix(".json"), json.dumps(meta, indent=2) + "\n")
    return target


# ------------------------------------------------------------------------------------------ labels
def _label_files(labels: Path) -> list[Path]:
    files = [labels] if labels.is_file() else sorted(p for p in labels.rglob("*") if p.is_file()
                                                      and not p.name.startswith("."))
    if not labels.exists():
        raise DataError(f"labels {labels} do not exist")
    return [p for p in files if (fmt := mask_format(p)) is not None and fmt.name != "image"]


def convert_labels(labels: str | Path, reference: str | Path, out: str | Path) -> BatchResult:
    """One mask PNG per annotated slice (or image), named after it; see the module docstring.

    SEG and NRRD/NIfTI label maps need ``reference`` = the DICOM series they annotate; LabelMe JSON
    needs ``reference`` = the folder of the images they annotate. One class is written as 0/255, several
    as their label values (``classes.json`` says which is which).
    """
    labels, reference, out = Path(labels), Path(reference), Path(out)
    check_not_input(out, [labels, reference], what="output folder")  # masks never replace the images they annotate
    files = _label_files(labels)
    if not files:
        raise DataError(f"no label files in {labels} (looked for DICOM SEG, NRRD, NIfTI and LabelMe JSON)")
    labelme = [p for p in files if mask_format(p).name == "labelme"]
    volumes = [p for p in files if p not in labelme]
    result = BatchResult()
    if labelme:
        _convert_labelme(labelme, reference, out, result)
    if volumes:
        _convert_volumes(volumes, reference, out, result)
    return result


def _convert_volumes(files: list[Path], reference: Path, out: Path, result: BatchResult) -> None:
    from medseg.io.formats import labels_for_frames
    from medseg.io.labels import named_label_values

    scan = scan_dicom(reference)
    result.failed += scan.failed
    if not scan.frames:
        raise DataError(f"no DICOM images in {reference} to match the label files against")
    names = {}
    for p in files:
        try:
            names[p] = named_label_values(p)
        except DataError as err:
            result.failed.append((p, str(err)))
    done: dict[DicomFrame, Path] = {}
    claimed: dict[Path, Path] = {}
    series: dict[str, list[DicomFrame]] = {}
    for frame in scan.frames:
        series.setdefault(frame.series_instance_uid, []).append(frame)
    for path, classes in names.items():
        binary = set(classes) <= {1}
        covered, errors, empty = 0, [], 0
        for frames in series.values():
            try:
                per_frame = labels_for_frames(path, frames)
            except DataError as err:
                errors.append(str(err))
                continue
            for frame, labels in zip(frames, per_frame, strict=True):
                if labels is None:
                    continue
                covered += 1
                if frame in done:
                    result.notes.append(f"{frame.path.name} is covered by {done[frame].name} and {path.name}; "
                                        f"the first is kept")
                    continue
                target = _out_path(frame, reference, out, ".png")
                clash = claim_outputs([target], frame.path, claimed)
                if clash:
                    result.failed.append((path, clash))
                    continue
                empty += not labels.any()
                write_png(target, (labels > 0).astype(np.uint8) * 255 if binary else labels)
                done[frame] = path
                result.written.append(target)
        if errors:
            more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
            result.failed.append((path, errors[0] + more))
        if covered == 0 and not errors:
            result.notes.append(f"{path} covers none of the {len(scan.frames)} DICOM frames in {reference}")
        elif empty:
            result.notes.append(f"{path.name}: {empty} of {covered} frames have no label (outside its extent or "
                                "unlabelled) and got empty masks")
        if not binary:
            write_text_atomic(out / "classes.json", json.dumps({str(k): v for k, v in classes.items()}, indent=2))
    missing = len(scan.frames) - len(done)
    if missing:
        result.notes.append(f"{missing} of {len(scan.frames)} DICOM frames have no label and got no mask")
    from medseg.io.labels import read_seg

    for p in files:
        if p in names and p.name.lower().endswith(".dcm") and (n := read_seg(p).overlap_pixels):
            result.notes.append(f"SEG {p} has {n} pixels in more than one segment; the higher segment number wins")


def _convert_labelme(files: list[Path], reference: Path, out: Path, result: BatchResult) -> None:
    """One mask per annotated image. Several LabelMe files for one image (a copy made while annotating)
    are merged: their shapes are drawn into one mask in file-name order (later shapes over earlier
    ones), and a note names the files."""
    from medseg.io.labels import read_labelme

    names = set()
    for p in files:
        try:
            names |= set(read_labelme(p)[1])
        except DataError as err:
            result.failed.append((p, str(err)))
    classes = {name: i + 1 for i, name in enumerate(sorted(names))}
    images = {p.stem: p for p in (reference.rglob("*") if reference.is_dir() else [reference])
              if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES | {".dcm"}}
    bad = {f for f, _ in result.failed}
    by_image: dict[Path, list[Path]] = {}
    for p in sorted(files):
        if p in bad:
            continue
        doc = json.loads(p.read_text(encoding="utf-8"))
        stem = Path(str(doc.get("imagePath") or p.stem).replace("\\", "/")).stem
        image = images.get(stem) or images.get(p.stem)
        if image is None:
            result.failed.append((p, f"LabelMe file {p} annotates {stem}, which is not in {reference}"))
            continue
        by_image.setdefault(image, []).append(p)
    for image, jsons in by_image.items():
        try:
            h, w = read_image(image).shape[:2]
        except DataError as err:
            result.failed += [(p, f"LabelMe file {p}: its image cannot be read ({err})") for p in jsons]
            continue
        merged = np.zeros((h, w), np.uint8)
        used = []
        for p in jsons:
            labels, _ = read_labelme(p, classes)
            if labels.shape != (h, w):
                result.failed.append((p, f"LabelMe file {p} is for a {labels.shape[1]}x{labels.shape[0]} image but "
                                         f"{image.name} is {w}x{h}"))
                continue
            merged = np.where(labels > 0, labels, merged)
            used.append(p)
        if not used:
            continue
        if len(used) > 1:
            result.notes.append(f"{image.name} is annotated by {len(used)} LabelMe files "
                                f"({', '.join(p.name for p in used)}); their shapes are merged into one mask")
        rel = image.parent.relative_to(reference) if reference.is_dir() else Path()
        target = out / rel / f"{image.stem}.png"
        write_png(target, merged * 255 if len(classes) == 1 else merged)
        result.written.append(target)
    if len(classes) > 1:
        write_text_atomic(out / "classes.json", json.dumps({str(v): k for k, v in classes.items()}, indent=2))
