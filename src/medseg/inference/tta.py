"""Test-time augmentation: flips and scales, probabilities averaged, disagreement as uncertainty.

A TTA *member* is one (scale, flip) view of the image. Each member's probabilities are mapped back
to the original image (flipped back, resized) and the members are averaged there. The uncertainty
map is the per-pixel standard deviation of the members' probabilities (0 = all members agree; at
most 0.5 for two-way disagreement on a binary map).

Flips run as one batch per scale; a backend whose graph already averages flips (an ONNX file
exported with ``--tta``) counts as one member per scale.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from medseg.config import InferConfig

Backend = Callable[[np.ndarray], np.ndarray]

#: Axes flipped by each flip, for (N, H, W, 3) image batches and (N, C, H, W) probabilities.
IMAGE_AXES = {"h": (2,), "v": (1,), "hv": (1, 2)}
PROBA_AXES = {"h": (3,), "v": (2,), "hv": (2, 3)}
STRIDE = 32  # encoders downsample by 32: model inputs are multiples of it


@dataclass(frozen=True)
class TTAPlan:
    flips: tuple[str, ...] = ()
    scales: tuple[float, ...] = (1.0,)

    @classmethod
    def from_config(cls, infer: InferConfig) -> TTAPlan:
        if not infer.tta:
            return cls()
        return cls(tuple(dict.fromkeys(infer.tta_flips)), tuple(dict.fromkeys(infer.tta_scales)))

    def members(self, baked_flips: tuple[str, ...] = ()) -> int:
        return (1 + (0 if baked_flips else len(self.flips))) * len(self.scales)


def model_side(size: int, scale: float) -> int:
    """The model input side for ``scale`` x ``size``, rounded to a multiple of 32."""
    return max(STRIDE, round(size * scale / STRIDE) * STRIDE)


def chunked(backend: Backend, batch: np.ndarray, max_batch: int) -> np.ndarray:
    """``backend(batch)`` in pieces of at most ``max_batch`` images."""
    if len(batch) <= max_batch:
        return backend(batch)
    return np.concatenate([backend(batch[i : i + max_batch]) for i in range(0, len(batch), max_batch)])


def flip_members(backend: Backend, batch: np.ndarray, flips: tuple[str, ...], max_batch: int = 8
                 ) -> np.ndarray:
    """Probabilities (N, F, C, H, W) of ``batch`` (N, H, W, 3) and of each flipped copy, flipped back.

    F = 1 + len(flips); the original comes first.
    """
    n = len(batch)
    views = [batch] + [np.flip(batch, IMAGE_AXES[f]) for f in flips]
    probs = chunked(backend, np.ascontiguousarray(np.concatenate(views)), max_batch)
    probs = probs.reshape(len(views), n, *probs.shape[1:])
    members = [probs[0]] + [np.flip(probs[i], PROBA_AXES[f]) for i, f in enumerate(flips, start=1)]
    return np.stack(members, axis=1)


class MemberStats:
    """Running mean (and optionally standard deviation, by Welford's update) of member probability maps."""

    def __init__(self, want_std: bool = False) -> None:
        self.want_std = want_std
        self.n = 0
        self._mean: np.ndarray | None = None
        self._m2: np.ndarray | None = None  # sum of squared deviations from the mean

    def add(self, proba: np.ndarray) -> None:
        proba = proba.astype(np.float32, copy=False)
        self.n += 1
        if self._mean is None:
            self._mean = proba.copy() if self.want_std else proba
            self._m2 = np.zeros_like(proba) if self.want_std else None
        elif not self.want_std:
            self._mean = self._mean + (proba - self._mean) / np.float32(self.n)
        else:
            delta = proba - self._mean
            self._mean += delta / np.float32(self.n)
            self._m2 += delta * (proba - self._mean)

    def mean(self) -> np.ndarray:
        return self._mean

    def std(self) -> np.ndarray:
        if self._m2 is None:
            raise ValueError("standard deviation was not requested")
        return np.sqrt(self._m2 / np.float32(self.n))


def classes_last(proba: np.ndarray) -> np.ndarray:
    """(C, H, W) -> HxW for one class, HxWxC otherwise (the layout of letterbox/unletterbox).

    Moves the class axis; ``channels_last`` elsewhere means only the PyTorch memory format.
    """
    return proba[0] if proba.shape[0] == 1 else np.moveaxis(proba, 0, -1)


#: member standard deviation from which a pixel counts as contested (:func:`qc_score`)
STD_CUTOFF = 0.1


def qc_score(proba: np.ndarray, std: np.ndarray, threshold: float = 0.5, roi: np.ndarray | None = None) -> float:
    """The disagreement score of one image from its mean probability and member std (0 = the members
    agree everywhere, 1 = they agree nowhere on the object)::

        qc_score = |U| / |U ∪ F|      U = pixels whose member standard deviation >= STD_CUTOFF
                                      F = pixels of the predicted mask (mean probability >= threshold)

    i.e. the share of the predicted-or-contested region on which the members disagree; an image with
    neither is 0. ``STD_CUTOFF`` = 0.1: one dissenting member out of nine already gives 0.31 on a hard
    binary split, while members that agree up to a few percent of probability stay far below it. The
    flag threshold is calibrated in :mod:`medseg.evaluation.qc`.

    ``proba``/``std`` HxW (or HxWxC: foreground = argmax > 0, std = max over classes); ``roi`` limits
    the pixels considered.
    """
    proba, std = np.asarray(proba), np.asarray(std)
    if proba.ndim == 3:
        fg, std = np.argmax(proba, axis=2) > 0, std.max(axis=2)
    else:
        fg = proba >= threshold
    uncertain = std >= STD_CUTOFF
    if roi is not None:
        fg, uncertain = fg & roi, uncertain & roi
    union = int(np.count_nonzero(uncertain | fg))
    return 0.0 if union == 0 else float(np.count_nonzero(uncertain)) / union
