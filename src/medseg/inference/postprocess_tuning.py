"""Tune the threshold and post-processing on validation data; keep only what improves Dice (as nnU-Net).

The validation probabilities are computed once (with the run's inference settings, TTA included),
then each candidate is scored by mean per-image Dice at the original resolution:

1. dense CRF refinement of the probabilities (when pydensecrf2 is installed)
2. threshold: the best of 0.20, 0.25, ..., 0.80, kept if it beats the current threshold
3. largest component, then fill holes, then removal of small objects (best of a few sizes)

Each is kept only if it raises mean Dice over everything kept so far.

The choice is written into the run's checkpoint config (``infer`` section) and ``config.yaml``, so
``medseg predict``, ``medseg.load``, evaluation and export all use it, and the trials go to
``RUN/postprocess.json``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from medseg.config import save_config, validate
from medseg.data.source import DataSource
from medseg.engine.checkpoint import load_checkpoint, resolve_checkpoint, write_payload
from medseg.errors import MedsegError
from medseg.inference.postprocess import Postprocess
from medseg.inference.predictor import Predictor
from medseg.io.files import write_text_atomic
from medseg.metrics import mask_dice
from medseg.progress import progress_bar

log = logging.getLogger(__name__)

THRESHOLDS = tuple(round(t, 2) for t in np.arange(0.20, 0.801, 0.05))
MIN_OBJECT_FRACTIONS = (0.0005, 0.001, 0.0025, 0.005, 0.01)
REPORT_FILE = "postprocess.json"


def mean_dice(pp: Postprocess, probas: list[np.ndarray], truths: list[np.ndarray]) -> float:
    return float(np.mean([mask_dice(pp(p), t) for p, t in zip(probas, truths, strict=True)]))


def search(probas: list[np.ndarray], truths: list[np.ndarray], start: Postprocess,
           crf_probas: list[np.ndarray] | None = None) -> tuple[Postprocess, bool, list[dict[str, Any]]]:
    """Greedy search from ``start``'s threshold with every step off; returns (choice, use CRF, trials).

    ``crf_probas``: the same probabilities refined by the dense CRF, to try that step first.
    """
    best = Postprocess(threshold=start.threshold)
    score = mean_dice(best, probas, truths)
    trials: list[dict[str, Any]] = [{"step": "baseline", "setting": best.describe(), "dice": score, "kept": True}]
    use_crf = False
    if crf_probas is not None:
        crf_score = mean_dice(best, crf_probas, truths)
        use_crf = crf_score > score
        trials.append({"step": "dense CRF", "setting": "CRF, " + best.describe(), "dice": crf_score,
                       "kept": use_crf})
        if use_crf:
            probas, score = crf_probas, crf_score

    def consider(step: str, candidate: Postprocess, cand_score: float, **extra: Any) -> None:
        nonlocal best, score
        kept = cand_score > score
        trials.append({"step": step, "setting": candidate.describe(), "dice": cand_score, "kept": kept, **extra})
        if kept:
            best, score = candidate, cand_score

    grid = {t: mean_dice(best.with_(threshold=t), probas, truths) for t in THRESHOLDS}
    t_best = max(grid, key=lambda t: (grid[t], -abs(t - 0.5)))
    consider("threshold", best.with_(threshold=t_best), grid[t_best], grid={str(t): d for t, d in grid.items()})
    for step, change in (("largest component", {"largest_component": True}), ("fill holes", {"fill_holes": True})):
        candidate = best.with_(**change)
        consider(step, candidate, mean_dice(candidate, probas, truths))
    if not best.largest_component:  # one object left: removing small ones changes nothing
        sizes = {f: mean_dice(best.with_(min_object_fraction=f), probas, truths) for f in MIN_OBJECT_FRACTIONS}
        f_best = max(sizes, key=sizes.get)
        consider("remove small objects", best.with_(min_object_fraction=f_best), sizes[f_best],
                 grid={str(f): d for f, d in sizes.items()})
    return best, use_crf, trials


def collect(predictor: Predictor, pairs, *, progress: bool = True, crf: bool = False
            ) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray] | None, list[str]]:
    """Foreground probabilities, true masks (bool), with ``crf`` CRF-refined probabilities of ``pairs``, and
    the case ids of the pairs that could not be read (their errors are logged)."""
    from medseg.data.readers import TargetSpec, read_pair_target

    spec = TargetSpec.from_config(predictor.config)  # masks read as the run trained (data.invert_masks)
    probas, truths, refined, failed = [], [], [], []
    bar = progress_bar(total=len(pairs), desc="predicting validation", unit="img", enabled=progress)
    for r in predictor.stream_pairs(pairs):
        bar.update(1)
        if r.error is not None:
            failed.append(r.item.case_id)
            continue
        pair, image, proba = r.item, r.image, r.proba
        if proba.ndim != 2:
            raise MedsegError("post-processing tuning handles one foreground class; this model has several")
        try:
            truth = read_pair_target(pair, spec) > 0
        except MedsegError as err:
            log.warning("skipped %s", err)
            failed.append(pair.case_id)
            continue
        probas.append(proba)
        truths.append(truth)
        if crf:
            from medseg.inference.crf import crf_refine

            refined.append(crf_refine(image, proba))
    bar.close()
    return probas, truths, (refined if crf else None), failed


def store_in_run(run: str | Path, settings: dict[str, Any]) -> Path:
    """Write ``settings`` into the ``infer`` config of the run's checkpoint and its config.yaml."""
    file = resolve_checkpoint(run)
    payload = load_checkpoint(file)
    payload.pop("path", None)
    payload["config"]["infer"] = {**payload["config"].get("infer", {}), **settings}
    cfg = validate(payload["config"])
    payload["config"] = cfg.model_dump(mode="json")
    write_payload(file, payload)
    if (file.parent / "config.yaml").is_file():
        save_config(cfg, file.parent / "config.yaml")
    return file


