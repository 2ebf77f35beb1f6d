"""The time budget of a run (``train.time_budget_min``), counted from the call to ``train()``.

Loading, the first step, every validation, the final validation and the last checkpoint all fall inside
it. Training stops at the first optimiser-step boundary where what is left would no longer hold the
end of the run (the *reserve*): the final validation, sized to at most :data:`FINAL_VAL_SHARE` of the
budget, and the epoch-end writes (history, curves, checkpoint), each estimated from its last
measurement (before the first one, from the training throughput and the model size). A validation
that would not fit is shortened to an evenly spread subset of the validation images (every rank the
same subset) or, between epochs, skipped. The first step is sized by a probe: one image's forward pass
(timed after a warm-up pass, x 1 / :data:`FORWARD_SHARE` for forward + backward); a run where even
that step does not fit trains no step, scores its final validation and ends.

When the run chooses its post-processing at the end (``train.tune_postprocess``), the reserve also holds
that tuning: one prediction of each validation image at its original size plus the search, estimated
as :data:`TUNE_COST` validation passes and capped at :data:`TUNE_SHARE` of the budget; the tuning then
predicts the evenly spread validation images that fit in what is left, or is skipped.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np

#: The largest share of the budget kept for the final validation; a validation set that takes longer is
#: scored on an evenly spread subset that fits.
FINAL_VAL_SHARE = 0.15
#: Forward-only validation of an image costs about this share of its training step (forward + backward
#: is about 3 forwards, Kaplan et al. 2020 "Scaling laws", the 6N vs 2N FLOPs per token rule).
FORWARD_SHARE = 1 / 3
#: The largest share of the budget kept for choosing the post-processing at the end of the run.
TUNE_SHARE = 0.10
#: Post-processing tuning of an image costs about this many validation forward passes of it: the plain pass
#: and the three of flip TTA, plus reading and resizing at the original size twice and the ~20 candidate
#: masks of each search.
TUNE_COST = 5.0


_marked_start: float | None = None


def mark_start() -> None:
    """Start the budget clock now, for the next :func:`take_start` (``medseg train`` marks its start,
    so that importing torch and the models counts against ``--time-budget`` too)."""
    global _marked_start
    _marked_start = time.monotonic()


def take_start() -> float:
    """The marked start (used once, then forgotten), else now: where a run's budget starts."""
    global _marked_start
    start, _marked_start = (_marked_start if _marked_start is not None else time.monotonic()), None
    return start


