"""Segment one complete run of received instances and write its DICOM SEG file(s).

The masks are those of ``medseg predict --format dicom-seg`` (same Predictor, same
:func:`~medseg.inference.dicom_prediction.predict_series_labels`, same SEG description). Where the
source images have a Frame of Reference, one SEG references every image of the series; where they
have none (CR, DX, secondary capture, photographs), each single-frame image gets its own SEG, all in
one new SEG series (highdicom, like the standard's 2-D rules, only ties an image without a Frame of
Reference to a SEG frame of the same single image: PS3.3 C.8.20.2).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medseg.errors import DataError
from medseg.inference.dicom_prediction import predict_series_labels, seg_description, series_name
from medseg.io.dicom import read_dataset
from medseg.io.dicom_seg import write_seg
from medseg.io.dicom_series import Series, scan_dicom


def segment_run(predictor, run: str | Path, out: str | Path, *, suffix: str = "") -> tuple[list[Path], list[str]]:
    """Predict every series of the DICOM files in ``run``; SEG files go to ``out``.

    Returns (SEG files written, problems: one sentence each, naming the spool file, never patient data).
    File names: ``series<N>_<tag><suffix>.seg.dcm``, with ``_<i>`` before ``.seg.dcm`` when each image
    has its own SEG.
    """
    out = Path(out)
    scan = scan_dicom(run)
    problems = [message for _, message in scan.failed]
    written: list[Path] = []
    for series in scan.series:
        failed: list[tuple[Path, str]] = []
        try:
            kept, labels = predict_series_labels(predictor, series, failed=failed)
            problems += [message for _, message in failed]
            if kept.frames:
                written += write_series_segs(predictor, kept, labels, out / f"{series_name(kept)}{suffix}",
                                             problems=problems)
        except DataError as err:
            problems.append(str(err))
    return written, problems


def write_series_segs(predictor, series: Series, labels: list[np.ndarray], base: Path, *,
                      problems: list[str] | None = None) -> list[Path]:
    """One SEG for the series (``base.seg.dcm``), or one per image (``base_001.seg.dcm`` ...) when the
    images have no Frame of Reference; images that cannot have one go to ``problems``.
    DataError when no SEG could be written."""
    import highdicom as hd

    describe = seg_description(predictor.config)
    files = series.files
    sources = [read_dataset(p, pixels=False) for p in files]
    if all("FrameOfReferenceUID" in ds for ds in sources):
        if len({lab.shape for lab in labels}) > 1:
            raise DataError(f"series {series.tag} has images of different sizes; one SEG needs one size")
        if len(files) != len(series.frames) and len(files) > 1:
            raise DataError(f"series {series.tag} mixes {len(files)} files with several frames each; "
                            "a SEG needs single-frame files or one multi-frame file")
        stack = np.stack(labels)
        if len(files) == 1 and len(series.frames) > 1:
            stack = stack[np.argsort([f.index for f in series.frames])]  # back to the file's frame order
        return [write_seg(sources, stack, base.with_name(base.name + ".seg.dcm"), **describe)]
    by_file: dict[Path, list[np.ndarray]] = {}
    for frame, lab in zip(series.frames, labels, strict=True):
        by_file.setdefault(frame.path, []).append(lab)
    uid, written, errors = hd.UID(), [], []
    for i, (ds, path) in enumerate(zip(sources, files, strict=True), start=1):
        if len(by_file[path]) != 1:
            errors.append(f"{path.name} has {len(by_file[path])} frames and no Frame of Reference UID; "
                          "a SEG can only reference a single frame of such an image")
            continue
        target = base.with_name(f"{base.name}_{i:03d}.seg.dcm")
        try:
            written.append(write_seg([ds], by_file[path][0][None], target, series_instance_uid=uid,
                                     instance_number=i, **describe))
        except DataError as err:
            errors.append(f"{path.name}: {err}")
    if not written:
        raise DataError(f"no SEG could be written ({'; '.join(errors)})")
    if problems is not None:
        problems += errors
    return written
