"""PSPNet (Zhao et al., 2017) with configurable pyramid bins over any SMP or timm encoder.

SMP's own ``pspnet`` has fixed bins (1, 2, 3, 6); this one takes ``bins`` (``dicom-pspnet``: 1, 3, 5, 7).
The deepest encoder feature (at ``output_stride`` 8, 16 or 32; 8 and 16 by dilation) is average-pooled
to each ``b x b`` grid, reduced by a 1x1 conv (+BN+ReLU; no BN on the 1x1 bin, which would fail on
batches of one), up-sampled and concatenated with the feature; a 3x3 conv + BN + ReLU fuses them,
then dropout and a 1x1 conv give the logits, bilinearly up-sampled to the input size.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from medseg.models.base import Segmenter
from medseg.models.heads import conv_bn_relu
from medseg.models.smp_arch import smp_module


class PyramidPooling(nn.Module):
    """Pool to each bin size, reduce channels, up-sample back and concatenate with the input."""

    def __init__(self, in_channels: int, bins: Sequence[int]) -> None:
        super().__init__()
        reduced = max(in_channels // len(bins), 16)
        self.stages = nn.ModuleList(
            nn.Sequential(nn.AdaptiveAvgPool2d(b), nn.Conv2d(in_channels, reduced, 1), nn.ReLU(inplace=True))
            if b == 1 else nn.Sequential(nn.AdaptiveAvgPool2d(b), conv_bn_relu(in_channels, reduced, 1))
            for b in bins
        )
        self.out_channels = in_channels + reduced * len(bins)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        pooled = [F.interpolate(stage(x), size=size, mode="bilinear", align_corners=False) for stage in self.stages]
        return torch.cat([x, *pooled], dim=1)


class PSPDecoder(nn.Sequential):
    """Pyramid pooling on the deepest feature, then a 3x3 fusion conv."""

    def __init__(self, in_channels: int, bins: Sequence[int], out_channels: int = 512) -> None:
        ppm = PyramidPooling(in_channels, bins)
        super().__init__(ppm, conv_bn_relu(ppm.out_channels, out_channels))

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:  # type: ignore[override]
        return super().forward(features[-1])


class PSPNet(Segmenter):
    """Encoder -> :class:`PSPDecoder` -> dropout + 1x1 conv; logits up-sampled to the input size."""

    def __init__(self, encoder: str, in_channels: int = 3, classes: int = 1, bins: Sequence[int] = (1, 3, 5, 7),
                 dropout: float = 0.2, output_stride: int = 8, edge_head: bool = False,
                 decoder_channels: int = 512) -> None:
        super().__init__()
        smp = smp_module()
        extra = {"output_stride": output_stride} if output_stride in (8, 16) else {}
        self.encoder = smp.encoders.get_encoder(encoder, in_channels=in_channels, depth=5, weights=None, **extra)
        self.pad_multiple = int(self.encoder.output_stride)
        self.decoder = PSPDecoder(self.encoder.out_channels[-1], bins, decoder_channels)
        self.segmentation_head = nn.Sequential(nn.Dropout2d(dropout), nn.Conv2d(decoder_channels, classes, 1))
        self.add_training_heads(classes=classes, decoder_channels=decoder_channels, deep_supervision=False,
                                edge_head=edge_head)

    def decode(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        return self.decoder(self.encoder(x)), []
