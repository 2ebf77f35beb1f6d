"""Predict DICOM input with a :class:`~medseg.inference.predictor.Predictor`, series by series.

``medseg predict RUN INPUT --format png|dicom-seg|nifti`` for DICOM files or folders:

- ``png``: one mask per frame, named like ``medseg convert dicom`` names images
  (``<sub-folder>/<file stem>[_f003].png``; 0/255, or class values for several classes);
- ``dicom-seg``: one DICOM SEG per series (:mod:`medseg.io.dicom_seg`), ``series<N>_<tag>.seg.dcm``;
- ``nifti``: one label volume per series, ``series<N>_<tag>.nii.gz``, whose affine puts every voxel
  where its DICOM pixel is (slices in the order of the series).

Grey frames are windowed with the run's ``data.window`` (as in training). Series are named by a hash
of their UID (:func:`~medseg.io.dicom.series_tag`), never by patient data.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from medseg.errors import DataError, MedsegError
from medseg.inference.predictor import stream_predictions
from medseg.io.dicom import DicomFrame, check_image, decode, frame_rgb, is_dicom, read_dataset
from medseg.io.dicom_series import Series, has_dicom, scan_dicom
from medseg.io.images import write_png
from medseg.io.outputs import BatchResult
from medseg.progress import progress_bar

log = logging.getLogger(__name__)

FORMATS = ("png", "dicom-seg", "nifti")


def is_dicom_input(path: str | Path) -> bool:
    """A DICOM file, or a folder holding DICOM files (at any depth)."""
    path = Path(path)
    return is_dicom(path) if path.is_file() else path.is_dir() and has_dicom(path)


def segment_names(config) -> list[str]:
    """Segment names (label values 1..K-1): ``data.class_names`` without the background, else defaults."""
    from medseg.config import label_names

    return label_names(config)[1:]


def predict_series_labels(predictor, series: Series, *, progress=None,
                          failed: list[tuple[Path, str]] | None = None) -> tuple[Series, list[np.ndarray]]:
    """(the frames that could be read, H x W uint8 labels for each; 1 = foreground when binary).

    Frames stream through :func:`~medseg.inference.predictor.stream_predictions` (read one batch ahead,
    each file decoded once); a file that cannot be decoded goes to ``failed`` (path, message) once and
    its frames are left out.
    """
    window = predictor.config.data.window
    binary = int(predictor.config.model.classes) == 1
    cached: list = [None, None, None]  # path, dataset, pixels of the file read last (the reader thread's)

    def read(frame: DicomFrame) -> np.ndarray:
        if cached[0] != frame.path:
            cached[:] = frame.path, None, None
            ds = read_dataset(frame.path)
            check_image(ds, frame.path)
            cached[1:] = ds, decode(ds, frame.path)
        if cached[2] is None:
            raise DataError(f"{frame.path} could not be decoded")  # reported with the file's first frame
        return frame_rgb(cached[1], cached[2][frame.index], frame.index, window)

    out: list[np.ndarray] = []
    kept: list[DicomFrame] = []
    reported: set[Path] = set()
    for r in stream_predictions(predictor, series.frames, read=read):
        if progress is not None:
            progress.update(1)
        if r.error is not None:
            if failed is not None and r.item.path not in reported:
                failed.append((r.item.path, r.error))
            reported.add(r.item.path)
            continue
        mask = predictor.to_mask(r.proba)
        kept.append(r.item)
        out.append((mask > 0).astype(np.uint8) if binary else mask.astype(np.uint8))
    return Series(series.uid, kept), out


def series_name(series: Series) -> str:
    first = series.frames[0]
    try:
        number = int(read_dataset(first.path, pixels=False).get("SeriesNumber"))
    except (TypeError, ValueError, DataError):
        return f"series_{series.tag}"
    return f"series{number}_{series.tag}"


def predict_dicom(predictor, source: str | Path, out: str | Path, *, fmt: str = "png",
                  progress: bool = True) -> BatchResult:
    """Predict every DICOM series under ``source`` and write ``fmt`` outputs to ``out``."""
    if fmt not in FORMATS:
        raise MedsegError(f"--format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    source, out = Path(source), Path(out)
    scan = scan_dicom(source)
    result = BatchResult(failed=list(scan.failed))
    if not scan.series:
        raise DataError(f"no DICOM images in {source}" + (f" ({len(scan.failed)} files could not be used)"
                                                          if scan.failed else ""))
    bar = progress_bar(total=len(scan.frames), desc="predicting", unit="frame", enabled=progress)
    claimed: dict[Path, Path] = {}
    for series in scan.series:
        try:
            series, labels = predict_series_labels(predictor, series, progress=bar, failed=result.failed)
            if not series.frames:
                continue
            if fmt == "png":  # two files of one folder named alike (scan.dcm, scan) must not overwrite each other
                series, labels = _unclaimed(series, labels, source, out, claimed, result.failed)
            result.written += _write(predictor, series, labels, source, out, fmt)
            result.n_frames += len(series.frames)
        except (DataError, OSError) as err:
            message = str(err) if isinstance(err, DataError) else f"{type(err).__name__}: {err}"
            first = series.frames[0].path
            result.failed.append((first, f"series {series.tag} ({first}): {message}"))
            log.warning("series %s skipped: %s", series.tag, message)
    bar.close()
    return result


def _png_target(frame: DicomFrame, source: Path, out: Path) -> Path:
    rel = frame.path.parent.relative_to(source) if source.is_dir() else Path()
    return out / rel / f"{frame.name}.png"


def _unclaimed(series: Series, labels: list[np.ndarray], source: Path, out: Path, claimed: dict[Path, Path],
               failed: list[tuple[Path, str]]) -> tuple[Series, list[np.ndarray]]:
    """The frames whose PNG name no earlier file has taken; the others are reported by name."""
    from medseg.convert import claim_outputs

    keep_frames, keep_labels = [], []
    for frame, lab in zip(series.frames, labels, strict=True):
        clash = claim_outputs([_png_target(frame, source, out)], frame.path, claimed)
        if clash:
            if not any(p == frame.path for p, _ in failed):
                failed.append((frame.path, clash))
            continue
        keep_frames.append(frame)
        keep_labels.append(lab)
    return Series(series.uid, keep_frames), keep_labels


def _write(predictor, series: Series, labels: list[np.ndarray], source: Path, out: Path, fmt: str) -> list[Path]:
    if fmt == "png":
        binary = int(predictor.config.model.classes) == 1
        written = []
        for frame, lab in zip(series.frames, labels, strict=True):
            target = _png_target(frame, source, out)
            write_png(target, lab * 255 if binary else lab)
            written.append(target)
        return written
    if len({lab.shape for lab in labels}) > 1:
        raise DataError(f"series {series.tag} has frames of different sizes; a {fmt} volume needs one size "
                        "(use --format png)")
    labels = np.stack(labels)
    base = out / series_name(series)
    if fmt == "nifti":
        return [write_nifti(series.frames, labels, base.with_name(base.name + ".nii.gz"))]
    from medseg.io.dicom_seg import write_seg

    cfg = predictor.config
    files = series.files
    if len(files) != len(series.frames) and len(files) > 1:
        raise DataError(f"series {series.tag} mixes {len(files)} files with several frames each; "
                        "a SEG needs single-frame files or one multi-frame file")
    sources = [read_dataset(p, pixels=False) for p in files]
    if len(files) == 1 and len(series.frames) > 1:
        labels = labels[np.argsort([f.index for f in series.frames])]  # back to the file's frame order
    return [write_seg(sources, labels, base.with_name(base.name + ".seg.dcm"), **seg_description(cfg))]


def seg_description(cfg) -> dict:
    """The keyword arguments of :func:`~medseg.io.dicom_seg.write_seg` that describe the model."""
    from medseg._version import __version__
    from medseg.models.factory import model_label

    params = {"threshold": f"{cfg.infer.threshold:g}", "config": cfg.name[:40]}
    return {"segment_names": segment_names(cfg), "algorithm": f"medseg {model_label(cfg.model)}",
            "version": __version__, "parameters": params}


def nifti_geometry(frames: list[DicomFrame]) -> tuple[tuple, tuple, tuple, str]:
    """(origin, spacing, direction) in LPS for frames in stack order, and a note ("" when exact)."""
    g = frames[0].geometry
    if len({f.geometry.orientation for f in frames}) > 1:
        raise DataError(f"the frames of {frames[0].path.parent} lie in different orientations; a volume needs "
                        "one (use --format png)")
    if g.position is None or g.orientation is None or g.spacing is None or \
            any(f.geometry.position is None for f in frames):
        return (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), tuple(np.eye(3).ravel()), "no geometry in the DICOM; unit affine"
    row, col = np.asarray(g.orientation[:3]), np.asarray(g.orientation[3:])
    note = ""
    if len(frames) > 1:
        pos = np.asarray([f.geometry.position for f in frames])
        steps = np.diff(pos, axis=0)
        dz = float(np.linalg.norm(steps, axis=1).mean())
        normal = (pos[-1] - pos[0]) / max(np.linalg.norm(pos[-1] - pos[0]), 1e-9)
        if np.ptp(np.linalg.norm(steps, axis=1)) > 0.01 * max(dz, 1e-9):
            note = "slice spacing is not uniform; the NIfTI uses the mean"
    else:
        normal, dz = np.cross(row, col), float(g.thickness or 1.0)
    direction = np.stack([row, col, normal], axis=1)
    return tuple(g.position), (g.spacing[1], g.spacing[0], max(dz, 1e-6)), tuple(direction.ravel()), note


def write_nifti(frames: list[DicomFrame], labels: np.ndarray, path: Path) -> Path:
    """``labels`` (N x H x W, frames in stack order) as a compressed NIfTI with the DICOM geometry."""
    import SimpleITK as sitk

    origin, spacing, direction, note = nifti_geometry(frames)
    if note:
        log.warning("%s: %s", path.name, note)
    image = sitk.GetImageFromArray(np.ascontiguousarray(labels.astype(np.uint8)))
    image.SetOrigin(origin)
    image.SetSpacing(spacing)
    image.SetDirection(direction)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name[:-7]}.{os.getpid()}.tmp.nii.gz")
    try:
        sitk.WriteImage(image, str(tmp), useCompression=True)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
