"""Large images: letterbox or sliding windows, and the sliding-window pass itself.

Training letterboxes whole images to ``image_size``, so the model knows objects at the scale
``image_size / train_side`` (``train_side``: the median long side of the training images). An image
of about that size is letterboxed like in training. One much larger than the training images (more
than ``sliding_above`` times ``train_side``) shows a larger field of view: it is resized to the
training scale and covered by overlapping ``image_size`` windows (MONAI's sliding-window inferer,
Gaussian weighting), so memory stays bounded by the window batch and the output maps.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch

from medseg.config import Config
from medseg.inference.tta import Backend, MemberStats, TTAPlan, channels_last, flip_members


def typical_long_side(pairs, limit: int = 200) -> int | None:
    """Median long side (px) of up to ``limit`` images of ``pairs`` (evenly spread); None if none opens."""
    from medseg.data.readers import pair_image_size
    from medseg.errors import MedsegError

    pairs = list(pairs)
    if len(pairs) > limit:
        pairs = [pairs[i] for i in np.linspace(0, len(pairs) - 1, limit).round().astype(int)]
    sides = []
    for pair in pairs:
        try:
            sides.append(max(pair_image_size(pair)))
        except MedsegError:
            continue
    return int(np.median(sides)) if sides else None


def choose_mode(height: int, width: int, config: Config) -> str:
    """letterbox or sliding for an image of ``height`` x ``width`` under ``config.infer.mode``."""
    mode = config.infer.mode
    if mode != "auto":
        return mode
    reference = config.infer.train_side or config.data.image_size
    return "sliding" if max(height, width) > config.infer.sliding_above * reference else "letterbox"


def training_scale(config: Config) -> float:
    """The resize factor that brings an image to the scale the model was trained at."""
    side = config.infer.train_side
    return config.data.image_size / side if side else 1.0


def resize(image: np.ndarray, height: int, width: int, *, shrinking: bool | None = None) -> np.ndarray:
    if image.shape[:2] == (height, width):
        return image
    shrinking = height < image.shape[0] if shrinking is None else shrinking
    interp = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    return cv2.resize(np.ascontiguousarray(image), (width, height), interpolation=interp)


def sliding_members(image: np.ndarray, backend: Backend, *, window: int, scale: float, flips: tuple[str, ...],
                    overlap: float, batch_size: int) -> np.ndarray:
    """Probabilities (F, C, H', W') of ``image`` resized by ``scale``: one map per flip member."""
    h, w = image.shape[:2]
    hs, ws = max(1, round(h * scale)), max(1, round(w * scale))
    scaled = resize(image, hs, ws)
    x = torch.from_numpy(np.require(scaled, requirements=["C", "W"])).permute(2, 0, 1)[None].float()
    n_members = 1 + len(flips)

    def windows(batch: torch.Tensor) -> torch.Tensor:
        images = batch.permute(0, 2, 3, 1).round().clamp(0, 255).to(torch.uint8).numpy()
        members = flip_members(backend, images, flips, max_batch=batch_size)  # (B, F, C, S, S)
        b, f, c = members.shape[:3]
        return torch.from_numpy(np.ascontiguousarray(members.reshape(b, f * c, window, window)))

    from monai.inferers import sliding_window_inference

    out = sliding_window_inference(x, (window, window), max(1, batch_size // n_members), windows,
                                   overlap=overlap, mode="gaussian", padding_mode="constant", cval=0.0)
    out = out[0].numpy()
    return out.reshape(n_members, -1, *out.shape[1:])


def sliding_predict(image: np.ndarray, backend: Backend, config: Config, plan: TTAPlan, *, want_std: bool,
                    baked_flips: tuple[str, ...] = ()) -> tuple[np.ndarray, np.ndarray | None]:
    """(mean probability, std or None) at the image's own size, from sliding windows at each TTA scale."""
    h, w = image.shape[:2]
    stats = MemberStats(want_std)
    flips = () if baked_flips else plan.flips
    for s in plan.scales:
        members = sliding_members(image, backend, window=config.data.image_size, scale=training_scale(config) * s,
                                  flips=flips, overlap=config.infer.overlap, batch_size=config.infer.batch_size)
        for member in members:
            stats.add(resize(channels_last(member), h, w, shrinking=member.shape[-2] > h))
    return stats.mean(), (stats.std() if want_std else None)
