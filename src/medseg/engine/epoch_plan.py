"""Per-epoch training plan: progressive stages (lr, data share, augmentation) and encoder freezing."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from medseg.config import Config, StageConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EpochPlan:
    stage: int  # 0 without stages
    lr: float | None  # None: the schedule decides
    indices: list[int] | None  # None: all training images
    augment: str


def plan_epoch(cfg: Config, epoch: int, n_train: int) -> EpochPlan:
    """What epoch ``epoch`` (1-based) trains on, with which augmentation and (for stages) which lr."""
    if not cfg.train.stages:
        return EpochPlan(0, None, None, cfg.train.augment)
    first = 1
    stage: StageConfig = cfg.train.stages[-1]
    number = len(cfg.train.stages)
    for i, s in enumerate(cfg.train.stages, start=1):
        if epoch < first + s.epochs:
            stage, number = s, i
            break
        first += s.epochs
    order = torch.randperm(n_train, generator=torch.Generator().manual_seed(cfg.train.seed)).tolist()
    keep = max(1, round(stage.data_fraction * n_train))
    indices = None if keep >= n_train else sorted(order[:keep])
    return EpochPlan(number, stage.lr, indices, stage.augment)


def apply_freezing(cfg: Config, model: torch.nn.Module, epoch: int) -> None:
    """Freeze the encoder from ``train.freeze_encoder_epoch``; unfreeze it at ``train.unfreeze_encoder_epoch``."""
    from medseg.models import freeze_encoder, unfreeze_encoder

    t = cfg.train
    if t.unfreeze_encoder_epoch is not None and epoch == t.unfreeze_encoder_epoch:
        unfreeze_encoder(model)
        log.info("epoch %d: encoder unfrozen", epoch)
    if t.freeze_encoder_epoch is not None and epoch == t.freeze_encoder_epoch:
        n = freeze_encoder(model)
        log.info("epoch %d: encoder frozen (%d parameters); decoder and head keep learning", epoch, n)
