"""The planner: dataset fingerprint + machine + time budget -> a training config, with a reason for each value.

Every decision reads figures of the :class:`~medseg.plan.fingerprint.Fingerprint` and the
:class:`~medseg.plan.machine.Machine`; no dataset is known by name. The rules, in order:

1. **Resolution.** A structure must stay at least :data:`MIN_WIDTH_PX` px wide at the network's input
   (the median area-weighted medial-axis width, ``structure_width_area``). Whole images are letterboxed to one side when
   that side keeps them so (large objects); thin structures or images longer than
   :data:`LARGE_IMAGE_PX` are trained on random patches at the scale that keeps them, with a third of
   the patches centred on foreground (nnU-Net's oversampling, Isensee et al. 2021) and sliding-window
   inference at the same scale.
2. **Network and input side, for the budget.** Each candidate (catalogue network x side) gets
   ``steps = img/s x training seconds / batch`` from the machine's measured speed; the plan takes the
   largest network, then the largest side, that still reaches :data:`TARGET_STEPS` optimiser steps
   and :data:`TARGET_EPOCHS` epochs (the fastest one when none does). Pretrained encoders (weights on
   this machine) come first.
3. **Recipe.** AdamW 1e-3 with cosine to zero on the elapsed-time fraction, short warm-up, batch 8
   (CPU) / 16 (GPU), early stopping that cannot end the run before its budget, precision and
   channels_last from the probe, augmentation by modality (photos: colour; grey: none; CT: intensity
   scaling), multi-class: loss weights from class frequencies (inverse square root) and a
   class-balanced sampler when a class is rare; DICOM CT: clip to the 0.5-99.5 % foreground HU
   percentiles and z-score with the foreground mean and std (nnU-Net's CTNormalization,
   ``data.normalize: ct``) unless the user gave a ``data.window``, which is then kept as the only
   intensity setting (today's fixed window, ImageNet normalisation).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from medseg.plan.catalogue import Network
from medseg.plan.fingerprint import Fingerprint
from medseg.plan.machine import Machine

#: a structure narrower than this (px) at the network input is considered lost (its two edges and a
#: centre line must stay apart for 3x3 convolutions to see it)
MIN_WIDTH_PX = 4.0
#: images whose long side exceeds this (px) are trained on patches whatever their structures
LARGE_IMAGE_PX = 1024
#: letterboxing goes no lower than this side (px) unless the images are smaller
LETTERBOX_FLOOR = 256
#: candidate letterbox sides and patch sides (px, multiples of 32)
SIDES = (128, 160, 192, 224, 256, 320, 384, 448, 512, 640, 768, 1024)
PATCH_SIDES = (128, 192, 256, 320, 384, 512)
#: optimiser steps a budget should give (the issue-9 peer made about this many on a bf16 CPU in 15 min)
TARGET_STEPS = 600
#: times each training image should be seen: a network trained from scratch on a large dataset needs
#: epochs as well as steps (ISIC, 1600 training images, 20 min on a 2-core bf16 CPU, BENCHMARKS.md:
#: MONAI UNet 32 in 14 epochs reached val Dice 0.880, the default in 9 epochs 0.854; the 600-step rule
#: alone chose DynUNet 32 at about 3 epochs); small datasets reach it at once
TARGET_EPOCHS = 8
#: share of the budget that validation may take (its cost is estimated from the measured speed)
VAL_SHARE = 0.05
#: share of the budget left for training steps (loading, validation, checkpoints take the rest)
TRAIN_SHARE = 0.8
#: fraction of patches centred on foreground (nnU-Net: one third)
FOREGROUND_OVERSAMPLE = 0.33
#: EMA decay of the weights used for validation and the saved model
EMA_DECAY = 0.999

@dataclass
class Choice:
    key: str  # dotted config key
    value: Any
    why: str


@dataclass
class Plan:
    """The planned config (a nested dict for :func:`medseg.config.validate`) and why each value."""

    choices: list[Choice] = field(default_factory=list)
    candidates: list[dict] = field(default_factory=list)  # every (network, side) weighed, with its steps
    mode: str = "letterbox"  # what the config does: letterbox or patches
    needs_patches: bool = False  # the data asks for patches (thin structures or large images)

    def set(self, key: str, value: Any, why: str) -> None:
        self.choices.append(Choice(key, value, why))

    def config_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for c in self.choices:
            section, _, name = c.key.partition(".")
            out.setdefault(section, {})[name] = c.value
        return out

    def value(self, key: str) -> Any:
        return next((c.value for c in self.choices if c.key == key), None)


def _round32(x: float) -> int:
    return max(32, int(math.ceil(x / 32.0)) * 32)


def _pick(machine: Machine, networks: list[Network], sides: list[int], train_s: float, batch: int, n_train: int,
          plan: Plan) -> tuple[Network, int, float]:
    """Largest (pretrained first, then parameters, then side) candidate reaching TARGET_STEPS and
    TARGET_EPOCHS; else the fastest."""
    rows = []
    for net in networks:
        for side in sides:
            img_per_s = machine.images_per_s(net.name, side)
            steps = img_per_s * train_s / batch
            rows.append((net, side, steps))
            plan.candidates.append({"network": net.name, "params_m": net.params_m, "side": side,
                                    "img_per_s": round(img_per_s, 2), "steps": int(steps)})
    feasible = [r for r in rows if r[2] >= TARGET_STEPS and r[2] * batch / n_train >= TARGET_EPOCHS]
    if feasible:
        return max(feasible, key=lambda r: (r[0].pretrained, r[0].params_m, r[1]))
    return max(rows, key=lambda r: (r[2], -r[1]))


def make_plan(fp: Fingerprint, machine: Machine, budget_min: float, networks: list[Network], *,
              user: dict[str, Any] | None = None) -> Plan:
    """Plan training of the fingerprinted data on ``machine`` within ``budget_min`` minutes.

    ``networks``: the catalogue candidates (all must have speeds in ``machine``); ``user``: the user's own
    settings (nested dict, e.g. from ``--set``), which the plan respects (a given ``data.window`` is
    kept). Returns a :class:`Plan`; the same inputs always give the same plan.
    """
    user = user or {}
    plan = Plan()
    long_side = max(fp.height.median, fp.width.median)
    n_train = max(1, round(fp.n_pairs * 0.8))
    cuda = machine.device == "cuda"
    batch = 16 if cuda and (machine.cuda_memory_gb or 0) >= 16 else 8
    batch = max(2, min(batch, n_train))
    train_s = budget_min * 60 * TRAIN_SHARE

    # ---- 1. resolution: how far can the images shrink before the structures vanish?
    # the area-weighted width: the structures that hold most of the foreground (fingerprint docstring)
    dist, rel = ((fp.structure_width_area, fp.structure_width_area_rel) if fp.structure_width_area else
                 (fp.structure_width, fp.structure_width_rel))
    width = dist.median if dist else None
    if width:
        keep_side = long_side * MIN_WIDTH_PX / width  # side at which the median structure is MIN_WIDTH_PX wide
        name = "structure_width_area" if fp.structure_width_area else "structure_width"
        width_note = (f"median structure width {width:.1f} px ({name}) of a {long_side:.0f} px long side "
                      f"(relative {rel.median:.4f})")
    else:
        keep_side, width_note = 128.0, "no structure width (empty masks)"
    thin = keep_side > LETTERBOX_FLOOR
    large = long_side > LARGE_IMAGE_PX
    plan.needs_patches = thin or large
    scale = min(1.0, keep_side / long_side)
    native = _round32(long_side * scale)
    if thin or large:
        plan.mode = "patches"
        sides = [s for s in PATCH_SIDES if s <= max(native, PATCH_SIDES[0])]
        why_mode = (f"{width_note}: the structures need a {keep_side:.0f} px side to stay {MIN_WIDTH_PX:g} px wide"
                    if thin else f"images are large (long side {long_side:.0f} px > {LARGE_IMAGE_PX})")
    else:
        plan.mode = "letterbox"
        # not below the structures' side, nor below 256 px (the side where letterboxing is known to work)
        # unless the images are smaller; larger sides only when the budget affords them
        lo = max(_round32(keep_side), min(LETTERBOX_FLOOR, _round32(long_side)))
        sides = [s for s in SIDES if lo <= s <= max(lo, min(_round32(long_side), 512))] or [lo]
        why_mode = f"{width_note}: objects survive letterboxing to {lo} px or more"

    # ---- 2. network and side for the budget
    net, side, steps = _pick(machine, networks, sides, train_s, batch, n_train, plan)
    ips = machine.images_per_s(net.name, side)
    epochs_expected = ips * train_s / n_train
    speed = (f"{ips:.3g} img/s on this {machine.device} ({machine.precision}) -> about {int(steps)} optimiser steps "
             f"of {batch} and {epochs_expected:.1f} epochs of ~{n_train} training images in "
             f"{train_s / 60:.1f} of {budget_min:g} min")
    reach = (f"the largest candidate reaching {TARGET_STEPS} steps and {TARGET_EPOCHS} epochs"
             if steps >= TARGET_STEPS and epochs_expected >= TARGET_EPOCHS else
             f"no candidate reaches {TARGET_STEPS} steps and {TARGET_EPOCHS} epochs; the fastest")
    plan.set("model.arch", net.model["arch"], f"{net.label}: {reach}; {speed}")
    for key, value in net.model.items():
        if key not in ("arch", "encoder_weights"):
            plan.set(f"model.{key}", value, f"part of network {net.name}")
    if plan.mode == "patches":
        plan.set("data.image_size", side, "patch side (the network input)")
        plan.set("data.patch_size", side, f"{why_mode}; largest patch affordable: {speed}")
        plan.set("data.scale", round(scale, 3), f"resampling factor keeping the median structure "
                 f">= {MIN_WIDTH_PX:g} px ({width_note})")
        plan.set("data.foreground_oversample", FOREGROUND_OVERSAMPLE, "nnU-Net samples a third of patches "
                 "around foreground")
    else:
        plan.set("data.image_size", side, f"letterbox: {why_mode}; {speed}")

    # ---- 3. recipe
    plan.set("train.batch_size", batch, f"{'GPU with >= 16 GB' if batch == 16 else 'CPU'}: the peer's batch "
             f"of 8, 16 on a large GPU; at most the ~{n_train} training images")
    plan.set("train.time_budget_min", budget_min, "the budget")
    plan.set("train.epochs", 10_000, "the budget ends training, not an epoch count")
    plan.set("train.patience", max(15, int(epochs_expected) + 1),
             f"more than the {epochs_expected:.1f} epochs the budget allows: epoch-counted patience must not "
             "end a short run early")
    plan.set("train.patience_min", round(budget_min / 3, 2), "early stopping after a third of the budget "
             "without a better val Dice")
    # a forward pass costs about a third of a training step; sliding validation runs overlapping windows
    windows = math.ceil(long_side * scale / (0.75 * side)) ** 2 if plan.mode == "patches" else 1
    val_s = (fp.n_pairs - n_train) * windows / (3 * ips)
    every = math.ceil(max(30.0, budget_min * 60 / 20, val_s / VAL_SHARE) * 10) / 10
    plan.set("train.val_every_s", every, f"about {budget_min * 60 / every:.0f} validations per run, "
             f"each ~{val_s:.0f} s ({fp.n_pairs - n_train} images), at most {VAL_SHARE:.0%} of the budget")
    plan.set("train.ema", EMA_DECAY, "EMA of the weights for validation and the saved model")
    plan.set("train.compile", "auto", "torch.compile the training step when the run measures it faster than "
             "eager on its first batch (1.2-1.8x for the MONAI networks, none for the SMP U-Net on the CPUs "
             "measured in BENCHMARKS.md)")
    plan.set("optim.name", "adamw", "AdamW, the from-scratch recipe of the issue-9 peer")
    lr = 1e-4 if net.pretrained else 1e-3
    plan.set("optim.lr", lr, "pretrained encoder: 1e-4" if net.pretrained else "from scratch: 1e-3")
    plan.set("optim.weight_decay", 1e-4, "light regularisation")
    plan.set("optim.schedule", "cosine", "cosine on the elapsed fraction of the budget")
    plan.set("optim.min_lr", 0.0, "cosine to zero at the end of the budget")
    warmup = round(min(1.0, 0.05 * epochs_expected), 2)
    plan.set("optim.warmup_epochs", warmup, f"about 5 % of the {epochs_expected:.1f} expected epochs (at most 1)")
    precision = "auto" if cuda else machine.precision
    plan.set("train.precision", precision, "GPU: autocast" if cuda else
             (f"bf16 matmul {machine.bf16_speedup}x fp32 on this CPU" if precision == "bf16" else
              f"this CPU has no fast bf16 (native {machine.bf16_native}, matmul {machine.bf16_speedup}x fp32)"))
    plan.set("train.channels_last", "auto" if cuda else ("on" if machine.channels_last else "off"),
             "with bf16 autocast channels_last is faster on CPU; contiguous otherwise")
    plan.set("model.encoder_weights", net.model.get("encoder_weights"),
             "ImageNet weights found on this machine" if net.pretrained else "from scratch (MONAI network)")

    # augmentation by modality
    if fp.modality == "CT":
        aug, why = "ct", "CT: flips, rot90 and intensity scaling, no colour"
    elif fp.channels == 3:
        aug, why = "photo", f"colour images ({fp.modality}): flips, rot90, brightness/contrast and hue"
    else:
        aug, why = "grey", f"grey images ({fp.modality}): flips, rot90, brightness/contrast, noise; no colour jitter"
    plan.set("train.augment", aug, why)
    _intensity(fp, plan, user)
    _classes(fp, plan)
    return plan


def _intensity(fp: Fingerprint, plan: Plan, user: dict[str, Any]) -> None:
    """DICOM CT: nnU-Net's CTNormalization (Isensee et al. 2021): clip to the 0.5-99.5 % HU percentiles of
    the foreground, then z-score with the foreground mean and std (HU); a user's data.window wins."""
    if fp.modality != "CT":
        return
    if (user.get("data") or {}).get("window"):
        plan.set("data.window", user["data"]["window"], "CT with your window: it is kept, with today's "
                 "normalisation, instead of nnU-Net's clip to the foreground HU percentiles and z-score")
        return
    stats = fp.modality_values_foreground or fp.modality_values
    if stats is None or stats.p99_5 <= stats.p0_5 or stats.std <= 0:
        return
    lo, hi = stats.p0_5, stats.p99_5
    where = "foreground" if fp.modality_values_foreground else "all"
    # the LINEAR window C,W clips to [C - 0.5 - (W-1)/2, C - 0.5 + (W-1)/2] (PS3.3 C.11.2.1.2): exactly [lo, hi]
    plan.set("data.window", f"{(lo + hi) / 2 + 0.5:g},{hi - lo + 1:g}", f"CT: clip to the 0.5-99.5 % HU "
             f"percentiles of {where} pixels ({lo:g} to {hi:g} HU), nnU-Net's CT clipping; a data.window you "
             "give replaces this clip and the z-score")
    plan.set("data.normalize", "ct", f"CT: z-score with the {where} mean and std, nnU-Net's CTNormalization")
    plan.set("data.intensity_mean", round(stats.mean, 2), f"mean of {where} pixels (HU)")
    plan.set("data.intensity_std", round(stats.std, 2), f"standard deviation of {where} pixels (HU)")


