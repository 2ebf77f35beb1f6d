"""U-Net with an SMP encoder (VGG16 for ``dicom-vgg16-unet``) and a transposed-convolution decoder.

Each decoder level: 2x2 transposed convolution (stride 2) + BN + ReLU, concatenation with the encoder
feature of that resolution, then two 3x3 conv + BN + ReLU. The head gives one logit per class
(sigmoid for one class, softmax for several: the loss and the predictor decide by channel count).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from medseg.models.base import Segmenter
from medseg.models.heads import conv_bn_relu
from medseg.models.smp_arch import smp_module

DECODER_CHANNELS = (512, 256, 128, 64, 32)


class TransposedUpBlock(nn.Module):
    """ConvTranspose x2 + BN + ReLU, concatenate the skip, two conv + BN + ReLU."""

    def __init__(self, cin: int, skip: int, cout: int) -> None:
        super().__init__()
        self.up = nn.Sequential(nn.ConvTranspose2d(cin, cout, kernel_size=2, stride=2, bias=False),
                                nn.BatchNorm2d(cout), nn.ReLU(inplace=True))
        self.conv = nn.Sequential(conv_bn_relu(cout + skip, cout), conv_bn_relu(cout, cout))

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None) -> torch.Tensor:
        x = self.up(x)
        return self.conv(torch.cat([x, skip], dim=1) if skip is not None else x)


class TransposedUnetDecoder(nn.Module):
    """Decoder over SMP encoder features (full resolution first, deepest last)."""

    def __init__(self, encoder_channels: Sequence[int], decoder_channels: Sequence[int] = DECODER_CHANNELS) -> None:
        super().__init__()
        skips = list(encoder_channels[:-1])[::-1]  # 1/16 ... 1/1
        ins = [encoder_channels[-1], *decoder_channels[:-1]]
        self.blocks = nn.ModuleList(TransposedUpBlock(a, s, c)
                                    for a, s, c in zip(ins, skips, decoder_channels, strict=True))

    def forward(self, features: list[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        x, outs = features[-1], []
        for block, skip in zip(self.blocks, features[-2::-1], strict=True):
            x = block(x, skip if skip.shape[1] > 0 else None)
            outs.append(x)
        return x, outs[-2:-5:-1]  # 1/2, 1/4, 1/8


class TransposedUNet(Segmenter):
    """U-Net: SMP encoder (5 stages, stride 32) + :class:`TransposedUnetDecoder`."""

    pad_multiple = 32

    def __init__(self, encoder: str, in_channels: int = 3, classes: int = 1, attention: str = "none",
                 deep_supervision: bool = False, edge_head: bool = False,
                 decoder_channels: Sequence[int] = DECODER_CHANNELS) -> None:
        super().__init__()
        smp = smp_module()
        self.encoder = smp.encoders.get_encoder(encoder, in_channels=in_channels, depth=5, weights=None)
        channels = list(self.encoder.out_channels)
        self.decoder = TransposedUnetDecoder(channels, decoder_channels)
        self.segmentation_head = nn.Conv2d(decoder_channels[-1], classes, kernel_size=1)
        self.level_channels = tuple(decoder_channels[-2:-5:-1])
        if attention == "cbam":
            self.add_skip_attention(channels, range(len(channels) - 1))
        self.add_training_heads(classes=classes, decoder_channels=decoder_channels[-1],
                                deep_supervision=deep_supervision, edge_head=edge_head)

    def decode(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        return self.decoder(self.encode(x))
