"""Native-resolution training: random square patches with foreground oversampling, and whole scaled images.

Patch mode (``data.patch_size`` set) trains on ``patch_size`` x ``patch_size`` patches cut from every
image resampled by ``data.scale`` (1.0 = native resolution; masks resampled nearest-neighbour), instead
of whole images letterboxed to ``data.image_size``. A share ``data.foreground_oversample`` of the patches
is centred on a foreground pixel (of a class drawn uniformly among those present) and the rest placed
uniformly, as nnU-Net samples a third of its patches around foreground (Isensee et al. 2021, Nature
Methods 18:203, "oversample_foreground_percent").
Images smaller than a patch are zero padded (bottom/right, image 0 and mask 0), the same padding that
sliding-window inference gives windows reaching past the image (:mod:`medseg.inference.sliding`).
Validation and inference see the whole image at the same scale through sliding windows.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from medseg.data.augmentations import build_augmentation
from medseg.data.dataset import decode_all
from medseg.data.pairs import Pair
from medseg.data.readers import TargetSpec, read_pair_image, read_pair_target

#: Decoded, resampled pixels (bytes: 3 for the image + 1 for the mask per pixel) kept in memory at most;
#: a larger set is read from disk for each patch so that memory stays bounded.
CACHE_LIMIT_BYTES = 2 * 1024**3


def load_scaled(pair: Pair, scale: float, window: str | None = None,
                target: TargetSpec = TargetSpec()) -> tuple[np.ndarray, np.ndarray]:
    """Read one pair resampled by ``scale``: (HxWx3 uint8 image, HxW uint8 target), H, W = round(side * scale).

    Images shrink with area interpolation, targets with nearest neighbour (labels stay labels).
    """
    image = read_pair_image(pair, window)
    mask = read_pair_target(pair, target)
    if scale != 1.0:
        h, w = image.shape[:2]
        hs, ws = max(1, round(h * scale)), max(1, round(w * scale))
        image = cv2.resize(np.ascontiguousarray(image), (ws, hs), interpolation=cv2.INTER_AREA)
        mask = cv2.resize(np.ascontiguousarray(mask), (ws, hs), interpolation=cv2.INTER_NEAREST)
    return image, mask


def pad_to(array: np.ndarray, side: int) -> np.ndarray:
    """Zero pad ``array`` (HxW or HxWxC) at the bottom and right to at least ``side`` x ``side``."""
    h, w = array.shape[:2]
    if h >= side and w >= side:
        return array
    out = np.zeros((max(h, side), max(w, side)) + array.shape[2:], array.dtype)
    out[:h, :w] = array
    return out


def patch_origin(mask: np.ndarray, side: int, rng: np.random.Generator, foreground: bool) -> tuple[int, int]:
    """Top-left corner of a ``side`` patch in an image of mask ``mask`` (already padded to >= side).

    ``foreground``: centred on a foreground pixel, clipped to stay inside the image: a foreground class
    drawn uniformly among those in the mask, then one of its pixels (nnU-Net's ``force_fg`` sampling, so a
    rare class is centred as often as a common one); uniform placement when the mask has no foreground.
    """
    h, w = mask.shape[:2]
    if foreground:
        classes = np.flatnonzero(np.bincount(mask.reshape(-1))[1:]) + 1
        if len(classes):
            c = classes[int(rng.integers(len(classes)))] if len(classes) > 1 else classes[0]
            ys, xs = np.nonzero(mask == c)
            k = int(rng.integers(len(ys)))
            top = min(max(int(ys[k]) - side // 2, 0), h - side)
            left = min(max(int(xs[k]) - side // 2, 0), w - side)
            return top, left
    return int(rng.integers(h - side + 1)), int(rng.integers(w - side + 1))


def patches_per_image(height: int, width: int, side: int) -> int:
    """Patches drawn per image and epoch: as many as tile the image once (at least one)."""
    return max(1, math.ceil(height / side) * math.ceil(width / side))


class PatchDataset(Dataset):
    """Random ``patch_size`` patches of the training images resampled by ``scale``.

    One epoch draws :func:`patches_per_image` patches from each image (item ``i`` is a patch of image
    ``image_index[i]``), so an epoch covers about the pixels of the training set once. Items are
    (3xPxP uint8 image, 1xPxP uint8 target) tensors, augmented as a whole-image dataset's items are.
    Images are decoded once and cached while the resampled set fits in :data:`CACHE_LIMIT_BYTES`
    (and ``cache``), else read per patch.
    """

    def __init__(self, pairs: list[Pair], patch_size: int, scale: float = 1.0, *, foreground_oversample: float = 0.33,
                 augment: str = "none", cache: bool = True, progress: bool = False, desc: str = "loading",
                 window: str | None = None, target: TargetSpec = TargetSpec(), seed: int = 0) -> None:
        from medseg.data.readers import pair_image_size

        self.pairs = list(pairs)
        self.size = patch_size
        self.scale = scale
        self.foreground_oversample = foreground_oversample
        self.window, self.target = window, target
        self.set_augment(augment)
        self.set_random_seed(seed)
        shapes = []
        for pair in self.pairs:
            w, h = pair_image_size(pair)
            shapes.append((max(1, round(h * scale)), max(1, round(w * scale))))
        self.image_index = [i for i, (h, w) in enumerate(shapes) for _ in range(patches_per_image(h, w, patch_size))]
        nbytes = sum(h * w * 4 for h, w in shapes)
        self._cache: list[tuple[np.ndarray, np.ndarray]] | None = None
        if cache and nbytes <= CACHE_LIMIT_BYTES:
            self._cache = decode_all(self.pairs, lambda p: load_scaled(p, scale, window, target), desc, progress)

    def set_augment(self, strength: str) -> None:
        """Switch the augmentation strength (none / low / mid / high / a recipe); it applies to each patch."""
        self.augment_strength = strength
        self.augment = build_augmentation(strength, self.size)

    def set_random_seed(self, seed: int) -> None:
        """Reseed patch placement (the training loop does so per epoch and rank, as for augmentation);
        each data-loading worker draws from its own stream of that seed."""
        self._seed, self._rng_worker, self.rng = seed, None, np.random.default_rng([seed, 0])

    def _generator(self) -> np.random.Generator:
        info = torch.utils.data.get_worker_info()
        worker = 0 if info is None else info.id + 1
        if worker != (self._rng_worker or 0):
            self.rng, self._rng_worker = np.random.default_rng([self._seed, worker]), worker
        return self.rng

    def __len__(self) -> int:
        return len(self.image_index)

    def scaled(self, image: int) -> tuple[np.ndarray, np.ndarray]:
        """Image number ``image`` (not item) resampled by ``scale``: (HxWx3 uint8, HxW uint8 target)."""
        if self._cache is not None:
            return self._cache[image]
        return load_scaled(self.pairs[image], self.scale, self.window, self.target)

    def target_of(self, i: int) -> np.ndarray:
        return self.scaled(self.image_index[i])[1]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, mask = self.scaled(self.image_index[i])
        image, mask = pad_to(image, self.size), pad_to(mask, self.size)
        rng = self._generator()
        foreground = bool(rng.random() < self.foreground_oversample)
        top, left = patch_origin(mask, self.size, rng, foreground)
        image = image[top : top + self.size, left : left + self.size]
        mask = mask[top : top + self.size, left : left + self.size]
        if self.augment is not None:
            out = self.augment(image=np.ascontiguousarray(image), mask=np.ascontiguousarray(mask))
            image, mask = out["image"], out["mask"]
        image_t = torch.from_numpy(np.require(image, requirements=["C", "W"])).permute(2, 0, 1)
        mask_t = torch.from_numpy(np.require(mask, requirements=["C", "W"]))[None]
        return image_t, mask_t


class ScaledImageDataset(Dataset):
    """Whole validation images resampled by ``scale`` (for sliding-window validation of a patch-trained model).

    Items are (3xHxW uint8, 1xHxW uint8) at each image's own scaled size, so batch them one at a time.
    Cached like :class:`PatchDataset`.
    """

    def __init__(self, pairs: list[Pair], scale: float = 1.0, *, cache: bool = True, progress: bool = False,
                 desc: str = "loading", window: str | None = None, target: TargetSpec = TargetSpec()) -> None:
        from medseg.data.readers import pair_image_size

        self.pairs, self.scale, self.window, self.target = list(pairs), scale, window, target
        nbytes = sum(round(w * scale) * round(h * scale) * 4 for w, h in map(pair_image_size, self.pairs))
        self._cache: list[tuple[np.ndarray, np.ndarray]] | None = None
        if cache and nbytes <= CACHE_LIMIT_BYTES:
            self._cache = decode_all(self.pairs, lambda p: load_scaled(p, scale, window, target), desc, progress)

    def __len__(self) -> int:
        return len(self.pairs)

    def target_of(self, i: int) -> np.ndarray:
        return self[i][1][0].numpy()

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, mask = (self._cache[i] if self._cache is not None
                       else load_scaled(self.pairs[i], self.scale, self.window, self.target))
        return (torch.from_numpy(np.require(image, requirements=["C", "W"])).permute(2, 0, 1),
                torch.from_numpy(np.require(mask, requirements=["C", "W"]))[None])