def _classes(fp: Fingerprint, plan: Plan) -> None:
    """Binary: Dice + BCE. Multi-class: Dice + CE weighted by class frequency, rare classes oversampled."""
    labels = sorted(fp.classes)
    k = max(labels) + 1 if labels else 2
    if k <= 2:
        plan.set("loss.name", "dice_bce", "binary masks: Dice + BCE")
        return
    freqs = [fp.classes.get(c, 0.0) for c in range(k)]
    plan.set("model.classes", k, f"label values 0..{k - 1} in the masks")
    present = [f for f in freqs if f > 0]
    weights = [round((sum(present) / (len(present) * f)) ** 0.5, 3) if f > 0 else 0.0 for f in freqs]
    plan.set("loss.name", "dice_ce", f"{k} classes: Dice + cross-entropy")
    plan.set("loss.class_weights", weights, "inverse square root of the class pixel shares "
             + ", ".join(f"{c}: {f:.2%}" for c, f in enumerate(freqs)))
    fg = [f for f in freqs[1:] if f > 0]
    if fg and min(fg) < 0.2 * max(fg):
        plan.set("train.sampler", "class_balanced", f"the rarest class has {min(fg):.2%} of the pixels, under a "
                 f"fifth of the commonest foreground class ({max(fg):.2%}): oversample images that hold it")
