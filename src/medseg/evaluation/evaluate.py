"""Evaluate a trained run on a data folder: per-image metrics at the original size, and a summary.

Per image: the pixel metrics of :mod:`medseg.metrics` (inside the region of interest when the pair has
one), surface distances (:mod:`medseg.evaluation.surface`; pixels, and millimetres when the pixel
spacing is known), and with ``qc`` the failure-flag score (:mod:`medseg.evaluation.qc`). Dataset: the
means, pooled pixel AUC-ROC / average precision / ECE for binary runs
(:mod:`medseg.evaluation.pixel_scores`), and a 95 % bootstrap interval over images for every figure
(``ci95`` in summary.json, :mod:`medseg.evaluation.stats`).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, Literal

import numpy as np

from medseg.config import label_names
from medseg.data.pairs import Pair
from medseg.data.prepare import discover_and_check, pairs_for_split, unusable_in_split
from medseg.data.readers import TargetSpec, read_pair_target
from medseg.data.source import DataSource
from medseg.errors import DataError, MedsegError
from medseg.evaluation.intervals import add_intervals
from medseg.evaluation.surface import SURFACE_NAMES, surface_metrics
from medseg.inference.predictor import Predictor
from medseg.io.images import load_mask, write_png
from medseg.io.outputs import check_outputs
from medseg.io.tables import write_per_image_csv, write_summary_json
from medseg.metrics import MetricAccumulator, MulticlassAccumulator, image_metrics
from medseg.progress import progress_bar

log = logging.getLogger(__name__)


def pair_spacing(pair: Pair) -> tuple[float, float] | None:
    """(row, column) pixel spacing in mm of a DICOM image: PixelSpacing (per-frame functional groups
    first), else ImagerPixelSpacing (projection radiography, DICOM PS3.3 C.8.11.4); None otherwise."""
    from medseg.io.dicom import is_dicom

    if not is_dicom(pair.image):
        return None
    try:
        import pydicom

        from medseg.io.dicom import frames_of

        frame = frames_of(pair.image)[(pair.frame or 1) - 1]
        if frame.geometry.spacing:
            return frame.geometry.spacing
        ds = pydicom.dcmread(pair.image, stop_before_pixels=True)
        value = [float(v) for v in ds.get("ImagerPixelSpacing") or []]
        return (value[0], value[1]) if len(value) == 2 and min(value) > 0 else None
    except Exception as err:  # spacing is optional: fall back to pixels
        log.debug("no pixel spacing for %s: %s", pair.case_id, err)
        return None


def read_roi(pair: Pair, shape: tuple[int, int]) -> np.ndarray | None:
    """The pair's region of interest as an HxW bool array (None without one); DataError if unusable."""
    if pair.roi is None:
        return None
    roi, info = load_mask(pair.roi, subject=f"region of interest for {pair.case_id}")
    if roi is None or roi.shape != shape or not roi.any():
        raise DataError(info.message if roi is None else f"region of interest {pair.roi} is empty or not the "
                        f"size of its image ({shape[1]}x{shape[0]})")
    return roi != 0


def score_image(acc, case_id: str, pred: np.ndarray, truth: np.ndarray, roi: np.ndarray | None, *,
                multiclass: bool, extra=None) -> dict[str, float]:
    """Score one image into ``acc``: pixel metrics inside ``roi`` (when given), boundaries of the masks cut
    to it in 2D (surface distances of multi-class images with a ROI are not computed)."""
    if roi is None:
        return acc.update(case_id, pred, truth, extra=extra)
    if multiclass:
        return acc.update(case_id, pred[roi], truth[roi])
    metrics = image_metrics(pred[roi], truth[roi])
    if extra is not None:
        metrics.update(extra(pred & roi, (truth != 0) & roi))
    return acc.add(case_id, metrics)


