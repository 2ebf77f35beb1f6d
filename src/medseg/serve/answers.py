"""Build one request's answer in the worker thread, from the Predictor's probabilities.

Masks come from :meth:`Predictor.to_mask` (threshold and the run's post-processing), exactly as
``medseg predict`` makes them; the formats are listed in :data:`medseg.serve.outputs.MEDIA_TYPES`.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from medseg.serve import outputs
from medseg.serve.pool import Job


@dataclass
class Answer:
    """Either a file (``body`` + ``media_type``) or a JSON ``payload`` that the handler completes."""

    media_type: str
    body: bytes = b""
    payload: dict[str, Any] | None = None


def summary(job: Job, mask: np.ndarray, model_id: str) -> dict[str, Any]:
    """The JSON answer: input size, threshold, model id and per-class area, bbox, RLE, polygons."""
    predictor, upload = job.predictor, job.upload
    h, w = mask.shape[:2]
    return {
        "model": model_id,
        "threshold": predictor.threshold,
        "tta": job.tta,
        "postprocess": predictor.postprocess.describe(),
        "input": {"kind": upload.kind, "width": int(w), "height": int(h), "frames": len(upload.frames),
                  "frame": (job.frame or 0) + 1},
        "classes": outputs.class_summaries(mask, predictor.config, upload.spacing_mm),
        **({"qc": qc_answer(job.qc, getattr(predictor, "source", None))} if job.qc else {}),
    }


@lru_cache(maxsize=8)
def _calibration(source: str) -> dict[str, Any] | None:
    from medseg.evaluation.qc import find_calibration

    return find_calibration(source)


def qc_answer(scores: list[float], source: str | Path | None) -> dict[str, Any]:
    """The per-image failure flag of a TTA answer: the members' disagreement score of the segmented
    frame (or every frame), and, when the run holds a calibration (``qc.json`` from ``medseg evaluate
    --qc``), its threshold and whether this image is likely below Jaccard 0.65."""
    calibration = _calibration(str(source)) if source else None
    threshold = calibration.get("threshold") if calibration else None
    score = scores[0] if len(scores) == 1 else max(scores)
    return {"score": round(float(score), 6), "frame_scores": [round(float(s), 6) for s in scores],
            "threshold": threshold, "likely_failure": None if threshold is None else bool(score >= threshold),
            "auroc": calibration.get("auroc") if calibration else None}


def build_answer(job: Job, probas: list[np.ndarray], workdir: Path, *, fmt: str, model_id: str,
                 mask_in_json: bool = False) -> Answer:
    """The answer in ``fmt`` (png, json, overlay, probability, dicom-seg, viewer) for one job."""
    predictor, cfg = job.predictor, job.predictor.config
    masks = [predictor.to_mask(p) for p in probas]
    dicom = job.kind == "dicom"
    media = outputs.MEDIA_TYPES[fmt]
    if fmt == "dicom-seg":  # asked of DICOM uploads only (the app answers 406 to others)
        return Answer(media, outputs.dicom_seg_bytes(job.upload.dataset, masks, cfg, workdir))
    image, mask, proba = job.images()[0], masks[0], probas[0]
    if fmt == "png":
        return Answer(media, outputs.mask_png(mask, cfg, workdir, dicom=dicom))
    if fmt == "overlay":
        return Answer(media, outputs.overlay_png(image, mask, cfg, workdir))
    if fmt == "probability":
        return Answer(media, outputs.png_bytes(outputs.probability_image(proba), workdir))
    payload = summary(job, mask, model_id)
    if fmt == "viewer" or mask_in_json:
        payload["mask_png"] = outputs.b64(outputs.mask_png(mask, cfg, workdir, dicom=dicom))
    if fmt == "viewer":
        payload["probability_png"] = outputs.b64(outputs.png_bytes(outputs.probability_image(proba), workdir))
        payload["image_jpeg"] = outputs.b64(outputs.jpeg_bytes(image))
    return Answer(media, payload=payload)
