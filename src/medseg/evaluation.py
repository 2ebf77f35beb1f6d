"""Evaluate a trained run on a data folder: per-image metrics at the original size, and a summary."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from medseg.data.prepare import discover_and_check, pairs_for_split
from medseg.inference.predictor import Predictor
from medseg.io.images import read_mask, write_png
from medseg.metrics import MetricAccumulator, write_per_image_csv, write_summary_json

log = logging.getLogger(__name__)


def evaluate(
    run: str | Path,
    data: str | Path | None,
    *,
    split: str = "val",
    out: str | Path | None = None,
    images: str | Path | None = None,
    masks: str | Path | None = None,
    manifest: str | Path | None = None,
    overlays: int = 0,
    progress: bool = True,
    predictor: Predictor | None = None,
) -> dict[str, Any]:
    """Predict every image of ``split`` and compare with its mask; writes per_image.csv and summary.json.

    ``overlays`` > 0 also writes that many overlays (prediction in red/yellow, truth in green) of the
    worst images by Dice to ``out/overlays``. Returns the summary dict.
    """
    run = Path(run)
    predictor = predictor or Predictor.load(run)
    out = Path(out) if out else (run if run.is_dir() else run.parent) / f"eval_{split}"
    report = discover_and_check(data, images=images, masks=masks, manifest=manifest, progress=False)
    pairs = pairs_for_split(report, split, run if run.is_dir() else None)
    by_image = {p.image: p for p in pairs}
    acc = MetricAccumulator()
    bar = tqdm(total=len(pairs), desc=f"evaluating {split}", unit="img", disable=not progress)
    worst: list[tuple[float, str, Any, Any, Any]] = []
    for path, image, proba in predictor.iter_predictions(
        [p.image for p in pairs], on_error=lambda p, m: log.warning("skipped %s", m)
    ):
        pair = by_image[path]
        truth = read_mask(pair.mask)
        pred = predictor.to_mask(proba) > 0
        acc.update(pair.case_id, pred, truth)
        if overlays:
            dice = acc.rows()[-1]["dice"]
            worst.append((dice, pair.case_id, image, pred, truth))
            worst = sorted(worst, key=lambda w: w[0])[:overlays]
        bar.update(1)
    bar.close()
    summary = acc.aggregate()
    summary.update(split=split, threshold=predictor.threshold, checkpoint=predictor.source,
                   data=str(data or images))
    write_per_image_csv(out / "per_image.csv", acc.rows())
    write_summary_json(out / "summary.json", summary)
    if worst:
        from medseg.inference.overlay import make_overlay

        for dice, case_id, image, pred, truth in worst:
            write_png(out / "overlays" / f"{case_id}_dice{dice:.2f}.png", make_overlay(image, pred, truth=truth))
    log.info("wrote %s and %s", out / "per_image.csv", out / "summary.json")
    return summary
