"""Augmentation by strength (albumentations) and batch normalisation.

Augmentations run on the letterboxed uint8 arrays; masks always go through the same geometry with
nearest-neighbour interpolation (albumentations handles ``mask=`` that way). Normalisation runs on
whole batches in torch, in one place, for training and inference alike.
"""

from __future__ import annotations

import os

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import albumentations as A  # noqa: E402
import cv2  # noqa: E402
import torch  # noqa: E402

STRENGTHS = ("none", "low", "mid", "high")
#: The tutorials' own augmentation lists, by preset (see build_recipe).
RECIPES = ("deeplab-isic", "keras-vgg", "unet-isic", "pspnet-low", "pspnet-mid", "pspnet-high")
AUGMENTATIONS = STRENGTHS + RECIPES


def build_recipe(name: str, size: int) -> A.Compose:
    """The augmentation a tutorial describes, reproduced with albumentations (masks: nearest, same geometry)."""
    border = {"border_mode": cv2.BORDER_CONSTANT, "fill": 0, "fill_mask": 0}
    if name == "deeplab-isic":  # flips, brightness +-20 %, contrast 0.8-1.2, elastic
        return A.Compose([A.HorizontalFlip(p=0.5), A.VerticalFlip(p=0.5),
                          A.RandomBrightnessContrast(brightness_limit=0.2, contrast_limit=0.2, p=0.8),
                          A.ElasticTransform(alpha=40, sigma=6, p=0.3, **border)])
    if name == "keras-vgg":  # ImageDataGenerator: rotation 15, shift 0.1, shear, zoom 0.1, fill 0, h-flip
        return A.Compose([A.Affine(rotate=(-15, 15), translate_percent=(-0.1, 0.1), shear=(-5, 5),
                                   scale=(0.9, 1.1), p=1.0, **border), A.HorizontalFlip(p=0.5)])
    if name == "unet-isic":  # RandomResizedCrop, flips, rot90, Gaussian noise and blur
        return A.Compose([A.RandomResizedCrop(size=(size, size), scale=(0.5, 1.0), p=1.0),
                          A.HorizontalFlip(p=0.5), A.VerticalFlip(p=0.5), A.RandomRotate90(p=0.5),
                          A.GaussNoise(std_range=(0.01, 0.05), p=0.3), A.GaussianBlur(blur_limit=(3, 5), p=0.2)])
    if name.startswith("pspnet-"):  # rotate 15 + elastic + grid distortion + brightness/contrast 0.1, by level
        p = {"pspnet-low": 0.2, "pspnet-mid": 0.5, "pspnet-high": 0.8}[name]
        return A.Compose([A.Rotate(limit=15, p=p, **border), A.ElasticTransform(alpha=30, sigma=6, p=p / 2, **border),
                          A.GridDistortion(p=p / 2, **border),
                          A.RandomBrightnessContrast(brightness_limit=0.1, contrast_limit=0.1, p=p)])
    raise ValueError(f"augmentation must be one of {AUGMENTATIONS}, got {name!r}")


def build_augmentation(strength: str, size: int = 256) -> A.Compose | None:
    """Training augmentation: a strength (none / low / mid / high; None for none) or a tutorial recipe."""
    if strength == "none":
        return None
    if strength in RECIPES:
        return build_recipe(strength, size)
    flips = [A.HorizontalFlip(p=0.5), A.VerticalFlip(p=0.5), A.RandomRotate90(p=0.5)]
    if strength == "low":
        return A.Compose(flips)
    border = {"border_mode": cv2.BORDER_CONSTANT, "fill": 0, "fill_mask": 0}
    if strength == "mid":
        return A.Compose(
            flips
            + [
                A.Affine(scale=(0.9, 1.1), translate_percent=(-0.05, 0.05), rotate=(-15, 15), p=0.5, **border),
                A.RandomBrightnessContrast(brightness_limit=0.1, contrast_limit=0.1, p=0.5),
            ]
        )
    if strength == "high":
        return A.Compose(
            flips
            + [
                A.Affine(scale=(0.8, 1.2), translate_percent=(-0.1, 0.1), rotate=(-30, 30), shear=(-5, 5),
                         p=0.7, **border),
                A.ElasticTransform(alpha=30, sigma=6, p=0.2, **border),
                A.RandomBrightnessContrast(brightness_limit=0.2, contrast_limit=0.2, p=0.7),
                A.HueSaturationValue(hue_shift_limit=8, sat_shift_limit=15, val_shift_limit=10, p=0.5),
                A.GaussNoise(std_range=(0.01, 0.04), p=0.3),
                A.GaussianBlur(blur_limit=(3, 5), p=0.2),
            ]
        )
    raise ValueError(f"augmentation strength must be one of {STRENGTHS}, got {strength!r}")


def normalize_batch(images: torch.Tensor, mean, std) -> torch.Tensor:
    """uint8 (N,C,H,W) -> float32 normalised with per-channel ``mean``/``std`` given on the 0..1 scale."""
    c = images.shape[1]
    mean_t = torch.tensor(mean[:c] if len(mean) >= c else mean * c, dtype=torch.float32).view(1, c, 1, 1)
    std_t = torch.tensor(std[:c] if len(std) >= c else std * c, dtype=torch.float32).view(1, c, 1, 1)
    return (images.float().div_(255.0) - mean_t) / std_t
