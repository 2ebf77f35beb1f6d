"""Batch normalisation: runs on whole batches in torch, in one place, for training and inference alike.

Augmentations by name are :mod:`medseg.data.augmentations`.
"""

from __future__ import annotations

import torch


def normalize_batch(images: torch.Tensor, mean, std) -> torch.Tensor:
    """uint8 (N,C,H,W) -> float32 normalised with per-channel ``mean``/``std`` given on the 0..1 scale."""
    c = images.shape[1]
    mean_t = torch.tensor(mean[:c] if len(mean) >= c else mean * c, dtype=torch.float32).view(1, c, 1, 1)
    std_t = torch.tensor(std[:c] if len(std) >= c else std * c, dtype=torch.float32).view(1, c, 1, 1)
    return (images.float().div_(255.0) - mean_t) / std_t
