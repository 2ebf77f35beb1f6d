"""The training loop, readable top to bottom.

data -> checked pairs -> split -> cached datasets -> model (+ encoder weights) -> loop of epochs
(bf16/fp16 autocast, channels_last, warm-up + cosine learning rate, optional time budget) ->
validation Dice each epoch -> best.pt / last.pt (atomic) -> metrics.csv + curves.png -> [``finish``: the
post-processing chosen on the val split, passed in from the inference layer by ``medseg train``].

The same loop runs in every process of a torchrun launch (DDP, gradient accumulation up to
``train.effective_batch_size``); what the processes must agree on lives in
:mod:`medseg.engine.distributed`, and only global rank 0 writes files.
"""

from __future__ import annotations

import contextlib
import logging
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Subset

from medseg.config import Config, build_config, resolve_config, save_config
from medseg.data.dataset import SegmentationDataset, class_balanced_weights, class_pixel_counts
from medseg.data.prepare import discover_and_check, split_for_training
from medseg.data.readers import TargetSpec, typical_long_side
from medseg.data.source import DataSource
from medseg.data.transforms import normalize_batch
from medseg.engine.budget import RunBudget, probe_seconds_per_image, spread, take_start
from medseg.engine.checkpoint import BEST, LAST, load_checkpoint, save_checkpoint
from medseg.engine.distributed import (
    DistContext,
    ShardedSampler,
    cpu_threads_per_process,
    init_distributed,
    maybe_sync_batchnorm,
    plan_batches,
    shard,
    shutdown,
    steps_in_epoch,
    wrap_model,
)
from medseg.engine.ema import WeightEma
from medseg.engine.epoch_plan import EpochPlan, apply_freezing, plan_epoch
from medseg.engine.estimate import DurationEstimate
from medseg.engine.history import plot_curves, read_history, write_history
from medseg.engine.runtime import Runtime, resolve_runtime, set_threads
from medseg.engine.schedule import LrSchedule
from medseg.engine.validation import gathered_means, logit_dices
from medseg.errors import CheckpointError
from medseg.io.files import remove_stale_temps, write_text_atomic
from medseg.losses import build_loss
from medseg.models import create_model, main_logits, model_label, model_summary
from medseg.models.weights import load_encoder_weights
from medseg.progress import progress_bar
from medseg.progress import write as progress_write

log = logging.getLogger(__name__)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def make_train_loader(dataset, plan: EpochPlan, micro: int, cfg: Config, ctx: DistContext, epoch: int,
                      start: int, sample_weights: list[float] | None, static: bool = False) -> DataLoader:
    """This epoch's loader for this process: its share of the plan's images (stages), shuffled or
    class-balanced from (seed, epoch), starting after ``start`` images already trained on (resume).
    ``static``: every batch ``micro`` images (a compiled step is static in shape), the short last one dropped."""
    if dataset.augment_strength != plan.augment:
        dataset.set_augment(plan.augment)
    indices = plan.indices if plan.indices is not None else list(range(len(dataset)))
    weights = [sample_weights[i] for i in indices] if sample_weights is not None else None
    sampler = ShardedSampler(Subset(dataset, indices), ctx, seed=cfg.train.seed, weights=weights)
    sampler.set_epoch(epoch)
    sampler.set_start(start)
    # every image every epoch; only a last batch of one image is dropped (BatchNorm on 1x1 pooled maps,
    # as in PSPNet, cannot train on a single sample)
    lone_last = len(sampler) > 1 and len(sampler) % micro == 1
    short_last = static and len(sampler) > micro and len(sampler) % micro != 0
    return DataLoader(sampler.dataset, batch_size=micro, sampler=sampler, drop_last=lone_last or short_last,
                      num_workers=cfg.train.num_workers)


def build_optimizer(cfg: Config, model: torch.nn.Module) -> torch.optim.Optimizer:
    """Over every parameter: frozen ones get no gradient (and no update) until they are unfrozen."""
    o = cfg.optim
    params = list(model.parameters())
    if o.name == "sgd":
        return torch.optim.SGD(params, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay, nesterov=True)
    cls = torch.optim.AdamW if o.name == "adamw" else torch.optim.Adam
    return cls(params, lr=o.lr, weight_decay=o.weight_decay)


