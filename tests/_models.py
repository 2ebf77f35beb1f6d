"""Small model configs for the architecture tests: no pretrained weights, light encoders (no fixtures here)."""

from __future__ import annotations

from medseg.config import ModelConfig

# light encoders for the tests; named models keep their own family
TEST_ENCODER = {"dpt": "tu-vit_tiny_patch16_224", "dicom-vgg16-unet": "vgg16_bn", "isic-deeplabv3": "resnet50"}
MIN_SIDE = {"pan": 128}  # PAN pools its 1/16 feature three more times


def cfg_for(arch: str, classes: int = 1, **kw) -> ModelConfig:
    base = {"encoder": TEST_ENCODER.get(arch, "resnet18"), "encoder_weights": None}
    if arch == "unet_classic":
        base["base_channels"] = 8
    return ModelConfig(arch=arch, classes=classes, **{**base, **kw})
