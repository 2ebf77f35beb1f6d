"""Model size and cost: parameters and GFLOPs of a built model at an input size (a leaf: imports no medseg module).

FLOPs are counted by ``torch.utils.flop_counter.FlopCounterMode`` on one image in eval mode: a
multiply-add counts as 2 FLOPs (papers that quote "FLOPs" from fvcore/thop count multiply-adds, i.e.
half these numbers); only convolutions and matrix products are counted, not activations,
normalisation or pooling. ``medseg.catalog`` builds the per-architecture table from these.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


def count_flops(model: nn.Module, size: int | tuple[int, int], in_channels: int = 3) -> float:
    """FLOPs of one forward pass of ``model`` on a (1, in_channels, H, W) input, in eval mode."""
    from torch.utils.flop_counter import FlopCounterMode

    h, w = (size, size) if isinstance(size, int) else size
    p = next(model.parameters())
    x = torch.zeros(1, in_channels, h, w, device=p.device, dtype=p.dtype)
    was_training = model.training
    model.eval()
    counter = FlopCounterMode(display=False)
    try:
        with counter, torch.no_grad():
            model(x)
    finally:
        model.train(was_training)
    return float(counter.get_total_flops())


def model_summary(model: nn.Module, size: int | None = None, in_channels: int = 3) -> dict[str, Any]:
    """Parameters (total, trainable, in millions) and, when ``size`` is given, GFLOPs at that size."""
    n = sum(p.numel() for p in model.parameters())
    out: dict[str, Any] = {"parameters": n, "parameters_m": round(n / 1e6, 2),
                           "trainable": sum(p.numel() for p in model.parameters() if p.requires_grad)}
    if size is not None:
        out["gflops"] = round(count_flops(model, size, in_channels) / 1e9, 2)
    return out