@torch.inference_mode()
def validate_epoch(model, dataset, criterion, rt: Runtime, mean_std, threshold: float, batch_size: int,
                   ctx: DistContext, indices: list[int] | None = None) -> tuple[float, float]:
    """Mean per-image validation loss and Dice at the model resolution (foreground classes).

    Each process scores ``dataset[rank::world]`` (no padding, no image twice); the per-image values are
    gathered back into dataset order on every rank and averaged there, so N processes report exactly
    what one process would compute from the same per-image values. ``indices``: the images scored (all
    by default; a time budget may shorten a validation to an evenly spread subset).
    """
    model.eval()
    chosen = list(range(len(dataset))) if indices is None else list(indices)
    mine = [chosen[i] for i in shard(range(len(chosen)), ctx)]
    losses: list[float] = []
    dices: list[float] = []
    for images, masks in DataLoader(Subset(dataset, mine), batch_size=batch_size, num_workers=0):
        x = normalize_batch(images, *mean_std).to(rt.device, memory_format=rt.memory_format())
        y = masks.to(rt.device).float()
        with rt.autocast():
            logits = main_logits(model(x)).float()
        losses += [criterion(logits[i : i + 1], y[i : i + 1]).item() for i in range(len(x))]
        dices += logit_dices(logits, y, threshold)
    return gathered_means(ctx, losses, dices, len(chosen))


def train(data: DataSource | str | Path | None, out: str | Path, *, config: Config | str | Path | None = None,
          overrides: list[str] | dict[str, Any] | None = None, resume: bool = False, overwrite: bool = False,
          progress: bool = True, assignment: dict[str, str] | None = None,
          finish: Callable[[Path, RunBudget, list], Any] | None = None) -> Path:
    """Train a model on ``data`` (a :class:`DataSource` or a data folder) into the run folder ``out``; returns ``out``.

    ``config`` is a Config, a preset name or a YAML file (:func:`~medseg.config.resolve_config`), with
    ``overrides`` over it; on ``resume`` the run's own config is used instead, with ``overrides`` over it.
    ``assignment`` (case id -> train/val) fixes the split, as a cross-validation fold does.

    An existing run in ``out`` is continued with ``resume``, replaced with ``overwrite``, and otherwise
    left alone (an error), so that a finished model is never clobbered by accident. Started by torchrun,
    every process runs this function and only global rank 0 writes (see :mod:`medseg.engine.distributed`);
    SIGTERM stops every process at the next step boundary with the resume state saved.

    ``finish(run, budget, val_pairs)``: the end-of-run step (the post-processing tuning, passed in by the
    layer above: :func:`medseg.inference.postprocess_tuning.tune_after_training`); with
    ``train.tune_postprocess`` on, the budget keeps time for it, and global rank 0 calls it after the
    other processes have left, once training ended normally (not on SIGTERM), for binary runs with a
    val split.
    """
    ctx = init_distributed()
    ctx.stop_on_sigterm()
    if not ctx.is_main:  # one voice: rank 0 logs and shows progress
        logging.getLogger("medseg").setLevel(logging.WARNING)
        progress = False
    try:
        out, clock, val_pairs = _train(ctx, DataSource.of(data), Path(out), config=config, overrides=overrides,
                                       resume=resume, overwrite=overwrite, progress=progress, assignment=assignment,
                                       tune=finish is not None)
    finally:
        ctx.restore_sigterm()
        shutdown(ctx)
    if ctx.is_main and finish is not None and clock.tune_images:
        finish(out, clock, val_pairs)
    return out


