"""Learning-rate schedules with warm-up: cosine, step, reduce-on-plateau, constant.

``progress`` runs from 0 to 1 over the run: the larger of steps done / total steps and, with a time
budget, time spent / budget, so a cosine schedule ends on time whichever limit comes first.
Step milestones count epochs; the plateau schedule watches validation Dice.
"""

from __future__ import annotations

import math

from medseg.config import OptimConfig


class LrSchedule:
    """The learning rate for a point in training; ``epoch_end(val_dice)`` feeds the plateau rule."""

    def __init__(self, cfg: OptimConfig, epochs: int) -> None:
        self.cfg = cfg
        self.warmup = cfg.warmup_epochs / max(epochs, 1)
        self.plateau_scale = 1.0
        self._best = -math.inf
        self._stale = 0

    def lr(self, progress: float, epoch: int) -> float:
        """Learning rate at ``progress`` in [0, 1] during ``epoch`` (1-based)."""
        c = self.cfg
        if c.schedule == "cosine":
            t = min(1.0, max(0.0, (progress - self.warmup) / max(1e-8, 1.0 - self.warmup)))
            base = c.min_lr + (c.lr - c.min_lr) * 0.5 * (1.0 + math.cos(math.pi * t))
        elif c.schedule == "step":
            base = c.lr
            for milestone, value in zip(c.milestones, c.milestone_lrs, strict=True):
                if epoch > milestone:
                    base = value
        elif c.schedule == "plateau":
            base = c.lr * self.plateau_scale
        else:
            base = c.lr
        if self.warmup > 0 and progress < self.warmup:
            base *= max(progress / self.warmup, 0.01)
        return max(base, c.min_lr)

    def epoch_end(self, val_dice: float) -> None:
        if self.cfg.schedule != "plateau":
            return
        if val_dice > self._best + 1e-4:
            self._best, self._stale = val_dice, 0
            return
        self._stale += 1
        if self._stale >= self.cfg.plateau_patience:
            self.plateau_scale *= self.cfg.plateau_factor
            self._stale = 0

    def state_dict(self) -> dict:
        return {"plateau_scale": self.plateau_scale, "best": self._best, "stale": self._stale}

    def load_state_dict(self, state: dict) -> None:
        self.plateau_scale, self._best, self._stale = state["plateau_scale"], state["best"], state["stale"]
