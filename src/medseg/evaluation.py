"""Evaluate a trained run on a data folder: per-image metrics at the original size, and a summary."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal

from tqdm.auto import tqdm

from medseg.config import label_names
from medseg.data.layouts import Pair
from medseg.data.prepare import data_or_recorded, discover_and_check, pairs_for_split
from medseg.data.readers import TargetSpec, read_pair_image, read_pair_target
from medseg.errors import MedsegError
from medseg.inference.predictor import Predictor
from medseg.io.images import write_png
from medseg.io.outputs import check_outputs
from medseg.metrics import MetricAccumulator, MulticlassAccumulator, write_per_image_csv, write_summary_json

log = logging.getLogger(__name__)


def iter_pair_predictions(predictor: Predictor, pairs: list[Pair]) -> Iterator[tuple[Pair, Any, Any]]:
    """Yield (pair, image, probability map) for readable pairs, reading the next batch in a thread.

    Pairs (not paths) so that frames of multi-frame DICOM files work; DICOM images are windowed with the
    run's ``data.window``. Unreadable images are logged and skipped.
    """
    bs = predictor.config.infer.batch_size
    window = predictor.config.data.window
    chunks = [pairs[i : i + bs] for i in range(0, len(pairs), bs)]

    def read(chunk: list[Pair]) -> list[tuple[Pair, Any]]:
        out = []
        for pair in chunk:
            try:
                out.append((pair, read_pair_image(pair, window)))
            except MedsegError as err:
                log.warning("skipped %s", err)
        return out

    with ThreadPoolExecutor(max_workers=1) as reader:
        pending = reader.submit(read, chunks[0]) if chunks else None
        for i in range(len(chunks)):
            loaded = pending.result()
            pending = reader.submit(read, chunks[i + 1]) if i + 1 < len(chunks) else None
            if loaded:
                probas = predictor.predict_proba_batch([img for _, img in loaded])
                for (pair, image), proba in zip(loaded, probas, strict=True):
                    yield pair, image, proba


def evaluate(
    run: str | Path,
    data: str | Path | None = None,
    *,
    split: str = "val",
    out: str | Path | None = None,
    images: str | Path | None = None,
    masks: str | Path | None = None,
    manifest: str | Path | None = None,
    overlays: int | Literal["all"] = 0,
    overrides: list[str] | dict[str, Any] | None = None,
    progress: bool = True,
    predictor: Predictor | None = None,
) -> dict[str, Any]:
    """Predict every image of ``split`` and compare with its mask; writes per_image.csv and summary.json.

    ``data`` (or ``images`` + ``masks``, or ``manifest``) defaults to the data the run was trained on
    (recorded in ``RUN/data_source.json``). ``split`` is train, val, test or all; a data set without
    its own split uses the run's ``splits.csv``. Masks are read as the run was trained
    (``data.invert_masks``, ``data.palette``, label maps for ``model.classes`` > 1); multi-class runs
    get per-class metrics and their macro means (:class:`~medseg.metrics.MulticlassAccumulator`). A mask
    that cannot be read is logged and skipped. ``overrides`` change inference settings
    (``["infer.threshold=0.4"]``). ``overlays``: 0 writes none, N writes the N worst images by Dice,
    ``"all"`` one per image, to ``out/overlays/<case>_dice0.87.png`` (prediction red/yellow, truth green).
    ``out`` defaults to ``RUN/eval_<split>``.

    Returns the summary dict (``dice``, ``iou``, ``sensitivity``, ... means over images in [0, 1],
    ``n_images``). Raises DataError (no data, no pairs in the split) or CheckpointError (bad run).
    """
    run = Path(run)
    predictor = predictor or Predictor.load(run, overrides=overrides)
    run_dir = run if run.is_dir() else run.parent
    given = data_or_recorded(run, data, images, masks, manifest)
    data, images, masks, manifest = (given[k] for k in ("data", "images", "masks", "manifest"))
    out = Path(out) if out else run_dir / f"eval_{split}"
    report = discover_and_check(data, images=images, masks=masks, manifest=manifest, progress=False)
    read = [f for p in report.index.pairs for f in (p.image, p.mask) if f is not None]
    check_outputs([(run, out / "per_image.csv"), (run, out / "summary.json")], inputs=read, what="report")
    pairs = pairs_for_split(report, split, run if run.is_dir() else None)
    cfg = predictor.config
    spec = TargetSpec.from_config(cfg)  # the run's own reading of masks: classes, palette, inversion
    multiclass = cfg.model.classes > 1
    colours = None
    if overlays:
        from medseg.inference.overlay import class_colours, make_overlay

        colours = class_colours(cfg) if multiclass else None
    acc = MulticlassAccumulator(label_names(cfg)) if multiclass else MetricAccumulator()
    bar = tqdm(total=len(pairs), desc=f"evaluating {split}", unit="img", disable=not progress)
    worst: list[tuple[float, str, Any, Any, Any]] = []
    for pair, image, proba in iter_pair_predictions(predictor, pairs):
        bar.update(1)
        try:
            truth = read_pair_target(pair, spec)
        except MedsegError as err:
            log.warning("skipped %s", err)
            continue
        mask = predictor.to_mask(proba)
        pred = mask if multiclass else mask > 0
        dice = acc.update(pair.case_id, pred, truth)["dice"]
        if overlays == "all":  # written at once: memory does not grow with the number of images
            write_png(out / "overlays" / f"{pair.case_id}_dice{dice:.2f}.png",
                      make_overlay(image, pred, truth=truth, colours=colours))
        elif overlays:
            worst.append((dice, pair.case_id, image, pred, truth))
            worst = sorted(worst, key=lambda w: w[0])[:overlays]
    bar.close()
    summary = acc.aggregate()
    summary.update(split=split, threshold=predictor.threshold, checkpoint=predictor.source,
                   data=str(data or images or manifest))
    write_per_image_csv(out / "per_image.csv", acc.rows())
    write_summary_json(out / "summary.json", summary)
    for dice, case_id, image, pred, truth in worst:
        write_png(out / "overlays" / f"{case_id}_dice{dice:.2f}.png",
                  make_overlay(image, pred, truth=truth, colours=colours))
    log.info("wrote %s and %s", out / "per_image.csv", out / "summary.json")
    return summary
