"""K-fold cross-validation: one ordinary run per fold, a pooled out-of-fold summary, post-processing
chosen on the pooled out-of-fold predictions (as nnU-Net), and an ensemble for prediction.

Layout of a CV run folder::

    RUN/cv.json            the plan: K, grouping column, seed, {case id: fold}, chosen post-processing
    RUN/fold_0 .. fold_K-1 ordinary run folders (best.pt, config.yaml, metrics.csv, splits.csv ...)
    RUN/eval_oof/          per_image.csv, summary.json (95 % intervals) of the pooled out-of-fold predictions
    RUN/cv_summary.json    per-fold and pooled figures, post-processing trials

Each fold can be trained in its own process or on its own machine (``medseg train DATA --folds K
--fold I --out RUN``; they share the plan in cv.json); the summary gathers whatever folds have a
best.pt. Images in the data's ``test`` split stay out of the folds. ``medseg predict RUN`` on a CV
run averages the folds' probabilities (:mod:`medseg.inference.ensemble`).
"""

from __future__ import annotations

import json
import logging
import time
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from medseg.config import Config, _merge, parse_overrides, resolve_config
from medseg.data.prepare import discover_and_check
from medseg.data.readers import TargetSpec, read_pair_target
from medseg.data.source import DataSource
from medseg.engine.budget import take_start
from medseg.engine.checkpoint import BEST, LAST
from medseg.engine.cv import PLAN, fold_dir, make_plan, read_plan
from medseg.engine.train import train
from medseg.errors import DataError
from medseg.evaluation.evaluate import read_roi, score_image, surface_extra
from medseg.evaluation.intervals import add_intervals
from medseg.evaluation.pixel_scores import image_histograms, pooled_scores
from medseg.evaluation.surface import SURFACE_NAMES
from medseg.inference.postprocess import Postprocess
from medseg.inference.postprocess_tuning import search, tune_after_training
from medseg.inference.predictor import Predictor
from medseg.io.files import write_text_atomic
from medseg.io.tables import write_per_image_csv, write_summary_json
from medseg.metrics import MetricAccumulator

log = logging.getLogger(__name__)


def train_cv(data: DataSource | str | Path | None, out: str | Path, *, folds: int, fold: int | None = None,
             group_by: str | None = None, seed: int = 0, config: Config | str | Path | None = None,
             overrides: list[str] | dict[str, Any] | None = None, overwrite: bool = False, resume: bool = False,
             progress: bool = True, summarise: bool = True) -> Path:
    """Train fold ``fold`` (or every fold) of a K-fold CV into ``out``, each an ordinary run with ``config``
    and ``overrides`` (as :func:`medseg.engine.train.train`); folds already trained are kept unless
    ``overwrite``/``resume``. Then, with ``summarise``, gather the folds that exist (:func:`summarise_cv`).

    ``train.time_budget_min`` is the budget of the whole call (every fold it trains, from the start of
    ``medseg train``): each fold gets an equal share of what is left when it starts. The summary
    (predicting the out-of-fold images) runs after it, outside the budget."""
    out, data = Path(out), DataSource.of(data)
    plan = read_plan(out)
    if plan is not None and plan["folds"] != folds:
        raise DataError(f"{out / PLAN} plans {plan['folds']} folds, not {folds}; use its K or another --out")
    if plan is None:
        cfg = resolve_config(config, overrides)
        report = discover_and_check(data, progress=False, target=TargetSpec.from_config(cfg))
        plan = make_plan(report, folds, group_by, seed, TargetSpec.from_config(cfg))
        out.mkdir(parents=True, exist_ok=True)
        write_text_atomic(out / PLAN, json.dumps(plan, indent=2) + "\n")
    if fold is not None and not 0 <= fold < folds:
        raise DataError(f"--fold must be 0..{folds - 1}, got {fold}")
    todo = []
    for i in [fold] if fold is not None else range(folds):
        if (fold_dir(out, i) / LAST).is_file() and not (overwrite or resume):
            log.info("fold %d already trained in %s; kept (--overwrite to train it again)", i, fold_dir(out, i))
        else:
            todo.append(i)
    budget_min = resolve_config(config, overrides).train.time_budget_min
    start = take_start()  # the budget covers every fold trained by this call, from the command's start
    for n, i in enumerate(todo):
        fold_overrides = overrides
        if budget_min:  # each fold gets an equal share of what is left, so an overrun is absorbed by the rest
            share = max(budget_min - (time.monotonic() - start) / 60, 0.01) / (len(todo) - n)
            over = parse_overrides(overrides) if isinstance(overrides, list) else dict(overrides or {})
            fold_overrides = _merge(over, {"train": {"time_budget_min": round(share, 4)}})
            log.info("fold %d: %.2f of the %g min budget", i, share, budget_min)
        assignment = {c: "val" if f == i else "train" for c, f in plan["assignment"].items()}
        log.info("fold %d/%d: %d training, %d validation images", i + 1, folds,
                 sum(v == "train" for v in assignment.values()), sum(v == "val" for v in assignment.values()))
        train(data, fold_dir(out, i), config=config, overrides=fold_overrides, overwrite=overwrite, resume=resume,
              progress=progress, assignment=assignment, finish=partial(tune_after_training, tta=False))
    if summarise:
        summarise_cv(out, data, progress=progress)
    return out