def surface_extra(spacing, tol_px: float = 2.0, tol_mm: float = 1.0, with_mm: bool = False):
    """Surface metrics in pixels, plus millimetres when any image has a spacing (NaN for those without)."""
    def extra(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
        out = surface_metrics(pred, truth, tolerance=tol_px)
        if spacing is not None:
            mm = surface_metrics(pred, truth, spacing=spacing, tolerance=tol_mm)
            out.update({f"{k}_mm": v for k, v in mm.items()})
        elif with_mm:
            out.update({f"{k}_mm": math.nan for k in SURFACE_NAMES})
        return out
    return extra


def evaluate(run: str | Path, data: DataSource | str | Path | None = None, *, split: str = "val",
             out: str | Path | None = None, overlays: int | Literal["all"] = 0,
             overrides: list[str] | dict[str, Any] | None = None, progress: bool = True,
             predictor: Predictor | None = None, spacing: tuple[float, float] | None = None, tolerance_px: float = 2.0,
             tolerance_mm: float = 1.0, surface: bool = True, qc: bool = False, n_resamples: int = 2000,
             seed: int = 0) -> dict[str, Any]:
    """Predict every image of ``split`` and compare with its mask; writes per_image.csv and summary.json.

    ``data`` (a :class:`~medseg.data.source.DataSource` or a data folder) defaults to the data the run
    was trained on (recorded in ``RUN/data_source.json``). ``split`` is train, val, test or all; a data set without
    its own split uses the run's ``splits.csv``. Masks are read as the run was trained
    (``data.invert_masks``, ``data.palette``, label maps for ``model.classes`` > 1); multi-class runs
    get per-class metrics and their macro means (:class:`~medseg.metrics.MulticlassAccumulator`). A
    mask that cannot be read is logged and skipped. ``overrides`` change inference settings
    (``["infer.threshold=0.4"]``). Pixel metrics count only inside a pair's region of interest
    (``Pair.roi``, e.g. DRIVE's field of view). ``surface`` adds ``hd95``/``assd``/``nsd`` in pixels
    (NSD at ``tolerance_px``) and, where the pixel spacing is known (``spacing`` = (row, column) mm for
    every image, else DICOM PixelSpacing / ImagerPixelSpacing), ``*_mm`` columns (NSD at
    ``tolerance_mm``). ``qc`` turns TTA on, scores each image's failure flag and calibrates its
    threshold (``qc.json``). ``overlays``: 0 writes none, N the N worst images by Dice, ``"all"`` one
    per image, to ``out/overlays/<case>_dice0.87.png`` (prediction red/yellow, truth green). ``out``
    defaults to ``RUN/eval_<split>``. Every summary figure gets a percentile-bootstrap 95 % interval
    over images (``ci95``; ``n_resamples`` seeded by ``seed``).

    Returns the summary dict (``dice``, ``iou``, ``sensitivity``, ... means over images in [0, 1],
    ``n_images``, ``ci95``). Raises DataError (no data, no pairs in the split) or CheckpointError.
    """
    from medseg.evaluation.pixel_scores import image_histograms, pooled_scores

    run = Path(run)
    if predictor is None:
        extra = (["infer.tta=true"] if qc else []) + list(overrides or [])
        predictor = Predictor.load(run, overrides=extra or None)
    if qc and predictor.plan.members(predictor.backend.flips) < 2:
        raise MedsegError("the failure flag (--qc) needs test-time augmentation with at least two members; "
                          "set infer.tta_flips or infer.tta_scales")
    run_dir = run if run.is_dir() else run.parent
    source = DataSource.of(data).or_recorded(run)
    out = Path(out) if out else run_dir / f"eval_{split}"
    report = discover_and_check(source, progress=False)
    read = [f for p in report.index.pairs for f in (p.image, p.mask, p.roi) if f is not None]
    check_outputs([(run, out / "per_image.csv"), (run, out / "summary.json")], inputs=read, what="report")
    pairs = pairs_for_split(report, split, run if run.is_dir() else None)
    cfg = predictor.config
    spec = TargetSpec.from_config(cfg)  # the run's own reading of masks: classes, palette, inversion
    multiclass = cfg.model.classes > 1
    if overlays:
        from medseg.inference.overlay import class_colours, make_overlay
    colours = class_colours(cfg) if overlays and multiclass else None
    spacings = {p.case_id: spacing or pair_spacing(p) for p in pairs} if surface else {}
    n_spacing = sum(v is not None for v in spacings.values())
    extra_names = (SURFACE_NAMES + (tuple(f"{k}_mm" for k in SURFACE_NAMES) if n_spacing else ())) if surface else ()
    acc = MulticlassAccumulator(label_names(cfg), extra_names) if multiclass else MetricAccumulator(extra_names)
    bar = progress_bar(total=len(pairs), desc=f"evaluating {split}", unit="img", enabled=progress)
    worst: list[tuple[float, str, Any, Any, Any]] = []
    hists: list[np.ndarray] = []
    qc_scores: list[float] = []
    n_roi = 0
    # case ids (file names, never patient data) of what could not be read; the errors are logged
    failed = unusable_in_split(report, split, run if run.is_dir() else None)
    for r in predictor.stream_pairs(pairs, uncertainty=qc):
        bar.update(1)
        if r.error is not None:
            failed.append(r.item.case_id)
            continue
        pair, image, proba, std = r.item, r.image, r.proba, r.uncertainty
        try:
            truth = read_pair_target(pair, spec)
            roi = read_roi(pair, truth.shape)
        except MedsegError as err:
            log.warning("skipped %s", err)
            failed.append(pair.case_id)
            continue
        mask = predictor.to_mask(proba)
        pred = mask if multiclass else mask > 0
        extra = surface_extra(spacings[pair.case_id], tolerance_px, tolerance_mm, n_spacing > 0) if surface else None
        n_roi += roi is not None
        metrics = score_image(acc, pair.case_id, pred, truth, roi, multiclass=multiclass, extra=extra)
        if not multiclass:
            hists.append(image_histograms(proba, truth, roi))
        if qc:
            from medseg.inference.tta import qc_score

            qc_scores.append(qc_score(proba, std, predictor.threshold, roi))
        dice = metrics["dice"]
        if overlays == "all":  # written at once: memory does not grow with the number of images
            write_png(out / "overlays" / f"{pair.case_id}_dice{dice:.2f}.png",
                      make_overlay(image, pred, truth=truth, colours=colours))
        elif overlays:
            worst.append((dice, pair.case_id, image, pred, truth))
            worst = sorted(worst, key=lambda w: w[0])[:overlays]
    bar.close()
    rows = acc.rows()
    summary = acc.aggregate()
    if surface:
        summary.update(surface_unit="px" + (" and mm" if n_spacing else ""), tolerance_px=tolerance_px,
                       tolerance_mm=tolerance_mm if n_spacing else None, n_images_mm=n_spacing,
                       n_surface_one_empty=sum((r.get("fg_pred", 1) == 0) != (r.get("fg_true", 1) == 0) for r in rows))
    summary.update(n_images_roi=n_roi, n_failed=len(failed), failed=sorted(failed))
    add_intervals(summary, acc, n_resamples=n_resamples, seed=seed)
    if hists:
        scores = pooled_scores(np.stack(hists), n_resamples=n_resamples, seed=seed)
        summary["ci95"].update(scores.pop("ci95", {}))
        summary.update(scores)
    if qc:
        from medseg.evaluation.qc import calibrate, write_qc

        summary["qc"] = calibrate(np.array(qc_scores), np.array([r["iou"] for r in rows]), seed=seed)
        for row, score in zip(rows, qc_scores, strict=True):
            row.update(qc_score=score, qc_flag=int(score >= summary["qc"]["threshold"]))
        write_qc(out / "qc.json", summary["qc"])
    summary.update(split=split, threshold=predictor.threshold, checkpoint=predictor.source,
                   data=str(source), tta=predictor.plan.members(predictor.backend.flips) > 1)
    write_per_image_csv(out / "per_image.csv", rows)
    write_summary_json(out / "summary.json", summary)
    for dice, case_id, image, pred, truth in worst:
        write_png(out / "overlays" / f"{case_id}_dice{dice:.2f}.png",
                  make_overlay(image, pred, truth=truth, colours=colours))
    log.info("wrote %s and %s", out / "per_image.csv", out / "summary.json")
    return summary
