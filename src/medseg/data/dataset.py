"""The training/validation dataset: pairs -> letterboxed uint8 tensors (+ augmentation)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from medseg.data.geometry import letterbox
from medseg.data.layouts import Pair
from medseg.data.readers import read_pair_image, read_pair_mask
from medseg.data.transforms import build_augmentation


def load_letterboxed(pair: Pair, size: int, window: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Read one pair and letterbox it: (HxWx3 uint8 image, HxW uint8 {0,1} mask) at size x size.

    ``window`` is the DICOM window for DICOM images (``data.window``; None: the file's, else automatic).
    """
    image, _ = letterbox(read_pair_image(pair, window), size)
    mask, _ = letterbox(read_pair_mask(pair), size, is_mask=True)
    return image, mask


class SegmentationDataset(Dataset):
    """Image/mask pairs at the model size; decoded once and cached in memory when ``cache``."""

    def __init__(self, pairs: list[Pair], size: int, *, augment: str = "none", cache: bool = True,
                 progress: bool = False, desc: str = "loading", window: str | None = None) -> None:
        self.pairs = list(pairs)
        self.size = size
        self.window = window
        self.augment = build_augmentation(augment)
        self._cache: list[tuple[np.ndarray, np.ndarray]] | None = None
        if cache:
            with ThreadPoolExecutor(max_workers=4) as pool:
                it = pool.map(lambda p: load_letterboxed(p, size, window), self.pairs)
                self._cache = list(tqdm(it, total=len(self.pairs), desc=desc, disable=not progress,
                                        leave=False, unit="img"))

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self._cache is not None:
            image, mask = self._cache[i]
        else:
            image, mask = load_letterboxed(self.pairs[i], self.size, self.window)
        if self.augment is not None:
            out = self.augment(image=image, mask=mask)
            image, mask = out["image"], out["mask"]
        image_t = torch.from_numpy(np.require(image, requirements=["C", "W"])).permute(2, 0, 1)
        mask_t = torch.from_numpy(np.require(mask, requirements=["C", "W"]))[None]
        return image_t, mask_t
