"""segmentation-models-pytorch architectures as medseg :class:`~medseg.models.base.Segmenter` models.

The SMP model's ``encoder``, ``decoder`` and ``segmentation_head`` are taken over unchanged (same
state-dict keys as the SMP model, so checkpoints of plain SMP models load); medseg adds input
padding, CBAM on the skips, deep supervision (U-Net) and an edge head around them.
"""

from __future__ import annotations

import torch
from torch import nn

from medseg._compat import import_torchvision
from medseg.models.base import Segmenter

#: CBAM on the skips: for decoders that read intermediate encoder features
_SKIP = ("attention",)
#: the ASPP settings of the DeepLabs
DEEPLAB_OPTIONS = ("atrous_rates", "output_stride", "dropout")

#: medseg name -> (SMP class, description, the ModelConfig options it uses: medseg.models.factory.OPTIONS)
SMP_ARCHS = {
    "unet": ("Unet", "U-Net (Ronneberger 2015) with an SMP/timm encoder", _SKIP + ("deep_supervision",)),
    "unetplusplus": ("UnetPlusPlus", "U-Net++ nested skip connections", _SKIP),
    "manet": ("MAnet", "multi-scale attention U-Net", _SKIP),
    "linknet": ("Linknet", "LinkNet, light decoder", _SKIP),
    "fpn": ("FPN", "feature pyramid network", _SKIP),
    "pspnet": ("PSPNet", "pyramid scene parsing network (SMP: bins 1,2,3,6 on 1/8 features)", ("dropout",)),
    "pan": ("PAN", "pyramid attention network", _SKIP),
    "deeplabv3": ("DeepLabV3", "DeepLabV3 with ASPP (SMP defaults: output stride 8, rates 12,24,36)",
                  DEEPLAB_OPTIONS),
    "deeplabv3plus": ("DeepLabV3Plus", "DeepLabV3+ with a decoder", DEEPLAB_OPTIONS + _SKIP),
    "upernet": ("UPerNet", "unified perceptual parsing", _SKIP),
    "segformer": ("Segformer", "SegFormer MLP decoder", ()),
    "dpt": ("DPT", "dense prediction transformer (ViT encoders only: tu-vit_*)", ()),
}

#: U-Net decoder levels tapped by deep supervision: blocks at 1/8, 1/4, 1/2 (finest first)
_UNET_LEVELS = (3, 2, 1)


def smp_module():
    """segmentation_models_pytorch, imported after the torchvision work-around."""
    import_torchvision()
    import segmentation_models_pytorch as smp

    return smp


def _first_conv(module: nn.Module) -> nn.Conv2d:
    return next(m for m in module.modules() if isinstance(m, nn.Conv2d))


class SMPSegmenter(Segmenter):
    """An SMP model's encoder, decoder and head, with medseg's padding and optional heads."""

    def __init__(self, arch: str, smp_model: nn.Module, *, classes: int, attention: str = "none",
                 deep_supervision: bool = False, edge_head: bool = False) -> None:
        super().__init__()
        self.arch = arch
        self.encoder = smp_model.encoder
        self.decoder = smp_model.decoder
        self.segmentation_head = smp_model.segmentation_head
        if smp_model.requires_divisible_input_shape:  # DPT reassembles its 1/16 tokens at 1/32 too
            self.pad_multiple = 32 if arch == "dpt" else int(self.encoder.output_stride)
        if arch == "pan":  # its feature pyramid attention pools the deepest feature three more times
            self.min_size = 8 * int(self.encoder.output_stride)
        if arch == "unet":
            blocks = self.decoder.blocks
            self.level_channels = tuple(_first_conv(blocks[i].conv2).out_channels for i in _UNET_LEVELS)
        if attention == "cbam":
            channels = list(self.encoder.out_channels)
            self.add_skip_attention(channels, range(1, len(channels) - 1))
        self.add_training_heads(classes=classes, decoder_channels=_first_conv(self.segmentation_head).in_channels,
                                deep_supervision=deep_supervision, edge_head=edge_head)

    def decode(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        if self.arch == "dpt":  # ViT encoders also return prefix tokens
            features, prefix = self.encoder(x)
            return self.decoder(features, prefix), []
        features = self.encode(x)
        if self.aux_heads is None:
            return self.decoder(features), []
        return _unet_decode_levels(self.decoder, features)


def _unet_decode_levels(decoder: nn.Module, features: list[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """SMP's UnetDecoder.forward, also returning the block outputs that deep supervision taps."""
    shapes = [f.shape[2:] for f in features][::-1]
    features = features[1:][::-1]
    skips = features[1:]
    x = decoder.center(features[0])
    outs = []
    for i, block in enumerate(decoder.blocks):
        height, width = shapes[i + 1]
        x = block(x, height, width, skip_connection=skips[i] if i < len(skips) else None)
        outs.append(x)
    return x, [outs[i] for i in _UNET_LEVELS]


def build_smp(arch: str, *, encoder: str, in_channels: int, classes: int, attention: str = "none",
              deep_supervision: bool = False, edge_head: bool = False, **smp_kwargs) -> SMPSegmenter:
    """Build SMP architecture ``arch`` (a key of :data:`SMP_ARCHS`) with random weights."""
    from medseg.errors import ConfigError

    check_encoder(arch, encoder)
    smp = smp_module()
    if arch == "dpt":
        smp_kwargs.setdefault("dynamic_img_size", True)  # any input size, not only the pretraining size
    cls = getattr(smp, SMP_ARCHS[arch][0])
    try:
        model = cls(encoder_name=encoder, encoder_weights=None, in_channels=in_channels, classes=classes,
                    **smp_kwargs)
    except (ValueError, TypeError, RuntimeError, KeyError) as err:
        raise ConfigError(f"{arch} cannot be built with encoder {encoder!r}: {err}") from None
    return SMPSegmenter(arch, model, classes=classes, attention=attention, deep_supervision=deep_supervision,
                        edge_head=edge_head)


def check_encoder(arch: str, encoder: str) -> None:
    """ConfigError, with a did-you-mean, when SMP architecture ``arch`` cannot take ``encoder``: not an SMP
    encoder nor ``tu-<timm model>``, or (dpt) not a timm ViT."""
    from medseg.errors import ConfigError, did_you_mean

    if arch == "dpt" and not encoder.startswith("tu-"):
        raise ConfigError(f"dpt needs a ViT encoder from timm (e.g. tu-vit_small_patch16_224), not {encoder!r}")
    if encoder.startswith("tu-"):
        check_timm_name(encoder)
        return
    names = smp_module().encoders.get_encoder_names()
    if encoder not in names:
        raise ConfigError(f"unknown encoder {encoder!r} for {arch}{did_you_mean(encoder, names)}; use an SMP encoder "
                          "(e.g. resnet34, efficientnet-b0, mobilenet_v2) or tu-<timm model name> "
                          "(medseg models --encoders PATTERN lists them)")


def check_timm_name(encoder: str) -> None:
    """ConfigError with a did-you-mean when ``tu-<name>`` is not a timm model."""
    import timm

    from medseg.errors import ConfigError, did_you_mean

    name = encoder[3:]
    if not timm.is_model(name):
        hint = did_you_mean(name, timm.list_models())
        hint = hint.replace("mean '", "mean 'tu-") if hint else ""
        raise ConfigError(f"unknown timm encoder {encoder!r}{hint}; `medseg models --encoders '*{name[:4]}*'` "
                          "lists the names")
