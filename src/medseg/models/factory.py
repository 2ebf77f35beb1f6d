"""Build a segmentation model from a :class:`~medseg.config.ModelConfig`.

Architectures come from segmentation-models-pytorch (any SMP encoder, or ``tu-<name>`` for timm);
each is registered by name so that configs and ``medseg models`` share one list.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from medseg._compat import import_torchvision
from medseg.registry import Registry

if TYPE_CHECKING:
    from torch import nn

    from medseg.config import ModelConfig

MODELS = Registry("architecture")

_SMP_ARCHS = {
    "unet": ("Unet", "U-Net (Ronneberger 2015) with an SMP/timm encoder"),
    "unetplusplus": ("UnetPlusPlus", "U-Net++ nested skip connections"),
    "manet": ("MAnet", "multi-scale attention U-Net"),
    "linknet": ("Linknet", "LinkNet, light decoder"),
    "fpn": ("FPN", "feature pyramid network"),
    "pspnet": ("PSPNet", "pyramid scene parsing network"),
    "pan": ("PAN", "pyramid attention network"),
    "deeplabv3": ("DeepLabV3", "DeepLabV3 with ASPP"),
    "deeplabv3plus": ("DeepLabV3Plus", "DeepLabV3+ with a decoder"),
    "upernet": ("UPerNet", "unified perceptual parsing"),
    "segformer": ("Segformer", "SegFormer MLP decoder"),
}


def _smp():
    import_torchvision()
    import segmentation_models_pytorch as smp

    return smp


def _register_smp(name: str, cls_name: str, help_text: str) -> None:
    @MODELS.register(name, help=help_text)
    def build(encoder: str, in_channels: int, classes: int) -> nn.Module:
        smp = _smp()
        from medseg.errors import ConfigError

        if encoder not in smp.encoders.get_encoder_names() and not encoder.startswith("tu-"):
            raise ConfigError(
                f"unknown encoder {encoder!r} for {name}; use an SMP encoder "
                f"(e.g. resnet34, efficientnet-b0, mobilenet_v2) or tu-<timm model name>"
            )
        return getattr(smp, cls_name)(
            encoder_name=encoder, encoder_weights=None, in_channels=in_channels, classes=classes
        )


for _name, (_cls, _help) in _SMP_ARCHS.items():
    _register_smp(_name, _cls, _help)


def create_model(cfg: ModelConfig, *, load_weights: bool = True) -> nn.Module:
    """Build the architecture, then load encoder weights as configured (see models.weights)."""
    model = MODELS.build(cfg.arch, encoder=cfg.encoder, in_channels=cfg.in_channels, classes=cfg.classes)
    if load_weights and cfg.encoder_weights:
        from medseg.models.weights import load_encoder_weights

        load_encoder_weights(model, cfg)
    return model


def model_summary(model: nn.Module) -> dict[str, float]:
    n = sum(p.numel() for p in model.parameters())
    return {"parameters": n, "parameters_m": round(n / 1e6, 2)}