@dataclass
class RunBudget:
    """Seconds of wall clock a run may take (``total``; None: unbounded) from ``start`` (time.monotonic)."""

    total: float | None
    start: float
    model_bytes: int = 0
    train_start: float | None = None
    train_s_per_image: float | None = None  # last measured (seconds per training image, this process)
    val_s_per_image: float | None = None  # last measured (seconds per validation image, all processes)
    val_pixel_ratio: float = 1.0  # pixels of a validation image / pixels of a training item
    writes_s: float | None = None  # last measured epoch-end writes (history, curves, checkpoint)
    tune_images: int = 0  # validation images the post-processing tuning predicts at the end (0: no tuning)
    world: int = 1  # processes that share a validation (the tuning runs on rank 0 alone)

    @classmethod
    def from_minutes(cls, minutes: float | None, start: float, model_bytes: int = 0) -> RunBudget:
        return cls(minutes * 60 if minutes else None, start, model_bytes)

    @property
    def bounded(self) -> bool:
        return self.total is not None

    def elapsed(self, now: float) -> float:
        return now - self.start

    def left(self, now: float) -> float:
        return math.inf if self.total is None else self.total - (now - self.start)

    def margin(self) -> float:
        """Slack kept free at the end (process exit, logging): 0.5 s + 1 % of the budget."""
        return 0.5 + 0.01 * (self.total or 0.0)

    def val_seconds_per_image(self) -> float | None:
        if self.val_s_per_image is not None:
            return self.val_s_per_image
        if self.train_s_per_image is not None:
            return self.train_s_per_image * FORWARD_SHARE * self.val_pixel_ratio
        return None

    def val_seconds(self, n_images: int) -> float:
        per = self.val_seconds_per_image()
        return 0.0 if per is None else per * n_images

    def writes_seconds(self) -> float:
        if self.writes_s is not None:
            return self.writes_s
        return 1.0 + 2 * self.model_bytes / 100e6  # best.pt + last.pt at ~100 MB/s, plus the curves

    def tune_seconds_per_image(self) -> float | None:
        """Estimated seconds of post-processing tuning per validation image, on one process."""
        per = self.val_seconds_per_image()
        return None if per is None else per * TUNE_COST * self.world

    def tune_seconds(self) -> float:
        """Seconds to keep for the post-processing tuning (capped at TUNE_SHARE of the budget)."""
        if self.total is None or not self.tune_images:
            return 0.0
        return min((self.tune_seconds_per_image() or 0.0) * self.tune_images, TUNE_SHARE * self.total)

    def tune_images_that_fit(self, now: float) -> int:
        """How many validation images the post-processing tuning can predict in what is left now."""
        per = self.tune_seconds_per_image()
        if self.total is None or not per:
            return self.tune_images
        return min(self.tune_images, int(max(self.left(now) - self.margin(), 0.0) / per))

    def reserve(self, n_val: int) -> float:
        """Seconds to keep for the end of the run: final validation (capped) + writes + post-processing
        tuning (capped) + margin."""
        if self.total is None:
            return 0.0
        return (min(self.val_seconds(n_val), FINAL_VAL_SHARE * self.total) + self.writes_seconds()
                + self.tune_seconds() + self.margin())

    def lr_fraction(self, now: float, n_val: int) -> float:
        """Share (0..1) of the training time spent: drives a time-based learning-rate schedule to its end
        when training stops for the reserve, not at the budget's end."""
        if self.total is None or self.train_start is None:
            return 0.0
        span = self.start + self.total - self.reserve(n_val) - self.train_start
        return float(np.clip((now - self.train_start) / max(span, 1e-9), 0.0, 1.0))

    def val_images(self, n_val: int, now: float, *, final: bool, at_least_one: bool = False) -> int:
        """How many validation images fit now (0 = skip this validation).

        Between epochs a validation must leave room for the final reserve; the final one may use what is
        left after the writes, the post-processing tuning and the margin. ``at_least_one``: score one image
        even over the budget (a run that has no validated model yet).
        """
        if self.total is None or n_val == 0:
            return n_val
        per = self.val_seconds_per_image()
        room = self.left(now) - self.writes_seconds() - self.margin()
        room -= self.reserve(n_val) if not final else self.tune_seconds()
        if per is None or per <= 0:
            return n_val if room > 0 or at_least_one else 0
        k = min(n_val, int(max(room, 0.0) / per))
        return max(k, 1) if at_least_one else k


def exit_now() -> None:
    """End the process at once with status 0 after flushing logs and streams (``os._exit``): a finished
    training run has written everything atomically, and the interpreter's teardown of torch and the models
    takes seconds on a loaded CPU, counted against ``--time-budget``. Only for a process's last act."""
    import logging
    import os
    import sys

    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(0)


def probe_seconds_per_image(model, images, mean_std, rt) -> float:
    """Seconds one training image will take, from a timed forward pass of ``images[:1]`` (uint8 NCHW) in
    eval mode without gradients (BatchNorm statistics untouched), scaled by 1 / FORWARD_SHARE. The pass is
    timed the second time (the first pays the kernels' warm-up); one image per pass forgoes the batch's
    efficiency, so the figure errs long and the budget errs on the safe side."""
    import time as _time

    import torch

    from medseg.data.transforms import normalize_batch

    was_training = model.training
    model.eval()
    try:
        x = normalize_batch(images[:1], *mean_std).to(rt.device, memory_format=rt.memory_format())
        with torch.no_grad(), rt.autocast():
            model(x)
            t0 = _time.monotonic()
            model(x)
        return (_time.monotonic() - t0) / FORWARD_SHARE
    finally:
        model.train(was_training)


def spread(n: int, k: int) -> list[int]:
    """``k`` of ``range(n)`` evenly spread (all when k >= n): the subset a shortened validation scores."""
    if k >= n:
        return list(range(n))
    return sorted(set(np.linspace(0, n - 1, k).round().astype(int).tolist()))
