"""Training augmentations by name (albumentations): strengths ``none``/``low``/``mid``/``high`` and the
tutorials' own recipes, in one registry that config validation (``train.augment``) and
:class:`~medseg.data.dataset.SegmentationDataset` both read.

Augmentations run on the letterboxed uint8 arrays; masks always go through the same geometry with
nearest-neighbour interpolation (albumentations handles ``mask=`` that way). albumentations is
imported when an augmentation is built, so naming one (validating a config) stays cheap.
"""

from __future__ import annotations

import os
from typing import Any

from medseg.registry import Registry

AUGMENTATIONS = Registry("augmentation")


def _albumentations():
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    import albumentations as A

    return A


def _border() -> dict[str, Any]:
    import cv2

    return {"border_mode": cv2.BORDER_CONSTANT, "fill": 0, "fill_mask": 0}


def _flips(A) -> list:
    return [A.HorizontalFlip(p=0.5), A.VerticalFlip(p=0.5), A.RandomRotate90(p=0.5)]


@AUGMENTATIONS.register("none", help="no augmentation")
def _none(size: int) -> None:
    return None


@AUGMENTATIONS.register("low", help="flips and 90-degree rotations")
def _low(size: int):
    A = _albumentations()
    return A.Compose(_flips(A))


@AUGMENTATIONS.register("mid", help="low + affine (scale 0.9-1.1, shift 5 %, rotate 15) + brightness/contrast 0.1")
def _mid(size: int):
    A = _albumentations()
    return A.Compose(_flips(A) + [
        A.Affine(scale=(0.9, 1.1), translate_percent=(-0.05, 0.05), rotate=(-15, 15), p=0.5, **_border()),
        A.RandomBrightnessContrast(brightness_limit=0.1, contrast_limit=0.1, p=0.5),
    ])


@AUGMENTATIONS.register("high", help="low + stronger affine, elastic, colour, noise and blur")
def _high(size: int):
    A = _albumentations()
    border = _border()
    return A.Compose(_flips(A) + [
        A.Affine(scale=(0.8, 1.2), translate_percent=(-0.1, 0.1), rotate=(-30, 30), shear=(-5, 5), p=0.7, **border),
        A.ElasticTransform(alpha=30, sigma=6, p=0.2, **border),
        A.RandomBrightnessContrast(brightness_limit=0.2, contrast_limit=0.2, p=0.7),
        A.HueSaturationValue(hue_shift_limit=8, sat_shift_limit=15, val_shift_limit=10, p=0.5),
        A.GaussNoise(std_range=(0.01, 0.04), p=0.3),
        A.GaussianBlur(blur_limit=(3, 5), p=0.2),
    ])


@AUGMENTATIONS.register("deeplab-isic", help="the DeepLabV3 ISIC tutorial: flips, brightness/contrast 20 %, elastic")
def _deeplab_isic(size: int):
    A = _albumentations()
    return A.Compose([A.HorizontalFlip(p=0.5), A.VerticalFlip(p=0.5),
                      A.RandomBrightnessContrast(brightness_limit=0.2, contrast_limit=0.2, p=0.8),
                      A.ElasticTransform(alpha=40, sigma=6, p=0.3, **_border())])


@AUGMENTATIONS.register("keras-vgg", help="Keras ImageDataGenerator: rotation 15, shift 0.1, shear, zoom 0.1, h-flip")
def _keras_vgg(size: int):
    A = _albumentations()
    return A.Compose([A.Affine(rotate=(-15, 15), translate_percent=(-0.1, 0.1), shear=(-5, 5),
                               scale=(0.9, 1.1), p=1.0, **_border()), A.HorizontalFlip(p=0.5)])


@AUGMENTATIONS.register("unet-isic", help="the U-Net ISIC tutorial: RandomResizedCrop, flips, rot90, noise, blur")
def _unet_isic(size: int):
    A = _albumentations()
    return A.Compose([A.RandomResizedCrop(size=(size, size), scale=(0.5, 1.0), p=1.0),
                      A.HorizontalFlip(p=0.5), A.VerticalFlip(p=0.5), A.RandomRotate90(p=0.5),
                      A.GaussNoise(std_range=(0.01, 0.05), p=0.3), A.GaussianBlur(blur_limit=(3, 5), p=0.2)])


def _pspnet(p: float):
    def build(size: int):
        A = _albumentations()
        border = _border()
        return A.Compose([A.Rotate(limit=15, p=p, **border), A.ElasticTransform(alpha=30, sigma=6, p=p / 2, **border),
                          A.GridDistortion(p=p / 2, **border),
                          A.RandomBrightnessContrast(brightness_limit=0.1, contrast_limit=0.1, p=p)])

    return build


for _level, _p in (("low", 0.2), ("mid", 0.5), ("high", 0.8)):
    AUGMENTATIONS.register(f"pspnet-{_level}", help=f"the PSPNet tutorial, level {_level}: rotate 15, elastic, "
                           f"grid distortion, brightness/contrast 0.1, each with p={_p:g}")(_pspnet(_p))


def build_augmentation(name: str, size: int = 256):
    """The albumentations ``Compose`` registered as ``name`` for ``size`` x ``size`` images (None for
    ``none``); ConfigError listing the names when ``name`` is unknown."""
    return AUGMENTATIONS.build(name, size=size)


# ---- by modality, as the planner picks them (medseg.plan.planner); flips and rot90 for every modality
_NOISE_BLUR = "light Gaussian noise (std 1-5 % of the range) and blur"


def _noise(A) -> list:
    return [A.GaussNoise(std_range=(0.01, 0.05), p=0.3), A.GaussianBlur(blur_limit=(3, 5), p=0.2)]


@AUGMENTATIONS.register("photo", help=f"photos: low + brightness/contrast 15 %, hue/saturation, {_NOISE_BLUR}")
def _photo(size: int):
    A = _albumentations()
    return A.Compose(_flips(A) + [A.RandomBrightnessContrast(brightness_limit=0.15, contrast_limit=0.15, p=0.5),
                                  A.HueSaturationValue(hue_shift_limit=8, sat_shift_limit=15, val_shift_limit=0,
                                                       p=0.3)] + _noise(A))


@AUGMENTATIONS.register("grey", help=f"grey images: low + brightness/contrast 10 %, {_NOISE_BLUR}; no colour jitter")
def _grey(size: int):
    A = _albumentations()
    return A.Compose(_flips(A) + [A.RandomBrightnessContrast(brightness_limit=0.1, contrast_limit=0.1, p=0.5)]
                     + _noise(A))


@AUGMENTATIONS.register("ct", help="windowed CT: low + intensity scaling (contrast 0.9-1.1, no shift: HU are "
                        "calibrated) + light noise")
def _ct(size: int):
    A = _albumentations()
    return A.Compose(_flips(A) + [A.RandomBrightnessContrast(brightness_limit=0.0, contrast_limit=0.1, p=0.5),
                                  A.GaussNoise(std_range=(0.01, 0.03), p=0.2)])


@AUGMENTATIONS.register("flips-noise-blur", help=f"the issue-9 peer: low + {_NOISE_BLUR}")
def _flips_noise_blur(size: int):
    A = _albumentations()
    return A.Compose(_flips(A) + _noise(A))
