"""The training/validation dataset: pairs -> letterboxed uint8 tensors (+ augmentation)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from torch.utils.data import Dataset

from medseg.data.augmentations import build_augmentation
from medseg.data.geometry import letterbox
from medseg.data.pairs import Pair
from medseg.data.readers import TargetSpec, read_pair_image, read_pair_target
from medseg.progress import progress_bar


def load_letterboxed(pair: Pair, size: int, window: str | None = None,
                     target: TargetSpec = TargetSpec()) -> tuple[np.ndarray, np.ndarray]:
    """Read one pair and letterbox it: (HxWx3 uint8 image, HxW uint8 target) at size x size.

    The target is {0, 1} for binary models and class indices for multi-class ones (``target``);
    ``window`` is the DICOM window for DICOM images (``data.window``; None: the file's, else automatic).
    """
    image, _ = letterbox(read_pair_image(pair, window), size)
    mask, _ = letterbox(read_pair_target(pair, target), size, is_mask=True)
    return image, mask


def decode_all(pairs: list, load, desc: str, progress: bool) -> list:
    """``[load(p) for p in pairs]`` decoded by 4 threads, in order, with a progress bar (the in-memory caches)."""
    with ThreadPoolExecutor(max_workers=4) as pool:
        return list(progress_bar(pool.map(load, pairs), total=len(pairs), desc=desc, enabled=progress, leave=False,
                                 unit="img"))

class SegmentationDataset(Dataset):
    """Image/mask pairs at the model size; decoded once and cached in memory when ``cache``."""

    def __init__(self, pairs: list[Pair], size: int, *, augment: str = "none", cache: bool = True,
                 progress: bool = False, desc: str = "loading", window: str | None = None,
                 target: TargetSpec = TargetSpec()) -> None:
        self.pairs = list(pairs)
        self.size = size
        self.window = window
        self.target = target
        self.set_augment(augment)
        self._cache: list[tuple[np.ndarray, np.ndarray]] | None = None
        if cache:
            self._cache = decode_all(self.pairs, lambda p: load_letterboxed(p, size, window, target), desc, progress)

    def set_augment(self, strength: str) -> None:
        """Switch the augmentation strength (none / low / mid / high), e.g. between training stages."""
        self.augment_strength = strength
        self.augment = build_augmentation(strength, self.size)

    def __len__(self) -> int:
        return len(self.pairs)

    def target_of(self, i: int) -> np.ndarray:
        return self._cache[i][1] if self._cache is not None else load_letterboxed(
            self.pairs[i], self.size, self.window, self.target)[1]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self._cache is not None:
            image, mask = self._cache[i]
        else:
            image, mask = load_letterboxed(self.pairs[i], self.size, self.window, self.target)
        if self.augment is not None:
            out = self.augment(image=image, mask=mask)
            image, mask = out["image"], out["mask"]
        image_t = torch.from_numpy(np.require(image, requirements=["C", "W"])).permute(2, 0, 1)
        mask_t = torch.from_numpy(np.require(mask, requirements=["C", "W"]))[None]
        return image_t, mask_t


def class_pixel_counts(dataset: SegmentationDataset, classes: int) -> list[int]:
    """Pixels per class over the dataset's targets (binary: [background, foreground])."""
    counts = np.zeros(max(classes, 2), np.int64)
    for i in range(len(dataset)):
        counts += np.bincount(dataset.target_of(i).ravel(), minlength=len(counts))[: len(counts)]
    return counts.tolist()


def class_balanced_weights(dataset: SegmentationDataset, classes: int) -> list[float]:
    """Per-image sampling weights that oversample images containing rare classes.

    An image's weight is the largest inverse frequency (share of images containing the class) among
    the classes present in it, so an image with a class seen in 5 % of images is drawn ~20x as often
    as one holding only common classes.
    """
    k = max(classes, 2)
    present = np.zeros((len(dataset), k), bool)
    for i in range(len(dataset)):
        present[i, np.unique(dataset.target_of(i))[: k]] = True
    freq = present.mean(axis=0).clip(min=1e-6)
    weights = (present / freq).max(axis=1)
    return weights.tolist()
