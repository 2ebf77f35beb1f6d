"""Validation of a patch-trained model: sliding windows over each whole validation image at the training scale."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from monai.inferers import sliding_window_inference

from medseg.data.transforms import normalize_batch
from medseg.engine.distributed import DistContext, gather_in_order, shard
from medseg.engine.runtime import Runtime
from medseg.metrics import batch_dice, batch_dice_multiclass
from medseg.models import main_logits


@torch.inference_mode()
def logit_dices(logits: torch.Tensor, y: torch.Tensor, threshold: float) -> list[float]:
    """Per-image Dice of logits (N, C, H, W) against masks (N, 1, H, W): sigmoid > threshold for one
    channel, argmax over classes (mean over foreground classes) otherwise."""
    if logits.shape[1] == 1:
        return batch_dice(torch.sigmoid(logits) > threshold, y > 0.5).tolist()
    return batch_dice_multiclass(logits.argmax(1), y[:, 0].long(), logits.shape[1]).tolist()


def gathered_means(ctx: DistContext, losses: list[float], dices: list[float], n: int) -> tuple[float, float]:
    """(mean loss, mean Dice) over all ranks' per-image values, in dataset order (as one process would)."""
    losses, dices = gather_in_order(ctx, losses, n), gather_in_order(ctx, dices, n)
    return float(np.mean(np.asarray(losses, np.float64))), float(np.mean(np.asarray(dices, np.float64)))


def validate_sliding(model, dataset, criterion, rt: Runtime, mean_std, threshold: float, *, window: int,
                     overlap: float, batch_size: int, ctx: DistContext, indices: list[int] | None = None
                     ) -> tuple[float, float]:
    """Mean per-image loss and Dice of ``model`` over whole images of ``dataset`` (a ScaledImageDataset).

    Each image (uint8, at the training scale) is zero padded to at least ``window`` (as training pads
    small images), normalised, and covered by ``window`` x ``window`` windows with ``overlap``, blended
    with Gaussian weights (MONAI ``sliding_window_inference``, ``mode="gaussian"``); loss and Dice are
    computed on the unpadded logits. ``indices``: the images to score (all by default); each process
    scores its share and the per-image values are gathered in order, as in ``validate_epoch``.
    """
    model.eval()
    chosen = list(range(len(dataset))) if indices is None else list(indices)
    mine = [chosen[i] for i in shard(range(len(chosen)), ctx)]
    losses: list[float] = []
    dices: list[float] = []

    def forward(x: torch.Tensor) -> torch.Tensor:
        with rt.autocast():
            return main_logits(model(x.contiguous(memory_format=rt.memory_format()))).float()

    for i in mine:
        image, mask = dataset[i]
        h, w = image.shape[-2:]
        padded = F.pad(image[None], (0, max(0, window - w), 0, max(0, window - h)))  # uint8 zeros
        x = normalize_batch(padded, *mean_std).to(rt.device)
        logits = sliding_window_inference(x, window, batch_size, forward, overlap=overlap, mode="gaussian",
                                          sigma_scale=0.125)[..., :h, :w]
        y = mask[None].to(rt.device).float()
        losses.append(criterion(logits, y).item())
        dices += logit_dices(logits, y, threshold)
    return gathered_means(ctx, losses, dices, len(chosen))