def choose_compiled(cfg: Config, ctx: DistContext, model: torch.nn.Module, train_ds, micro: int, criterion,
                    rt: Runtime, clock: RunBudget, passes_left: int) -> torch.nn.Module | None:
    """``train.compile``: the compiled training module, or None to train eager (see
    :mod:`medseg.engine.compile_step`); the trial runs on the first ``micro`` training items and, when it
    measured, sets the budget's seconds per training image in place of the first-step probe.
    ``passes_left``: the micro-batches the run's remaining epochs hold."""
    if cfg.train.compile == "off":
        return None
    if ctx.enabled:
        log.info("torch.compile: not tried under torchrun (each process would compile and time on its own)")
        return None
    from torch.utils.data import default_collate

    from medseg.engine.compile_step import choose_step_module

    images, masks = default_collate([train_ds[i] for i in range(min(micro, len(train_ds)))])
    x = normalize_batch(images, *cfg.data.mean_std).to(rt.device, memory_format=rt.memory_format())
    left = clock.left(time.monotonic()) if clock.bounded else None
    module, trial = choose_step_module(cfg.train.compile, model, x, masks.to(rt.device).float(), criterion, rt, left,
                                       passes_left)
    log.info("torch.compile: %s", trial.reason)
    if trial.chosen_s() and clock.train_s_per_image is None:
        clock.train_s_per_image = trial.chosen_s() / len(x)
    return module if trial.compiled else None


def tuning_note(cfg: Config, n_val: int) -> str | None:
    """Why the run does not choose its post-processing at the end (None: it does)."""
    if not cfg.train.tune_postprocess:
        return "off (train.tune_postprocess=false)"
    if cfg.model.classes > 1:
        return "not tuned: multi-class runs take the argmax of the classes, with no threshold or clean-up"
    if n_val == 0:
        return "not tuned: the run has no validation images"
    return None


