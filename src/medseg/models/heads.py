"""Training-time outputs beside the main logits: deep-supervision heads and an edge (boundary) head.

A model with ``deep_supervision`` or ``edge_head`` returns, in training mode only, a
:class:`SegOutputs` (main logits, auxiliary logits at decoder levels, edge logits); in eval mode it
returns the main logits tensor like every other model. :class:`medseg.losses.SegmentationLoss`
accepts either, so the training loop calls ``criterion(model(x), y)`` in both cases;
:func:`main_logits` takes the main logits out of either for metrics.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn


class SegOutputs(NamedTuple):
    """What a model with auxiliary heads returns in training mode."""

    main: torch.Tensor  # (N, C, H, W) logits at the input size
    aux: tuple[torch.Tensor, ...] = ()  # (N, C, h_i, w_i) logits at decoder levels, finest first
    edge: torch.Tensor | None = None  # (N, 1, H, W) boundary logits


def main_logits(outputs: torch.Tensor | SegOutputs) -> torch.Tensor:
    """The main logits of a model's output, whether a tensor or :class:`SegOutputs`."""
    return outputs.main if isinstance(outputs, SegOutputs) else outputs


def conv_bn_relu(cin: int, cout: int, kernel: int = 3) -> nn.Sequential:
    """Conv (no bias) + BatchNorm + ReLU, 'same' padding."""
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, padding=kernel // 2, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


class EdgeHead(nn.Sequential):
    """Predicts mask boundaries (one logit channel) from the last decoder feature map."""

    def __init__(self, in_channels: int, mid_channels: int = 32) -> None:
        super().__init__(conv_bn_relu(in_channels, mid_channels), nn.Conv2d(mid_channels, 1, 1))


def aux_heads(level_channels: Sequence[int], classes: int) -> nn.ModuleList:
    """One 1x1 convolution to ``classes`` logits per decoder level (deep supervision)."""
    return nn.ModuleList(nn.Conv2d(c, classes, 1) for c in level_channels)


def pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Zero-pad the bottom and right of ``x`` so that height and width are multiples of ``multiple``."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    return F.pad(x, (0, pw, 0, ph)) if ph or pw else x


def crop_like(y: torch.Tensor, padded: tuple[int, int], size: tuple[int, int]) -> torch.Tensor:
    """Crop ``y`` (at any scale of the padded input) to the region of the unpadded input ``size``."""
    if tuple(padded) == tuple(size):
        return y
    sh, sw = y.shape[-2] / padded[0], y.shape[-1] / padded[1]
    return y[..., : max(1, round(size[0] * sh)), : max(1, round(size[1] * sw))]
