"""CBAM (Woo et al., ECCV 2018): channel then spatial attention, used on U-Net skip connections."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class ChannelAttention(nn.Module):
    """Channel weights from a shared MLP over average- and max-pooled features."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        hidden = max(channels // reduction, 4)
        self.mlp = nn.Sequential(nn.Conv2d(channels, hidden, 1, bias=False), nn.ReLU(inplace=True),
                                 nn.Conv2d(hidden, channels, 1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        avg = self.mlp(x.mean(dim=(2, 3), keepdim=True))
        mx = self.mlp(x.amax(dim=(2, 3), keepdim=True))
        return x * torch.sigmoid(avg + mx)


class SpatialAttention(nn.Module):
    """A spatial weight map from a 7x7 convolution over channel-wise mean and max."""

    def __init__(self, kernel_size: int = 7) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
        return x * torch.sigmoid(self.conv(pooled))


class CBAM(nn.Sequential):
    """Convolutional Block Attention Module: channel attention, then spatial attention."""

    def __init__(self, channels: int, reduction: int = 16, kernel_size: int = 7) -> None:
        super().__init__(ChannelAttention(channels, reduction), SpatialAttention(kernel_size))


class SkipAttention(nn.Module):
    """CBAM on the encoder features a decoder uses as skip connections.

    ``channels`` are the encoder's feature channels (input resolution first); ``skips`` the indices of
    the features that are skips. Other features (the bottleneck, SMP's identity input, empty
    placeholders) pass unchanged.
    """

    def __init__(self, channels: Sequence[int], skips: Sequence[int]) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(CBAM(c) if i in set(skips) and c > 0 else nn.Identity()
                                    for i, c in enumerate(channels))

    def forward(self, features: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        return [block(f) for block, f in zip(self.blocks, features, strict=True)]
