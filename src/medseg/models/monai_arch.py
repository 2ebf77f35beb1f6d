"""MONAI networks as medseg :class:`~medseg.models.base.Segmenter` models (trained from scratch).

- ``monai_unet``: MONAI ``UNet`` (Kerfoot et al. 2018, "Left-ventricle quantification using residual
  U-Net", the residual-unit U-Net of MONAI): 2D, five levels of ``base * (1, 2, 4, 8, 16)`` channels,
  stride 2, two residual units per level, instance norm. ``base_channels=32`` is the 32-64-128-256-512
  network of 6.5 M parameters (issue 9's peer); 16 gives 1.6 M.
- ``dynunet``: MONAI ``DynUNet``, the nnU-Net network (Isensee et al. 2021, Nat. Methods 18:203): 3x3
  kernels, one stride-1 and four stride-2 levels of ``base * (1, 2, 4, 8, 16)`` channels (nnU-Net's
  2D plans start at 32 and cap at 512, which base 32 reaches), instance norm, LeakyReLU (7.8 M
  parameters at base 32, 1.9 M at 16). Deep supervision is off
  (medseg's deep-supervision loss reads SegOutputs, which DynUNet's stacked outputs are not).

Both have no pretrained encoder (``encoder_weights`` auto -> none) and accept any input size: inputs
are padded to a multiple of 16 (four stride-2 levels) and the logits cropped back.
"""

from __future__ import annotations

import torch
from torch import nn

from medseg.models.base import Segmenter

#: levels below the input resolution (stride-2 steps): inputs are padded to 2**LEVELS
LEVELS = 4


def level_widths(base: int) -> tuple[int, ...]:
    """Channels of the five levels: ``base * 2**i`` for i = 0..4."""
    return tuple(base * 2**i for i in range(LEVELS + 1))


class MonaiSegmenter(Segmenter):
    """A whole MONAI network in ``net``; it outputs logits, so ``segmentation_head`` is the identity."""

    pad_multiple = 2**LEVELS
    min_size = 2 ** (LEVELS + 1)  # instance norm needs more than one pixel at the deepest level
    pretrained_encoder = False

    def __init__(self, arch: str, net: nn.Module) -> None:
        super().__init__()
        self.arch = arch
        self.net = net
        self.segmentation_head = nn.Identity()

    def decode(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        return self.net(x), []


def build_monai_unet(in_channels: int, classes: int, base: int = 32, res_units: int = 2) -> MonaiSegmenter:
    """MONAI ``UNet``: spatial_dims 2, channels :func:`level_widths`, strides 2, instance norm."""
    from monai.networks.nets import UNet

    net = UNet(spatial_dims=2, in_channels=in_channels, out_channels=classes, channels=level_widths(base),
               strides=(2,) * LEVELS, num_res_units=res_units, norm="INSTANCE")
    return MonaiSegmenter("monai_unet", net)


def build_dynunet(in_channels: int, classes: int, base: int = 32) -> MonaiSegmenter:
    """MONAI ``DynUNet`` as nnU-Net builds it in 2D: kernels 3, strides 1,2,2,2,2, instance norm."""
    from monai.networks.nets import DynUNet

    strides = [1] + [2] * LEVELS
    net = DynUNet(spatial_dims=2, in_channels=in_channels, out_channels=classes, kernel_size=[3] * (LEVELS + 1),
                  strides=strides, upsample_kernel_size=strides[1:], filters=list(level_widths(base)),
                  norm_name="instance", deep_supervision=False, res_block=False)
    return MonaiSegmenter("dynunet", net)