def tune_postprocess(run: str | Path, data: DataSource | str | Path | None = None, *, split: str = "val",
                     progress: bool = True, store: bool = True) -> dict[str, Any]:
    """Search threshold and post-processing on ``split`` of ``data`` (default: the data the run was trained
    on); store the choice in ``run``."""
    from medseg.data.prepare import discover_and_check, pairs_for_split, unusable_in_split

    run = Path(run)
    if run.suffix.lower() == ".onnx":
        raise MedsegError(f"{run} is an ONNX file; tune the run it was exported from, then export again")
    from medseg.inference.crf import crf_available

    loaded = Predictor.load(run)
    start, had_crf = loaded.postprocess, loaded.config.infer.crf
    predictor = loaded.with_overrides(["infer.crf=false"])  # raw probabilities; the CRF is one of the candidates
    report = discover_and_check(DataSource.of(data).or_recorded(run), progress=False)
    pairs = pairs_for_split(report, split, run if run.is_dir() else run.parent)
    probas, truths, refined, failed = collect(predictor, pairs, progress=progress, crf=crf_available())
    failed = sorted(failed + unusable_in_split(report, split, run if run.is_dir() else run.parent))
    before = mean_dice(start, refined if had_crf and refined else probas, truths)
    choice, use_crf, trials = search(probas, truths, start, refined)
    settings = {**choice.as_infer_settings(), "crf": use_crf}
    after = mean_dice(choice, refined if use_crf else probas, truths)
    result = {"split": split, "n_images": len(probas), "n_failed": len(failed), "failed": failed,
              "dice_before": before, "setting_before": start.describe(),
              "dice_after": after, "setting_after": ("CRF, " if use_crf else "") + choice.describe(),
              "infer": settings, "trials": trials, "predictor": predictor.describe(),
              "crf_tried": refined is not None}
    if store:
        file = store_in_run(run, settings)
        result["stored_in"] = str(file)
        write_text_atomic(file.parent / REPORT_FILE, json.dumps(result, indent=2) + "\n")
        log.info("post-processing %s stored in %s", result["setting_after"], file)
    return result
