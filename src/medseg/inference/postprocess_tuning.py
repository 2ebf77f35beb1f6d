"""Tune the threshold and post-processing on validation data; keep only what improves Dice (as nnU-Net).

The validation probabilities are computed once (with the run's inference settings, TTA included),
then each candidate is scored by mean per-image Dice at the original resolution:

1. dense CRF refinement of the probabilities (when pydensecrf2 is installed)
2. threshold: the best of 0.20, 0.25, ..., 0.80, kept if it beats the current threshold
3. largest component, then fill holes, then removal of small objects (best of a few sizes)

Each is kept only if it raises mean Dice over everything kept so far. When the run does not use TTA yet,
the same search also runs on flip-TTA probabilities (the mean over the image and its left-right and
up-down flips, nnU-Net's mirroring at inference; ``infer.tta`` with scale 1 only), and flip TTA is kept
when its best Dice beats the plain best by at least :data:`MIN_TTA_GAIN`, since it triples the network's
work at inference.

The choice is written into the run's checkpoint config (``infer`` section) and ``config.yaml``, so
``medseg predict``, ``medseg.load``, evaluation and export all use it, and the trials go to
``RUN/postprocess.json``.

``medseg train`` runs the same search at its end (:func:`tune_after_training`, ``train.tune_postprocess``)
on the val split, inside the time budget; ``medseg tune-postprocess RUN`` later replaces its choice.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from medseg.config import save_config, validate
from medseg.data.source import DataSource
from medseg.engine.budget import RunBudget, spread
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
#: The automatic tuning at the end of training needs at least this many validation images (or all of them).
MIN_TUNE_IMAGES = 10
#: Mean-Dice passes over the validation images in :func:`search`: baseline, 13 thresholds, largest
#: component, fill holes, 5 object sizes, with the connected components counted twice.
SEARCH_PASSES = 30
#: The automatic tuning holds at most this many pixels of probabilities (float32) and masks in memory
#: (about 1 GB): a folder of large photos is tuned on its first spread images up to this size.
MAX_TUNE_PIXELS = 200_000_000
#: Flip TTA is kept only when it raises the tuned mean Dice by at least this much: it costs three forward
#: passes per image in every later prediction.
MIN_TTA_GAIN = 0.002
#: The infer settings of flip TTA: the image and its two flips, at the model's own scale.
FLIP_TTA = {"tta": True, "tta_flips": ["h", "v"], "tta_scales": [1.0]}


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


def collect(predictor: Predictor, pairs, *, progress: bool = True, crf: bool = False, deadline: float | None = None,
            max_pixels: float = np.inf
            ) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray] | None, list[str]]:
    """Foreground probabilities, true masks (bool), with ``crf`` CRF-refined probabilities of ``pairs``, and
    the case ids of the pairs that could not be read (their errors are logged); only the pairs predicted
    before ``deadline`` (time.monotonic) and within ``max_pixels`` in all."""
    from medseg.data.readers import TargetSpec, read_pair_target

    spec = TargetSpec.from_config(predictor.config)  # masks read as the run trained (data.invert_masks)
    probas, truths, refined, failed = [], [], [], []
    bar = progress_bar(total=len(pairs), desc="predicting validation", unit="img", enabled=progress)
    pixels = 0
    for r in predictor.stream_pairs(pairs):
        if deadline is not None and time.monotonic() > deadline or pixels >= max_pixels:
            log.warning("post-processing tuning: %s after %d of %d images", "memory cap reached" if
                        pixels >= max_pixels else "time is up", len(probas), len(pairs))
            break
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
        pixels += proba.size
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
                     progress: bool = True, store: bool = True, tta: bool = True) -> dict[str, Any]:
    """Search threshold and post-processing (``tta``: and flip TTA) on ``split`` of ``data`` (default: the
    data the run was trained on); store the choice in ``run``."""
    from medseg.data.prepare import discover_and_check, pairs_for_split, unusable_in_split

    run = Path(run)
    if run.suffix.lower() == ".onnx":
        raise MedsegError(f"{run} is an ONNX file; tune the run it was exported from, then export again")
    report = discover_and_check(DataSource.of(data).or_recorded(run), progress=False)
    pairs = pairs_for_split(report, split, run if run.is_dir() else run.parent)
    unusable = unusable_in_split(report, split, run if run.is_dir() else run.parent)
    return tune_pairs(run, pairs, split=split, progress=progress, store=store, unusable=unusable, tta=tta)


def tune_pairs(run: Path, pairs: list, *, split: str, progress: bool = True, store: bool = True,
               deadline: float | None = None, max_pixels: float = np.inf, unusable: list[str] = (),
               tta: bool = True) -> dict[str, Any] | None:
    """:func:`tune_postprocess` on the data pairs ``pairs`` of ``split`` (``unusable``: case ids of the
    split the data check already refused, reported with those that fail here). With ``deadline``
    (time.monotonic), only the images predicted by then (and within ``max_pixels``) are used, and None
    is returned (nothing stored) when fewer than :data:`MIN_TUNE_IMAGES` were, or when the search would
    end after the deadline. ``tta``: also try flip TTA (unless the run has a TTA of its own, other than the
    flip TTA an earlier tuning chose; with a deadline, when its predictions of the same images and its
    search fit before it)."""
    from medseg.inference.crf import crf_available

    t0 = time.monotonic()
    loaded = Predictor.load(run)
    start, had_crf = loaded.postprocess, loaded.config.infer.crf
    # raw probabilities: the CRF is one of the candidates, and so is the flip TTA an earlier tuning chose
    retry_tta = tta and {k: getattr(loaded.config.infer, k) for k in FLIP_TTA} == FLIP_TTA
    predictor = loaded.with_overrides(["infer.crf=false"] + (["infer.tta=false"] if retry_tta else []))
    probas, truths, refined, failed = collect(predictor, pairs, progress=progress, crf=crf_available(),
                                              deadline=deadline, max_pixels=max_pixels)
    scored = [p for p in pairs[:len(probas) + len(failed)] if p.case_id not in set(failed)]  # what probas hold
    failed = sorted([*failed, *unusable])
    if deadline is not None and len(probas) < min(len(pairs), MIN_TUNE_IMAGES):
        return None
    p0 = time.monotonic()
    before = mean_dice(start, refined if had_crf and refined else probas, truths)
    if deadline is not None and time.monotonic() + SEARCH_PASSES * (time.monotonic() - p0) > deadline:
        log.warning("post-processing tuning: the search (about %.0f s) would end after the time budget",
                    SEARCH_PASSES * (time.monotonic() - p0))
        return None
    choice, use_crf, trials = search(probas, truths, start, refined)
    settings = {**choice.as_infer_settings(), "crf": use_crf}
    after = mean_dice(choice, refined if use_crf else probas, truths)
    search_s = time.monotonic() - p0
    tta_tried = tta and not predictor.config.infer.tta  # a TTA of the user's own is kept as it is
    if tta_tried:
        flipped = _flip_tta_choice(predictor, scored, truths, start, after, search_s, deadline, max_pixels)
        tta_tried = flipped is not None
        if flipped is not None:
            trial, tta_choice = flipped
            trials.append(trial)
            if trial["kept"]:
                choice, use_crf, after = tta_choice, False, trial["dice"]
                settings = {**choice.as_infer_settings(), "crf": False, **FLIP_TTA}
        if not settings.get("tta"):
            settings["tta"] = False
    result = {"split": split, "n_images": len(probas), "n_failed": len(failed), "failed": failed,
              "dice_before": before, "setting_before": start.describe(),
              "dice_after": after, "setting_after": ("CRF, " if use_crf else "")
              + ("flip TTA, " if settings.get("tta") else "") + choice.describe(),
              "infer": settings, "trials": trials, "predictor": predictor.describe(),
              "crf_tried": refined is not None, "tta_tried": tta_tried}
    if store:
        file = store_in_run(run, settings)
        result["stored_in"] = str(file)
        result["seconds"] = time.monotonic() - t0
        write_text_atomic(file.parent / REPORT_FILE, json.dumps(result, indent=2) + "\n")
        log.info("post-processing %s stored in %s", result["setting_after"], file)
    return result


def _flip_tta_choice(predictor: Predictor, pairs: list, truths: list[np.ndarray], start: Postprocess,
                     plain_best: float, search_s: float, deadline: float | None, max_pixels: float
                     ) -> tuple[dict[str, Any], Postprocess] | None:
    """The flip-TTA trial (a row of the report) and its best post-processing, on the images the plain
    search scored; None when they could not all be predicted and searched before ``deadline``."""
    t0 = time.monotonic()
    flips = predictor.with_overrides([f"infer.{k}={json.dumps(v)}" for k, v in FLIP_TTA.items()])
    probas, _, _, failed = collect(flips, pairs, progress=False, deadline=deadline, max_pixels=max_pixels)
    if len(probas) != len(truths) or failed:
        log.warning("post-processing tuning: flip TTA not tried (%d of %d images predicted with it)", len(probas),
                    len(truths))
        return None
    if deadline is not None and time.monotonic() + search_s > deadline:
        log.warning("post-processing tuning: no time left to search flip TTA (%.0f s of predictions done)",
                    time.monotonic() - t0)
        return None
    choice, _, _ = search(probas, truths, start)  # the same images, in the same order, as ``truths``
    dice = mean_dice(choice, probas, truths)
    kept = dice >= plain_best + MIN_TTA_GAIN
    return {"step": "flip TTA", "setting": "flip TTA (h, v), " + choice.describe(), "dice": dice, "kept": kept,
            "min_gain": MIN_TTA_GAIN}, choice


def tune_after_training(run: Path, clock: RunBudget, val_pairs: list, *, tta: bool = True) -> dict[str, Any] | None:
    """The end of ``medseg train`` (``train.tune_postprocess``): :func:`tune_pairs` on the val split, on the
    evenly spread images that fit in what is left of the time budget (all when it is unbounded); skipped,
    with one line saying why, when fewer than :data:`MIN_TUNE_IMAGES` fit. ``tta``: also try flip TTA (a
    cross-validation fold does not: the folds' ensemble averages them without TTA). Returns the report or None."""
    now = time.monotonic()
    k = clock.tune_images_that_fit(now)
    need = min(len(val_pairs), MIN_TUNE_IMAGES)
    if k < need:
        per = clock.tune_seconds_per_image() or 0.0
        log.warning("post-processing not tuned: about %.0f s for %d validation images do not fit in the %.0f s left "
                    "of the time budget (run `medseg tune-postprocess %s` to tune it)", per * need, need,
                    max(clock.left(now), 0.0), run)
        return None
    chosen = [val_pairs[i] for i in spread(len(val_pairs), k)]
    deadline = None if not clock.bounded else clock.start + clock.total - clock.margin()
    result = tune_pairs(run, chosen, split="val", progress=False, deadline=deadline, max_pixels=MAX_TUNE_PIXELS,
                        tta=tta)
    if result is None:
        log.warning("post-processing not tuned: it did not fit in the time budget (run `medseg tune-postprocess "
                    "%s` to tune it)", run)
        return None
    subset = "" if len(chosen) == len(val_pairs) else f" of {len(val_pairs)}"
    log.info("post-processing: %s; val Dice %.4f -> %.4f (%d%s images, %.0f s)", result["setting_after"],
             result["dice_before"], result["dice_after"], result["n_images"], subset, result["seconds"])
    return result
