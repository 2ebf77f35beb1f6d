"""Build a segmentation model from a :class:`~medseg.config.ModelConfig`.

Every architecture is registered here by name, so configs, ``medseg models`` and the tests share one
list: the segmentation-models-pytorch architectures (any SMP encoder, or ``tu-<name>`` for timm),
the classic U-Net, and the three named models of the tutorials (``dicom-vgg16-unet``,
``isic-deeplabv3``, ``dicom-pspnet``). Architecture options in the config (``model.psp_bins``, ...)
default to ``None``/off, meaning "the architecture's default"; setting one that an architecture does
not use is an error naming the architectures that use it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from medseg.errors import ConfigError
from medseg.models.smp_arch import DEEPLAB_OPTIONS, SMP_ARCHS, build_smp, check_encoder
from medseg.registry import Registry

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from torch import nn

    from medseg.config import ModelConfig

MODELS = Registry("architecture")

#: ModelConfig fields that only some architectures use
OPTIONS = ("base_channels", "upsampling", "attention", "deep_supervision", "dropout", "psp_bins", "atrous_rates",
           "output_stride")
#: ModelConfig fields that every architecture uses
_COMMON = ("freeze_layers", "freeze_stages", "edge_head")
ISIC_DEEPLAB_ENCODERS = ("resnet50", "resnet101", "tu-xception65", "tu-xception41", "tu-xception71")


@dataclass(frozen=True)
class ArchInfo:
    """What ``medseg models`` shows and create_model checks for one architecture."""

    help: str
    options: frozenset[str]
    default_encoder: str | None  # None: the architecture has its own encoder (no model.encoder)


ARCHS: dict[str, ArchInfo] = {}


def _arch(name: str, help: str, options: tuple[str, ...] = (), default_encoder: str | None = "resnet34"):
    ARCHS[name] = ArchInfo(help, frozenset(options + _COMMON), default_encoder)
    return MODELS.register(name, help=help)


def _default(cfg: ModelConfig, key: str, value):
    current = getattr(cfg, key)
    return value if current is None else current


# ---------------------------------------------------------------------------- segmentation-models-pytorch
def _register_smp(name: str, help_text: str, options: tuple[str, ...]) -> None:
    encoder = "tu-vit_small_patch16_224" if name == "dpt" else "resnet34"

    @_arch(name, help_text, options, encoder)
    def build(cfg: ModelConfig) -> nn.Module:
        kwargs = {}
        if name in ("deeplabv3", "deeplabv3plus"):
            for key, smp_key in (("atrous_rates", "decoder_atrous_rates"), ("output_stride", "encoder_output_stride"),
                                 ("dropout", "decoder_aspp_dropout")):
                if getattr(cfg, key) is not None:
                    kwargs[smp_key] = tuple(cfg.atrous_rates) if key == "atrous_rates" else getattr(cfg, key)
        if name == "pspnet" and cfg.dropout is not None:
            kwargs["psp_dropout"] = cfg.dropout
        return build_smp(name, encoder=cfg.encoder, in_channels=cfg.in_channels, classes=cfg.classes,
                         attention=cfg.attention, deep_supervision=cfg.deep_supervision, edge_head=cfg.edge_head,
                         **kwargs)


for _name, (_cls, _help, _options) in SMP_ARCHS.items():
    _register_smp(_name, _help, _options)


# ---------------------------------------------------------------------------- medseg's own architectures
@_arch("unet_classic", "classic U-Net: double 3x3 conv+BN+ReLU, 4 levels, base..16*base channels (no encoder)",
       ("base_channels", "upsampling", "attention", "deep_supervision"), default_encoder=None)
def _unet_classic(cfg: ModelConfig) -> nn.Module:
    from medseg.models.classic_unet import ClassicUNet

    return ClassicUNet(cfg.in_channels, cfg.classes, base=_default(cfg, "base_channels", 64),
                       upsampling=_default(cfg, "upsampling", "bilinear"), attention=cfg.attention,
                       deep_supervision=cfg.deep_supervision, edge_head=cfg.edge_head)


@_arch("dicom-vgg16-unet", "U-Net, VGG16 encoder (first 10 layers frozen), transposed-conv + BN decoder",
       ("attention", "deep_supervision"), default_encoder="vgg16_bn")
def _vgg16_unet(cfg: ModelConfig) -> nn.Module:
    from medseg.models.vgg_unet import TransposedUNet

    if not cfg.encoder.startswith("vgg"):
        raise ConfigError(f"dicom-vgg16-unet needs a VGG encoder (vgg16_bn, vgg16, vgg19_bn, ...), not "
                          f"{cfg.encoder!r}; set model.encoder=vgg16_bn")
    return TransposedUNet(cfg.encoder, cfg.in_channels, cfg.classes, attention=cfg.attention,
                          deep_supervision=cfg.deep_supervision, edge_head=cfg.edge_head)


@_arch("isic-deeplabv3", "DeepLabV3, ResNet-50 (or resnet101, tu-xception65), output stride 16, ASPP 6/12/18 "
       "+ image pooling", DEEPLAB_OPTIONS, default_encoder="resnet50")
def _isic_deeplabv3(cfg: ModelConfig) -> nn.Module:
    if cfg.encoder not in ISIC_DEEPLAB_ENCODERS:
        raise ConfigError(f"isic-deeplabv3 uses encoder {', '.join(ISIC_DEEPLAB_ENCODERS)}, not {cfg.encoder!r}; "
                          "set model.encoder=resnet50 (or use arch deeplabv3 for any encoder)")
    return build_smp("deeplabv3", encoder=cfg.encoder, in_channels=cfg.in_channels, classes=cfg.classes,
                     edge_head=cfg.edge_head, decoder_atrous_rates=tuple(_default(cfg, "atrous_rates", (6, 12, 18))),
                     encoder_output_stride=_default(cfg, "output_stride", 16),
                     decoder_aspp_dropout=_default(cfg, "dropout", 0.5))


@_arch("dicom-pspnet", "PSPNet, any backbone (resnet18, tu-mobilenetv3_large_100, efficientnet-b0, "
       "tu-convnext_tiny, ...), bins 1,3,5,7, dropout 0.2", ("psp_bins", "dropout", "output_stride"),
       default_encoder="resnet18")
def _dicom_pspnet(cfg: ModelConfig) -> nn.Module:
    from medseg.models.pspnet import PSPNet

    try:
        return PSPNet(cfg.encoder, cfg.in_channels, cfg.classes, bins=tuple(_default(cfg, "psp_bins", (1, 3, 5, 7))),
                      dropout=_default(cfg, "dropout", 0.2), output_stride=_default(cfg, "output_stride", 8),
                      edge_head=cfg.edge_head)
    except (KeyError, ValueError, RuntimeError) as err:
        raise ConfigError(f"dicom-pspnet cannot be built with encoder {cfg.encoder!r}: {err}") from None


# ---------------------------------------------------------------------------- MONAI networks (from scratch)
def _no_encoder_options(cfg: ModelConfig) -> None:
    if cfg.edge_head or cfg.freeze_layers or cfg.freeze_stages:
        raise ConfigError(f"{cfg.arch} is a MONAI network without an encoder or edge head: model.edge_head, "
                          "freeze_layers and freeze_stages do not apply")


@_arch("monai_unet", "MONAI residual UNet: 5 levels of base..16*base channels (base_channels 32: 6.5 M "
       "parameters; 16: 1.6 M), 2 residual units, instance norm (no encoder)", ("base_channels",),
       default_encoder=None)
def _monai_unet(cfg: ModelConfig) -> nn.Module:
    from medseg.models.monai_arch import build_monai_unet

    _no_encoder_options(cfg)
    return build_monai_unet(cfg.in_channels, cfg.classes, base=_default(cfg, "base_channels", 32))


@_arch("dynunet", "MONAI DynUNet (the nnU-Net network): 5 levels of base..16*base channels, instance norm, "
       "deep supervision off (no encoder)", ("base_channels",), default_encoder=None)
def _dynunet(cfg: ModelConfig) -> nn.Module:
    from medseg.models.monai_arch import build_dynunet

    _no_encoder_options(cfg)
    return build_dynunet(cfg.in_channels, cfg.classes, base=_default(cfg, "base_channels", 32))


# ---------------------------------------------------------------------------- building
def check_options(cfg: ModelConfig) -> None:
    """Fail when ``cfg`` sets an option its architecture does not use."""
    if cfg.arch not in ARCHS:
        MODELS.get(cfg.arch)  # raises, listing the valid names
    info, fields = ARCHS[cfg.arch], type(cfg).model_fields
    for key in OPTIONS:
        if getattr(cfg, key) != fields[key].default and key not in info.options:
            users = [n for n, i in ARCHS.items() if key in i.options]
            raise ConfigError(f"model.{key} does not apply to {cfg.arch}; it applies to {', '.join(users)}")


def check_names(cfg: ModelConfig) -> None:
    """ConfigError for an unknown architecture, an option it does not use, or an encoder an SMP
    architecture cannot take; run by :class:`~medseg.config.ModelConfig` validation, so a bad name
    fails when the config is built, before any data is read."""
    check_options(cfg)
    if cfg.arch in SMP_ARCHS:
        check_encoder(cfg.arch, cfg.encoder)


def model_label(cfg: ModelConfig) -> str:
    """``unet-resnet34``; ``monai_unet-32`` (base width) for an architecture with its own encoder, whose
    ``model.encoder`` means nothing. For logs, curves, the served model info and DICOM SEG descriptions."""
    own = cfg.arch in ARCHS and ARCHS[cfg.arch].default_encoder is None
    return f"{cfg.arch}-{cfg.base_channels or 'default'}" if own else f"{cfg.arch}-{cfg.encoder}"


def create_model(cfg: ModelConfig, *, load_weights: bool = True) -> nn.Module:
    """Build the architecture, freeze as configured, then load encoder weights (see models.weights)."""
    check_options(cfg)
    model = MODELS.build(cfg.arch, cfg=cfg)
    freeze_layers = cfg.freeze_layers
    if cfg.arch == "dicom-vgg16-unet" and freeze_layers is None and not cfg.freeze_stages:
        freeze_layers = 10  # the tutorial's frozen VGG16 layers (see models/freeze.py for what a layer is)
    frozen = bool(freeze_layers or cfg.freeze_stages)
    if frozen:
        from medseg.models.freeze import freeze_encoder

        freeze_encoder(model, layers=freeze_layers or None, stages=cfg.freeze_stages or None)
    used = None
    if load_weights and cfg.encoder_weights:
        from medseg.models.weights import load_encoder_weights

        used = load_encoder_weights(model, cfg)
    if load_weights and used is None and frozen:
        log.warning("the frozen encoder layers of %s are randomly initialised and will stay so: freezing is "
                    "meant for pretrained weights (model.encoder_weights); set model.freeze_layers=0 to train "
                    "them from scratch", cfg.arch)
    return model


__all__ = ["ARCHS", "MODELS", "create_model", "model_label"]
