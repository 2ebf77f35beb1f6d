"""The base of every medseg model: encoder -> decoder -> segmentation head (+ optional training heads).

A :class:`Segmenter` has ``encoder``, ``decoder`` (inside :meth:`decode`) and ``segmentation_head``
modules, with the same state-dict keys as segmentation-models-pytorch models. It

- accepts any input size down to ``min_size``: inputs are zero-padded (bottom/right) to
  ``pad_multiple`` and the outputs cropped back, so a 100x132 image gives 100x132 logits;
- returns logits (N, classes, H, W) in eval mode, and in training mode too unless deep supervision or
  an edge head is on, when it returns :class:`~medseg.models.heads.SegOutputs`;
- keeps the normalisation layers of frozen encoder layers in eval mode through ``model.train()``
  (see :mod:`medseg.models.freeze`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from medseg.models.attention import SkipAttention
from medseg.models.heads import EdgeHead, SegOutputs, aux_heads, crop_like, pad_to_multiple


class Segmenter(nn.Module):
    """Base class: subclasses build ``encoder``/``segmentation_head`` and implement :meth:`decode`."""

    #: inputs are padded to a multiple of this (the encoder's output stride where it needs one)
    pad_multiple: int = 1
    #: smallest input side the architecture works with (after padding)
    min_size: int = 1
    #: whether ``encoder`` can take ImageNet weights (medseg.models.weights)
    pretrained_encoder: bool = True
    #: decoder levels that deep supervision taps, finest first (channels); () when not supported
    level_channels: tuple[int, ...] = ()

    def __init__(self) -> None:
        super().__init__()
        self.frozen_norms: list[str] = []  # names of norm layers kept in eval mode (freeze.py)
        self.skip_attention: SkipAttention | None = None
        self.aux_heads: nn.ModuleList | None = None
        self.edge_head: EdgeHead | None = None

    # -- to implement
    def decode(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """(last decoder feature map, decoder level feature maps finest first) for a padded input."""
        raise NotImplementedError

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Encoder features (input resolution first), with CBAM on the skips when configured."""
        features = self.encoder(x)
        return self.skip_attention(features) if self.skip_attention is not None else features

    # -- options
    def add_training_heads(self, *, classes: int, decoder_channels: int, deep_supervision: bool,
                           edge_head: bool) -> None:
        """Add deep-supervision heads at ``level_channels`` and/or an edge head."""
        if deep_supervision:
            self.aux_heads = aux_heads(self.level_channels, classes)
        if edge_head:
            self.edge_head = EdgeHead(decoder_channels)

    def add_skip_attention(self, channels: Sequence[int], skips: Sequence[int]) -> None:
        """Put CBAM on the encoder features with indices ``skips``."""
        self.skip_attention = SkipAttention(channels, skips)

    # -- forward
    def forward(self, x: torch.Tensor) -> torch.Tensor | SegOutputs:
        size = tuple(x.shape[-2:])
        x = pad_to_multiple(x, self.pad_multiple)
        padded = tuple(x.shape[-2:])
        if min(padded) < self.min_size:
            from medseg.errors import ConfigError

            name = getattr(self, "arch", type(self).__name__)
            raise ConfigError(f"{name} needs inputs of at least {self.min_size}x{self.min_size} px, "
                              f"got {size[0]}x{size[1]}; use a larger data.image_size")
        features, levels = self.decode(x)
        main = self.segmentation_head(features)
        if main.shape[-2:] != x.shape[-2:]:
            main = F.interpolate(main, size=padded, mode="bilinear", align_corners=False)
        main = crop_like(main, padded, size)
        if not self.training or (self.aux_heads is None and self.edge_head is None):
            return main
        aux: tuple[torch.Tensor, ...] = ()
        if self.aux_heads is not None:
            aux = tuple(crop_like(head(f), padded, size) for head, f in zip(self.aux_heads, levels, strict=True))
        edge = None
        if self.edge_head is not None:
            edge = F.interpolate(self.edge_head(features), size=padded, mode="bilinear", align_corners=False)
            edge = crop_like(edge, padded, size)
        return SegOutputs(main, aux, edge)

    def train(self, mode: bool = True) -> Segmenter:
        """Set training mode, keeping frozen normalisation layers in eval mode."""
        super().train(mode)
        for name in self.frozen_norms:
            self.get_submodule(name).eval()
        return self