def summarise_cv(run: str | Path, data: DataSource | str | Path | None, *, progress: bool = True) -> dict[str, Any]:
    """Pool the out-of-fold predictions of every trained fold: choose post-processing on them (binary
    runs), score them with 95 % intervals (``eval_oof/``), and write ``cv_summary.json``."""
    run = Path(run)
    plan = read_plan(run)
    if plan is None:
        raise DataError(f"{run} is not a cross-validation run (no {PLAN})")
    report = discover_and_check(data, progress=False)
    by_id = {p.case_id: p for p in report.good}
    done = [i for i in range(plan["folds"]) if (fold_dir(run, i) / BEST).is_file()]
    if not done:
        raise DataError(f"no fold of {run} has a {BEST} yet")
    cases, probas, truths, rois, fold_of = [], [], [], [], []
    spec = None
    for i in done:
        # the fold's raw probabilities: without the CRF its own tuning may have kept, nor TTA (folds are not
        # tuned with it: the ensemble averages the folds instead)
        predictor = Predictor.load(fold_dir(run, i), overrides=["infer.crf=false", "infer.tta=false"])
        spec = TargetSpec.from_config(predictor.config)
        if predictor.config.model.classes > 1:
            raise DataError("the cross-validation summary handles binary runs; multi-class folds are trained but "
                            "not pooled")
        pairs = [by_id[c] for c, f in plan["assignment"].items() if f == i and c in by_id]
        for r in predictor.stream_pairs(pairs):
            if r.error is not None:
                continue
            pair, proba = r.item, r.proba
            truth = read_pair_target(pair, spec) != 0
            cases.append(pair.case_id)
            probas.append(proba.astype(np.float16))
            truths.append(truth)
            rois.append(read_roi(pair, truth.shape))
            fold_of.append(i)
    start = Postprocess(threshold=predictor.threshold)
    cut = [p.astype(np.float32) * (1 if r is None else r) for p, r in zip(probas, rois, strict=True)]
    choice, _, trials = search(cut, [t & r if r is not None else t for t, r in zip(truths, rois, strict=True)], start)
    acc = MetricAccumulator(SURFACE_NAMES)
    hists = []
    for case, p, t, r in zip(cases, probas, truths, rois, strict=True):
        p = p.astype(np.float32)
        score_image(acc, case, choice(p), t, r, multiclass=False, extra=surface_extra(None))
        hists.append(image_histograms(p, t, r))
    rows = acc.rows()
    summary = add_intervals(acc.aggregate(), acc)
    scores = pooled_scores(np.stack(hists))
    summary["ci95"].update(scores.pop("ci95", {}))
    summary.update(scores, split="oof", checkpoint=f"{len(done)} folds of {run}", threshold=choice.threshold,
                   data=str(DataSource.of(data)), tta=False)
    write_per_image_csv(run / "eval_oof" / "per_image.csv",
                        [r | {"fold": f} for r, f in zip(rows, fold_of, strict=True)])
    write_summary_json(run / "eval_oof" / "summary.json", summary)
    per_fold = []
    for i in done:
        sel = [r for r, f in zip(rows, fold_of, strict=True) if f == i]
        per_fold.append({"fold": i, "n_images": len(sel), "dice": float(np.mean([r["dice"] for r in sel])),
                         "iou": float(np.mean([r["iou"] for r in sel]))})
    result = {"folds_done": done, "folds_planned": plan["folds"], "folds": per_fold,
              "pooled": {k: summary[k] for k in ("dice", "iou", "hd95", "auc_roc", "n_images")}
              | {"ci95": summary["ci95"]},
              "postprocess": choice.describe(), "infer": choice.as_infer_settings(), "trials": trials}
    write_summary_json(run / "cv_summary.json", result)
    plan["infer"] = {**choice.as_infer_settings(), "crf": False, "tta": False}  # over each fold's own choice
    write_text_atomic(run / PLAN, json.dumps(plan, indent=2) + "\n")
    log.info("cross-validation (%d of %d folds): pooled out-of-fold Dice %.4f; post-processing %s",
             len(done), plan["folds"], summary["dice"], choice.describe())
    return result
