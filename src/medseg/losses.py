"""Registered losses. Each takes logits (N,C,H,W) and targets (N,1,H,W) in {0,1} for binary."""

from __future__ import annotations

import torch
from torch import nn

from medseg.registry import Registry

LOSSES = Registry("loss")


class DiceBCELoss(nn.Module):
    """weighted soft Dice (MONAI, over the batch) + binary cross-entropy on logits."""

    def __init__(self, dice_weight: float = 1.0, bce_weight: float = 1.0) -> None:
        super().__init__()
        from monai.losses import DiceLoss

        self.dice = DiceLoss(sigmoid=True, batch=True, smooth_nr=1e-5, smooth_dr=1e-5)
        self.bce = nn.BCEWithLogitsLoss()
        self.dice_weight, self.bce_weight = dice_weight, bce_weight

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logits, target = logits.float(), target.float()
        return self.dice_weight * self.dice(logits, target) + self.bce_weight * self.bce(logits, target)


@LOSSES.register("dice_bce", help="soft Dice + binary cross-entropy (the tutorials' default)")
def _dice_bce(dice_weight: float = 1.0, bce_weight: float = 1.0) -> nn.Module:
    return DiceBCELoss(dice_weight, bce_weight)


def build_loss(cfg) -> nn.Module:
    """Build the loss named in a :class:`~medseg.config.LossConfig`."""
    params = cfg.model_dump(exclude={"name"})
    return LOSSES.build(cfg.name, **params)