def _train(ctx: DistContext, source: DataSource, out: Path, *, config, overrides, resume: bool, overwrite: bool,
           progress: bool, assignment: dict[str, str] | None, tune: bool) -> tuple[Path, RunBudget, list]:
    session_start = take_start()  # the time budget counts from here (medseg train: from the command's start)
    main = ctx.is_main
    resume_state = None
    if not resume and (out / LAST).exists() and not overwrite:
        raise CheckpointError(f"run folder {out} already holds a run; use --resume to continue it, "
                              "--overwrite to start again, or another --out")
    if resume:
        if not (out / LAST).is_file():
            raise CheckpointError(f"cannot resume: {out / LAST} does not exist")
        resume_state = load_checkpoint(out / LAST)
        cfg = build_config(base=resume_state["config"], overrides=overrides)
    else:
        cfg = resolve_config(config, overrides)
    set_threads(cfg.train.threads or (cpu_threads_per_process(ctx) if ctx.enabled else None))
    seed_everything(cfg.train.seed)
    # every name (architecture, encoder, options) is checked here, before any data is read
    model = create_model(cfg.model, load_weights=False)

    # ---- data: find, check, split, cache (every rank alike); the run folder is made only once the data is
    # usable, and only global rank 0 writes into it
    report = discover_and_check(source, progress=progress, target=TargetSpec.from_config(cfg))
    if main:
        if overwrite and not resume:
            for name in (LAST, BEST, "metrics.csv", "curves.png", "splits.csv", "config.yaml"):
                (out / name).unlink(missing_ok=True)
        out.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(out)  # left by a process killed while writing
        write_text_atomic(out / "data_report.txt", "\n".join(report.summary_lines()) + "\n")
        source.record(out)
    if report.n_fatal:
        log.warning("training on %d pairs, skipping %d with errors (listed above and in %s)", len(report.good),
                    report.n_fatal, out / "data_report.txt")
    prepared = split_for_training(report, out, val_fraction=cfg.data.val_fraction,
                                  test_fraction=cfg.data.test_fraction, seed=cfg.data.split_seed,
                                  reuse=resume, save=main, assignment=assignment)
    n_train, n_val = len(prepared.splits["train"]), len(prepared.splits["val"])
    log.info("%d training and %d validation images (split from %s)", n_train, n_val, prepared.source)
    if cfg.infer.train_side is None:  # the scale the model learns at; sliding-window inference tiles at it
        cfg.infer.train_side = typical_long_side(prepared.splits["train"])
    size, target, patch = cfg.data.image_size, TargetSpec.from_config(cfg), cfg.data.patch_size
    if patch:  # native resolution (or data.scale): random patches; validation slides over whole images
        from medseg.data.patches import PatchDataset, ScaledImageDataset

        train_ds = PatchDataset(prepared.splits["train"], patch, cfg.data.scale,
                                foreground_oversample=cfg.data.foreground_oversample, augment=cfg.train.augment,
                                cache=cfg.data.cache, progress=progress, desc="loading train",
                                window=cfg.data.window, target=target, seed=cfg.train.seed)
        val_ds = ScaledImageDataset(prepared.splits["val"], cfg.data.scale, cache=cfg.data.cache, progress=progress,
                                    desc="loading val", window=cfg.data.window, target=target)
        log.info("patch training: %d patches of %d px per epoch at scale %g", len(train_ds), patch, cfg.data.scale)
    else:
        train_ds = SegmentationDataset(prepared.splits["train"], size, augment=cfg.train.augment,
                                       cache=cfg.data.cache, progress=progress, desc="loading train",
                                       window=cfg.data.window, target=target)
        val_ds = SegmentationDataset(prepared.splits["val"], size, cache=cfg.data.cache, progress=progress,
                                     desc="loading val", window=cfg.data.window, target=target)
    n_items = len(train_ds)  # training items per epoch: images, or patches in patch mode
    batches = plan_batches(cfg.train.batch_size, cfg.train.effective_batch_size, ctx.world, n_items)
    sample_weights = (class_balanced_weights(train_ds, cfg.model.classes)
                      if cfg.train.sampler == "class_balanced" else None)
    val_batch = max(batches.micro, cfg.infer.batch_size)

    # ---- model, loss, optimiser, runtime
    rt = resolve_runtime(cfg.train.precision, cfg.train.channels_last,
                         device=str(ctx.device) if ctx.device else None)
    if resume_state is None:  # rank 0 loads (and may download); DDP copies its weights to the others
        if main:  # record what was really loaded ('auto' may fall back to none)
            cfg.model.encoder_weights = load_encoder_weights(model, cfg.model)
        cfg.model.encoder_weights = ctx.broadcast(cfg.model.encoder_weights)
    model = maybe_sync_batchnorm(model, ctx, cfg.train.sync_batchnorm)
    model.to(rt.device, memory_format=rt.memory_format())
    ema = WeightEma(model, cfg.train.ema) if cfg.train.ema else None
    counts = class_pixel_counts(train_ds, cfg.model.classes) if cfg.loss.class_weights == "auto" else None
    criterion = build_loss(cfg.loss, class_counts=counts)
    optimizer = build_optimizer(cfg, model)
    scaler = torch.amp.GradScaler(rt.device.type, enabled=rt.use_scaler)
    config_dict = cfg.model_dump(mode="json")
    if main:
        save_config(cfg, out / "config.yaml")
    log.info("model %s (%.1f M parameters) on %s; %d process(es) x %d accumulation x %d images = %d per step",
             model_label(cfg.model), model_summary(model)["parameters_m"], rt.describe(),
             ctx.world, batches.accum, batches.micro, batches.effective)

    # ---- state (fresh or resumed)
    total_steps = sum(steps_in_epoch(len(plan_epoch(cfg, e, n_items).indices or train_ds), batches)
                      for e in range(1, cfg.train.epochs + 1))
    clock = RunBudget.from_minutes(cfg.train.time_budget_min, session_start,
                                   model_bytes=sum(p.numel() * 4 for p in model.parameters()))
    note = tuning_note(cfg, n_val) if tune else None
    clock.tune_images, clock.world = (n_val if tune and note is None else 0), ctx.world
    if note:
        log.info("post-processing: %s", note)
    if patch:  # pixels a validation image's overlapping windows cover, against one training patch
        windows_per_side = (cfg.infer.train_side or patch) * cfg.data.scale / (patch * (1 - cfg.infer.overlap))
        clock.val_pixel_ratio = max(1.0, windows_per_side ** 2)
    st = {"epoch": 0, "step": 0, "best_dice": -1.0, "best_epoch": 0, "bad_epochs": 0, "progress": 0.0,
          "epoch_images": 0, "best_elapsed": 0.0}
    history: list[dict[str, Any]] = []
    if resume_state is not None:
        model.load_state_dict(resume_state.get("raw_model") or resume_state["model"])  # raw_model: with EMA
        if ema is not None and "ema" in resume_state:
            ema.load_state_dict(resume_state["ema"])
        optimizer.load_state_dict(resume_state["optimizer"])
        st.update(resume_state["state"])
        if "rng" in resume_state:
            torch.set_rng_state(resume_state["rng"])
        # last.pt is the truth: epochs after it (in metrics.csv, maybe best.pt) are trained again. Its own copy
        # of the history is used, since a kill between saving last.pt and metrics.csv loses a row otherwise
        saved = resume_state.get("history") or read_history(out / "metrics.csv")
        history = [r for r in saved if r["epoch"] <= st["epoch"]]
        log.info("resuming at epoch %d%s (best val Dice %.4f)", st["epoch"] + 1,
                 f", after its first {st['epoch_images']} images" if st["epoch_images"] else "", st["best_dice"])
    progress0 = st["progress"]
    schedule = LrSchedule(cfg.optim, cfg.train.epochs)
    if resume_state is not None and "schedule" in resume_state:
        schedule.load_state_dict(resume_state["schedule"])
    mean_std = cfg.data.mean_std
    stop_reason, n_val = "epochs done", len(val_ds)
    last_saved = last_val_at = time.monotonic()
    session_steps = st["step"]
    scored = model if ema is None else ema.module  # what is validated and saved

    def run_validation(indices: list[int]) -> tuple[float, float]:
        if patch:
            from medseg.engine.validation import validate_sliding

            return validate_sliding(scored, val_ds, criterion, rt, mean_std, cfg.infer.threshold, window=patch,
                                    overlap=cfg.infer.overlap, batch_size=val_batch, ctx=ctx, indices=indices)
        return validate_epoch(scored, val_ds, criterion, rt, mean_std, cfg.infer.threshold, val_batch, ctx,
                              indices)

    def say(message: str) -> None:  # above the progress bar, not inside it
        if progress:
            progress_write(f"note: {message}")
        else:
            log.warning("%s", message)

    estimate = (DurationEstimate(total_steps - st["step"], cfg.train.epochs - st["epoch"])
                if main and not clock.bounded and rt.device.type == "cpu" else None)
    trainable: list[bool] = []
    net = wrapped = model
    lr = optimizer.param_groups[0]["lr"]

    def save_last(val_dice: float) -> None:  # with EMA: the average predicts, the raw weights resume
        extra = {} if ema is None else {"raw_model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
                                        "ema": ema.state_dict()}
        save_checkpoint(out / LAST, scored, config_dict, epoch=st["epoch"], val_dice=val_dice,
                        optimizer=optimizer.state_dict(), state=dict(st), schedule=schedule.state_dict(),
                        rng=torch.get_rng_state(), world_size=ctx.world, history=list(history), **extra)

    compiled = choose_compiled(cfg, ctx, model, train_ds, batches.micro, criterion, rt, clock,
                               passes_left=(total_steps - st["step"]) * batches.accum)
    clock.train_start = time.monotonic()
    for epoch in range(st["epoch"] + 1, cfg.train.epochs + 1):
        plan = plan_epoch(cfg, epoch, n_items)
        apply_freezing(cfg, model, epoch)
        if [p.requires_grad for p in model.parameters()] != trainable:  # DDP fixes its set when built
            trainable = [p.requires_grad for p in model.parameters()]
            wrapped = wrap_model(model, ctx)
            net = wrapped if compiled is None else compiled  # compiled: one process (re-traced when freezing changes)
        start = st["epoch_images"]
        train_loader = make_train_loader(train_ds, plan, batches.micro, cfg, ctx, epoch, start, sample_weights,
                                         static=compiled is not None)
        if train_ds.augment is not None:  # per epoch and rank, so a resumed epoch draws the same
            train_ds.augment.set_random_seed(cfg.train.seed * 1000 + epoch + 7919 * ctx.rank + start)
        if patch:  # patch placement likewise
            train_ds.set_random_seed(cfg.train.seed * 1000 + epoch + 7919 * ctx.rank + start)
        model.train()
        t0, seen, loss_sum, out_of_time, stopped = time.monotonic(), 0, 0.0, False, False
        n_batches = len(train_loader)
        bar = progress_bar(train_loader, desc=f"epoch {epoch}/{cfg.train.epochs}", enabled=progress, leave=False,
                   unit="batch")
        for i, (images, masks) in enumerate(bar):
            if i % batches.accum == 0:  # an optimiser-step boundary: all ranks agree to go on or stop
                if clock.bounded and clock.train_s_per_image is None:  # size the first step before taking it
                    clock.train_s_per_image = probe_seconds_per_image(model, images, mean_std, rt)
                now = time.monotonic()
                step_s = (clock.train_s_per_image or 0.0) * batches.micro * batches.accum
                stopped, (elapsed, reserve, fraction) = ctx.agree(clock.elapsed(now), clock.reserve(n_val) + step_s,
                                                                  clock.lr_fraction(now, n_val))
                if stopped:
                    break
                # no step starts that would eat into the end-of-run reserve (final validation, writes)
                if clock.bounded and elapsed + reserve >= clock.total:
                    if st["step"] == session_steps:
                        say(f"not even one training step (about {reserve:.0f} s with the final validation and "
                            f"writes) fits in what is left of the time budget; ending without training")
                    out_of_time = True
                    break
                time_progress = progress0 + (1 - progress0) * fraction if clock.bounded else 0.0
                st["progress"] = max(st["step"] / total_steps, time_progress)
                lr = plan.lr if plan.lr is not None else schedule.lr(st["progress"], epoch)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                optimizer.zero_grad(set_to_none=True)
                group_size = min(batches.accum, n_batches - i)  # micro-batches in this step
            x = normalize_batch(images, *mean_std).to(rt.device, memory_format=rt.memory_format())
            y = masks.to(rt.device).float()
            step_ends = (i + 1) % batches.accum == 0 or i + 1 == n_batches
            with contextlib.nullcontext() if step_ends or wrapped is model else wrapped.no_sync():
                with rt.autocast():
                    logits = net(x)
                loss = criterion(logits, y)
                scaler.scale(loss / group_size).backward()
            if step_ends:
                scaler.step(optimizer)
                scaler.update()
                st["step"] += 1
                if ema is not None:
                    ema.update()
            seen += len(x)
            clock.train_s_per_image = (time.monotonic() - t0) / seen
            st["epoch_images"] += len(x) * ctx.world
            loss_sum += loss.item() * len(x)
            if estimate is not None and (hint := estimate.step()):
                say(hint)
            bar.set_postfix(loss=f"{loss_sum / seen:.4f}", best_val_dice=f"{max(st['best_dice'], 0):.4f}",
                            lr=f"{lr:.1e}")
        if stopped:  # SIGTERM: the images of this epoch done so far are kept in the resume state
            clock.tune_images = 0  # an unfinished run: tuned when it ends
            if main:
                save_last(float("nan"))
            stop_reason = f"stopped by SIGTERM during epoch {epoch}; resume state saved in {out / LAST}"
            break
        train_seconds = time.monotonic() - t0
        if estimate is not None and (hint := estimate.epoch_end()):
            say(hint)
        seen_all, loss_all = np.sum(ctx.gather([seen, loss_sum]), axis=0)
        # validation: every epoch (or every train.val_every_s) and after the last one; sized to the budget
        now = time.monotonic()
        step_s = (clock.train_s_per_image or 0.0) * batches.micro * batches.accum
        _, (no_room,) = ctx.agree(float(clock.bounded and clock.elapsed(now) + clock.reserve(n_val) + step_s
                                        >= clock.total))
        final = out_of_time or bool(no_room) or epoch == cfg.train.epochs
        due = final or cfg.train.val_every_s is None or now - last_val_at >= cfg.train.val_every_s
        fits = clock.val_images(n_val, now, final=final, at_least_one=st["best_dice"] < 0) if due else 0
        _, (k_val,) = ctx.agree(float(fits))
        k_val, val_loss, val_dice = int(k_val), float("nan"), float("nan")
        if k_val:
            v0 = time.monotonic()
            val_loss, val_dice = run_validation(spread(n_val, k_val))
            clock.val_s_per_image = (time.monotonic() - v0) / k_val
            last_val_at = time.monotonic()
            if k_val < n_val:
                say(f"validation shortened to {k_val} of {n_val} images to fit the time budget")
        elif due:
            say("validation skipped: it would not fit in the time budget before the final one")
        w0 = time.monotonic()
        st["epoch"], st["epoch_images"] = epoch, 0
        row = {"epoch": epoch, "train_loss": loss_all / max(seen_all, 1), "val_loss": val_loss, "val_dice": val_dice,
               "lr": lr, "train_images": int(seen_all), "train_seconds": train_seconds,
               "train_img_per_s": seen_all / max(train_seconds, 1e-9),
               "img_per_s_per_process": seen / max(train_seconds, 1e-9), "world_size": ctx.world,
               "effective_batch": batches.effective, "epoch_seconds": time.monotonic() - t0,
               "elapsed_seconds": (history[-1]["elapsed_seconds"] if history else 0.0) + time.monotonic() - t0}
        history.append(row)
        improved = False
        if k_val:
            schedule.epoch_end(val_dice)
            improved = val_dice > st["best_dice"]  # the same on every rank: val_dice is global
            if improved:
                st.update(best_dice=val_dice, best_epoch=epoch, bad_epochs=0, best_elapsed=row["elapsed_seconds"])
                if main:
                    save_checkpoint(out / BEST, scored, config_dict, epoch=epoch, val_dice=val_dice)
            else:
                st["bad_epochs"] += 1
        if cfg.train.patience_min is not None:  # time replaces epochs
            patience_hit = bool(k_val) and row["elapsed_seconds"] - st["best_elapsed"] >= cfg.train.patience_min * 60
        else:
            patience_hit = st["bad_epochs"] >= cfg.train.patience
        # the in-epoch check lets every session take one step, so epochs of a single batch stop here
        stopped, (elapsed, reserve) = ctx.agree(clock.elapsed(time.monotonic()), clock.reserve(n_val) + step_s)
        out_of_time = out_of_time or final and epoch < cfg.train.epochs or bool(
            clock.bounded and elapsed + reserve >= clock.total)
        finishing = stopped or out_of_time or patience_hit or epoch == cfg.train.epochs
        if main:  # metrics.csv first: it is never behind last.pt (which also carries the history)
            write_history(out / "metrics.csv", history)
            plot_curves(out / "curves.png", history, title=f"{cfg.name}: {model_label(cfg.model)}")
            if finishing or time.monotonic() - last_saved >= cfg.train.checkpoint_every_s:
                save_last(val_dice)
                last_saved = time.monotonic()
        clock.writes_s = max(clock.writes_s or 0.0, time.monotonic() - w0)
        shown = f"val loss {val_loss:.4f}, val Dice {val_dice:.4f}" if k_val else "not validated"
        msg = (f"epoch {epoch}: loss {row['train_loss']:.4f}, {shown}"
               f"{' (best)' if improved else ''}, {row['train_img_per_s']:.1f} img/s")
        if main:
            (progress_write if progress else log.info)(msg)
        if stopped:
            stop_reason = f"stopped by SIGTERM after epoch {epoch}; resume state saved in {out / LAST}"
            clock.tune_images = 0
            break
        if out_of_time:
            stop_reason = (f"time budget of {cfg.train.time_budget_min:g} min reached"
                           f" ({clock.elapsed(time.monotonic()):.0f} s since the start)")
            break
        if patience_hit:
            stop_reason = (f"early stopping: no better val Dice for {cfg.train.patience_min:g} min"
                           if cfg.train.patience_min is not None
                           else f"early stopping: no better val Dice for {cfg.train.patience} epochs")
            break
    log.info("%s; best val Dice %.4f at epoch %d; run folder %s", stop_reason, st["best_dice"],
             st["best_epoch"], out)
    return out, clock, prepared.splits["val"]

