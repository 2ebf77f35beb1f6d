"""The classic U-Net (Ronneberger et al., 2015), with batch norm and 'same' padding.

Four down-sampling levels; each level is two 3x3 conv + BN + ReLU; channels ``base * (1, 2, 4, 8, 16)``
(64..1024 by default). Up-sampling by 2x2 transposed convolution, or by bilinear interpolation followed
by a 1x1 convolution; either way the channel plan stays the original one. Parameters: base 64 -> 31.0 M
(transposed) / 28.9 M (bilinear), 32 -> 7.8 M, 16 -> 1.9 M. No pretrained weights exist for it.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from medseg.models.base import Segmenter
from medseg.models.heads import conv_bn_relu


def double_conv(cin: int, cout: int) -> nn.Sequential:
    """Two 3x3 conv + BN + ReLU."""
    return nn.Sequential(conv_bn_relu(cin, cout), conv_bn_relu(cout, cout))


class ClassicEncoder(nn.Module):
    """The contracting path; returns the five level outputs, full resolution first."""

    def __init__(self, in_channels: int, channels: tuple[int, ...]) -> None:
        super().__init__()
        self.out_channels = channels
        downs = [nn.Sequential(nn.MaxPool2d(2), double_conv(a, b))
                 for a, b in zip(channels[:-1], channels[1:], strict=True)]
        self.levels = nn.ModuleList([double_conv(in_channels, channels[0]), *downs])

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = []
        for level in self.levels:
            x = level(x)
            features.append(x)
        return features


class UpBlock(nn.Module):
    """Up-sample x2 halving the channels, concatenate the skip, double conv."""

    def __init__(self, cin: int, cout: int, upsampling: Literal["bilinear", "transpose"]) -> None:
        super().__init__()
        if upsampling == "transpose":
            self.up = nn.ConvTranspose2d(cin, cout, kernel_size=2, stride=2)
        else:
            self.up = nn.Sequential(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
                                    nn.Conv2d(cin, cout, kernel_size=1))
        self.conv = double_conv(2 * cout, cout)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.conv(torch.cat([self.up(x), skip], dim=1))


class ClassicDecoder(nn.Module):
    """The expanding path; returns the final feature map and the three coarser level outputs."""

    def __init__(self, channels: tuple[int, ...], upsampling: Literal["bilinear", "transpose"]) -> None:
        super().__init__()
        rev = channels[::-1]
        self.blocks = nn.ModuleList(UpBlock(a, b, upsampling) for a, b in zip(rev[:-1], rev[1:], strict=True))

    def forward(self, features: list[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        x, outs = features[-1], []
        for block, skip in zip(self.blocks, features[-2::-1], strict=True):
            x = block(x, skip)
            outs.append(x)
        return x, outs[-2::-1]  # levels finest first: 1/2, 1/4, 1/8


class ClassicUNet(Segmenter):
    """Classic U-Net; ``base`` sets the width (64 as published, 32 or 16 for small variants)."""

    pad_multiple = 16
    pretrained_encoder = False

    def __init__(self, in_channels: int = 3, classes: int = 1, base: int = 64,
                 upsampling: Literal["bilinear", "transpose"] = "bilinear", attention: str = "none",
                 deep_supervision: bool = False, edge_head: bool = False) -> None:
        super().__init__()
        channels = tuple(base * 2**i for i in range(5))
        self.encoder = ClassicEncoder(in_channels, channels)
        self.decoder = ClassicDecoder(channels, upsampling)
        self.segmentation_head = nn.Conv2d(channels[0], classes, kernel_size=1)
        self.level_channels = channels[1:4]
        if attention == "cbam":
            self.add_skip_attention(channels, range(4))
        self.add_training_heads(classes=classes, decoder_channels=channels[0], deep_supervision=deep_supervision,
                                edge_head=edge_head)

    def decode(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        return self.decoder(self.encode(x))
