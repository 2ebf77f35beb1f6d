"""Exponential moving average (EMA) of the weights, validated and saved in place of the raw weights.

Built on ``torch.optim.swa_utils.AveragedModel`` (parameters and buffers, so BatchNorm statistics are
averaged too). The decay warms up as ``min(decay, (1 + n) / (10 + n))`` after ``n`` updates, the
``num_updates`` rule of TensorFlow's ``tf.train.ExponentialMovingAverage``, so that a short run's
average is not dominated by the random initial weights (with decay 0.999 the plain average still
holds 37 % of the initial weights after 1000 steps).
"""

from __future__ import annotations

import torch
from torch.optim.swa_utils import AveragedModel


def _warm_ema(decay: float):
    @torch.no_grad()
    def update(averaged: list[torch.Tensor], current: list[torch.Tensor], n_averaged) -> None:
        n = float(n_averaged.item() if torch.is_tensor(n_averaged) else n_averaged)
        d = min(decay, (1.0 + n) / (10.0 + n))
        if torch.is_floating_point(averaged[0]):
            torch._foreach_lerp_(averaged, current, 1.0 - d)  # a <- d * a + (1 - d) * c
        else:  # integer buffers (BatchNorm's num_batches_tracked): the model's own count
            for a, c in zip(averaged, current, strict=True):
                a.copy_(c)

    return update


class WeightEma:
    """EMA of ``model``'s parameters and buffers with decay ``decay`` (``train.ema``).

    ``update()`` after every optimiser step; ``module`` is the averaged copy (same class as ``model``),
    to evaluate and to save. ``state_dict``/``load_state_dict`` carry the average and its step count
    for resuming.
    """

    def __init__(self, model: torch.nn.Module, decay: float) -> None:
        self.decay = decay
        self.model = model
        self.averaged = AveragedModel(model, multi_avg_fn=_warm_ema(decay), use_buffers=True)
        self.averaged.eval()

    @property
    def module(self) -> torch.nn.Module:
        return self.averaged.module

    def update(self) -> None:
        self.averaged.update_parameters(self.model)

    def state_dict(self) -> dict:
        return {"module": self.module.state_dict(), "n_averaged": int(self.averaged.n_averaged.item())}

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state["module"])
        self.averaged.n_averaged.fill_(int(state["n_averaged"]))
