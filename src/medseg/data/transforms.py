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


def build_augmentation(strength: str) -> A.Compose | None:
    """Training augmentation for ``strength`` in none / low / mid / high (None for none)."""
    if strength == "none":
        return None
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
