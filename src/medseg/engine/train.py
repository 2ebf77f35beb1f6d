"""The training loop, readable top to bottom.

data -> checked pairs -> split -> cached datasets -> model (+ encoder weights) -> loop of epochs
(bf16/fp16 autocast, channels_last, warm-up + cosine learning rate, optional time budget) ->
validation Dice each epoch -> best.pt / last.pt (atomic) -> metrics.csv + curves.png.
"""

from __future__ import annotations

import logging
import math
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Subset, WeightedRandomSampler
from tqdm.auto import tqdm

from medseg.config import Config, build_config, save_config
from medseg.data.dataset import SegmentationDataset, class_balanced_weights, class_pixel_counts
from medseg.data.prepare import discover_and_check, record_data_source, split_for_training
from medseg.data.readers import TargetSpec
from medseg.data.transforms import normalize_batch
from medseg.engine.checkpoint import BEST, LAST, load_checkpoint, save_checkpoint
from medseg.engine.estimate import DurationEstimate
from medseg.engine.history import plot_curves, read_history, write_history
from medseg.engine.runtime import Runtime, resolve_runtime, set_threads
from medseg.engine.schedule import LrSchedule
from medseg.engine.stages import EpochPlan, apply_freezing, plan_epoch
from medseg.errors import CheckpointError
from medseg.io.files import write_text_atomic
from medseg.losses import build_loss
from medseg.metrics import batch_dice, batch_dice_multiclass
from medseg.models import create_model, main_logits, model_summary
from medseg.models.weights import load_encoder_weights

log = logging.getLogger(__name__)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def make_train_loader(dataset, plan: EpochPlan, bs: int, cfg: Config, generator: torch.Generator,
                      sample_weights: list[float] | None) -> DataLoader:
    """This epoch's loader: the plan's images (stages), shuffled or class-balanced, augmented per plan."""
    if dataset.augment_strength != plan.augment:
        dataset.set_augment(plan.augment)
    indices = plan.indices if plan.indices is not None else list(range(len(dataset)))
    subset = Subset(dataset, indices)
    if sample_weights is not None:
        weights = [sample_weights[i] for i in indices]
        sampler = WeightedRandomSampler(weights, num_samples=len(indices), replacement=True, generator=generator)
        kwargs = {"sampler": sampler}
    else:
        kwargs = {"shuffle": True, "generator": generator}
    # every image every epoch; only a last batch of one image is dropped (BatchNorm on 1x1 pooled maps,
    # as in PSPNet, cannot train on a single sample)
    lone_last = len(indices) > 1 and len(indices) % bs == 1
    return DataLoader(subset, batch_size=bs, drop_last=lone_last, num_workers=cfg.train.num_workers, **kwargs)


def build_optimizer(cfg: Config, model: torch.nn.Module) -> torch.optim.Optimizer:
    """Over every parameter: frozen ones get no gradient (and no update) until they are unfrozen."""
    o = cfg.optim
    params = list(model.parameters())
    if o.name == "sgd":
        return torch.optim.SGD(params, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay, nesterov=True)
    cls = torch.optim.AdamW if o.name == "adamw" else torch.optim.Adam
    return cls(params, lr=o.lr, weight_decay=o.weight_decay)


@torch.inference_mode()
def validate_epoch(model, loader, criterion, rt: Runtime, mean_std, threshold: float) -> tuple[float, float]:
    """Mean validation loss and mean per-image Dice at the model resolution (foreground classes)."""
    model.eval()
    losses, dices = [], []
    for images, masks in loader:
        x = normalize_batch(images, *mean_std).to(rt.device, memory_format=rt.memory_format())
        y = masks.to(rt.device).float()
        with rt.autocast():
            logits = main_logits(model(x)).float()
        losses.append(criterion(logits, y).item() * len(x))
        if logits.shape[1] == 1:
            dices.append(batch_dice(torch.sigmoid(logits) > threshold, y > 0.5))
        else:
            dices.append(batch_dice_multiclass(logits.argmax(1), y[:, 0].long(), logits.shape[1]))
    n = len(loader.dataset)
    return sum(losses) / n, torch.cat(dices).float().mean().item()


def train(
    data: str | Path | None,
    out: str | Path,
    *,
    preset: str | None = None,
    config_file: str | Path | None = None,
    overrides: list[str] | dict[str, Any] | None = None,
    config: Config | None = None,
    images: str | Path | None = None,
    masks: str | Path | None = None,
    manifest: str | Path | None = None,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Train a model on ``data`` into the run folder ``out``; returns ``out``.

    An existing run in ``out`` is continued with ``resume``, replaced with ``overwrite``, and otherwise
    left alone (an error), so that a finished model is never clobbered by accident.
    """
    out = Path(out)
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
        cfg = config or build_config(preset or ("default" if not config_file else None), config_file, overrides)
    set_threads(cfg.train.threads)
    seed_everything(cfg.train.seed)
    # every name (architecture, encoder, options) is checked here, before any data is read
    model = create_model(cfg.model, load_weights=False)

    # ---- data: find, check, split, cache; the run folder is made only once the data is usable
    report = discover_and_check(data, images=images, masks=masks, manifest=manifest, progress=progress,
                                target=TargetSpec.from_config(cfg))
    if overwrite and not resume:
        for name in (LAST, BEST, "metrics.csv", "curves.png", "splits.csv", "config.yaml"):
            (out / name).unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / "data_report.txt", "\n".join(report.summary_lines()) + "\n")
    record_data_source(out, data=data, images=images, masks=masks, manifest=manifest)
    if report.n_fatal:
        log.warning("training on %d pairs, skipping %d with errors (listed above and in %s)", len(report.good),
                    report.n_fatal, out / "data_report.txt")
    prepared = split_for_training(report, out, val_fraction=cfg.data.val_fraction,
                                  test_fraction=cfg.data.test_fraction, seed=cfg.data.split_seed,
                                  reuse=resume)
    n_train, n_val = len(prepared.splits["train"]), len(prepared.splits["val"])
    log.info("%d training and %d validation images (split from %s)", n_train, n_val, prepared.source)
    if cfg.infer.train_side is None:  # the scale the model learns at; sliding-window inference tiles at it
        from medseg.inference.sliding import typical_long_side

        cfg.infer.train_side = typical_long_side(prepared.splits["train"])
    size, target = cfg.data.image_size, TargetSpec.from_config(cfg)
    train_ds = SegmentationDataset(prepared.splits["train"], size, augment=cfg.train.augment,
                                   cache=cfg.data.cache, progress=progress, desc="loading train",
                                   window=cfg.data.window, target=target)
    val_ds = SegmentationDataset(prepared.splits["val"], size, cache=cfg.data.cache, progress=progress,
                                 desc="loading val", window=cfg.data.window, target=target)
    bs = min(cfg.train.batch_size, n_train)
    loader_gen = torch.Generator().manual_seed(cfg.train.seed)
    sample_weights = (class_balanced_weights(train_ds, cfg.model.classes)
                      if cfg.train.sampler == "class_balanced" else None)
    val_loader = DataLoader(val_ds, batch_size=max(bs, cfg.infer.batch_size), num_workers=0)

    # ---- model, loss, optimiser, runtime
    rt = resolve_runtime(cfg.train.precision, cfg.train.channels_last)
    if resume_state is None:  # record what was really loaded ('auto' may fall back to none)
        cfg.model.encoder_weights = load_encoder_weights(model, cfg.model)
    model.to(rt.device, memory_format=rt.memory_format())
    counts = class_pixel_counts(train_ds, cfg.model.classes) if cfg.loss.class_weights == "auto" else None
    criterion = build_loss(cfg.loss, class_counts=counts)
    optimizer = build_optimizer(cfg, model)
    scaler = torch.amp.GradScaler(rt.device.type, enabled=rt.use_scaler)
    config_dict = cfg.model_dump(mode="json")
    save_config(cfg, out / "config.yaml")
    log.info("model %s/%s (%.1f M parameters) on %s", cfg.model.arch, cfg.model.encoder,
             model_summary(model)["parameters_m"], rt.describe())

    # ---- state (fresh or resumed)
    total_steps = sum(math.ceil(len(plan_epoch(cfg, e, n_train).indices or train_ds) / bs)
                      for e in range(1, cfg.train.epochs + 1))
    budget = cfg.train.time_budget_min * 60 if cfg.train.time_budget_min else None
    st = {"epoch": 0, "step": 0, "best_dice": -1.0, "best_epoch": 0, "bad_epochs": 0, "progress": 0.0}
    history: list[dict[str, Any]] = []
    if resume_state is not None:
        model.load_state_dict(resume_state["model"])
        optimizer.load_state_dict(resume_state["optimizer"])
        st.update(resume_state["state"])
        history = read_history(out / "metrics.csv")
        log.info("resuming at epoch %d (best val Dice %.4f)", st["epoch"] + 1, st["best_dice"])
    progress0 = st["progress"]
    schedule = LrSchedule(cfg.optim, cfg.train.epochs)
    if resume_state is not None and "schedule" in resume_state:
        schedule.load_state_dict(resume_state["schedule"])
    mean_std = cfg.data.mean_std
    session_start, val_seconds, stop_reason = time.monotonic(), 0.0, "epochs done"
    last_saved = session_start
    def say(message: str) -> None:  # above the progress bar, not inside it
        if progress:
            tqdm.write(f"note: {message}")
        else:
            log.warning("%s", message)

    estimate = (DurationEstimate(total_steps - st["step"], cfg.train.epochs - st["epoch"])
                if budget is None and rt.device.type == "cpu" else None)

    for epoch in range(st["epoch"] + 1, cfg.train.epochs + 1):
        plan = plan_epoch(cfg, epoch, n_train)
        apply_freezing(cfg, model, epoch)
        train_loader = make_train_loader(train_ds, plan, bs, cfg, loader_gen, sample_weights)
        loader_gen.manual_seed(cfg.train.seed * 1000 + epoch)
        if train_ds.augment is not None:
            train_ds.augment.set_random_seed(cfg.train.seed * 1000 + epoch)
        model.train()
        t0, seen, loss_sum, out_of_time = time.monotonic(), 0, 0.0, False
        bar = tqdm(train_loader, desc=f"epoch {epoch}/{cfg.train.epochs}", disable=not progress, leave=False,
                   unit="batch")
        for images, masks in bar:
            elapsed = time.monotonic() - session_start
            if budget and elapsed + val_seconds + 1.0 >= budget and seen:
                out_of_time = True
                break
            time_progress = progress0 + (1 - progress0) * elapsed / budget if budget else 0.0
            st["progress"] = max(st["step"] / total_steps, time_progress)
            lr = plan.lr if plan.lr is not None else schedule.lr(st["progress"], epoch)
            for group in optimizer.param_groups:
                group["lr"] = lr
            x = normalize_batch(images, *mean_std).to(rt.device, memory_format=rt.memory_format())
            y = masks.to(rt.device).float()
            with rt.autocast():
                logits = model(x)
            loss = criterion(logits, y)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            st["step"] += 1
            seen += len(x)
            loss_sum += loss.item() * len(x)
            if estimate is not None and (hint := estimate.step()):
                say(hint)
            bar.set_postfix(loss=f"{loss_sum / seen:.4f}", best_val_dice=f"{max(st['best_dice'], 0):.4f}",
                            lr=f"{lr:.1e}")
        train_seconds = time.monotonic() - t0
        if estimate is not None and (hint := estimate.epoch_end()):
            say(hint)
        v0 = time.monotonic()
        val_loss, val_dice = validate_epoch(model, val_loader, criterion, rt, mean_std, cfg.infer.threshold)
        val_seconds = time.monotonic() - v0
        st["epoch"] = epoch
        row = {"epoch": epoch, "train_loss": loss_sum / max(seen, 1), "val_loss": val_loss, "val_dice": val_dice,
               "lr": lr, "train_images": seen, "train_seconds": train_seconds,
               "train_img_per_s": seen / max(train_seconds, 1e-9),
               "epoch_seconds": time.monotonic() - t0,
               "elapsed_seconds": (history[-1]["elapsed_seconds"] if history else 0.0) + time.monotonic() - t0}
        history.append(row)
        schedule.epoch_end(val_dice)
        improved = val_dice > st["best_dice"]
        if improved:
            st.update(best_dice=val_dice, best_epoch=epoch, bad_epochs=0)
            save_checkpoint(out / BEST, model, config_dict, epoch=epoch, val_dice=val_dice)
        else:
            st["bad_epochs"] += 1
        # the in-epoch check lets every epoch take one step, so epochs of a single batch stop here
        out_of_time = out_of_time or bool(budget and time.monotonic() - session_start + 1.0 >= budget)
        finishing = out_of_time or st["bad_epochs"] >= cfg.train.patience or epoch == cfg.train.epochs
        if finishing or time.monotonic() - last_saved >= cfg.train.checkpoint_every_s:
            save_checkpoint(out / LAST, model, config_dict, epoch=epoch, val_dice=val_dice,
                            optimizer=optimizer.state_dict(), state=dict(st), schedule=schedule.state_dict())
            last_saved = time.monotonic()
        write_history(out / "metrics.csv", history)
        plot_curves(out / "curves.png", history, title=f"{cfg.name}: {cfg.model.arch}/{cfg.model.encoder}")
        msg = (f"epoch {epoch}: loss {row['train_loss']:.4f}, val loss {val_loss:.4f}, val Dice {val_dice:.4f}"
               f"{' (best)' if improved else ''}, {row['train_img_per_s']:.1f} img/s")
        (tqdm.write if progress else log.info)(msg)
        if out_of_time:
            stop_reason = f"time budget of {cfg.train.time_budget_min:g} min reached"
            break
        if st["bad_epochs"] >= cfg.train.patience:
            stop_reason = f"early stopping: no better val Dice for {cfg.train.patience} epochs"
            break
    log.info("%s; best val Dice %.4f at epoch %d; run folder %s", stop_reason, st["best_dice"],
             st["best_epoch"], out)
    return out
