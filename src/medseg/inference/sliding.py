"""Large images: letterbox or sliding windows, and the sliding-window pass itself.

Training letterboxes whole images to ``image_size``, so the model knows objects at the scale
``image_size / train_side`` (``train_side``: the median long side of the training images). An image
of about that size is letterboxed like in training. One much larger than the training images (more
than ``sliding_above`` times ``train_side``) shows a larger field of view: it is resized to the
training scale and covered by overlapping ``image_size`` windows (blended with Gaussian weights as
MONAI's sliding-window inferer), so memory stays bounded by the uint8 image, the window batch and the
float32 output map.

A patch-trained model (``data.patch_size`` set) learned on patches of images resampled by ``data.scale``
(:mod:`medseg.data.patches`): auto mode always slides ``patch_size`` windows over the image resampled
by ``data.scale``, and the probabilities are resized back to the image's own size.
"""

from __future__ import annotations

import cv2
import numpy as np

from medseg.config import Config
from medseg.inference.tta import Backend, MemberStats, TTAPlan, classes_last, flip_members


def choose_mode(height: int, width: int, config: Config) -> str:
    """letterbox or sliding for an image of ``height`` x ``width`` under ``config.infer.mode``."""
    mode = config.infer.mode
    if mode != "auto":
        return mode
    if config.data.patch_size:
        return "sliding"
    reference = config.infer.train_side or config.data.image_size
    return "sliding" if max(height, width) > config.infer.sliding_above * reference else "letterbox"


def training_scale(config: Config) -> float:
    """The resize factor that brings an image to the scale the model was trained at."""
    if config.data.patch_size:
        return config.data.scale
    side = config.infer.train_side
    return config.data.image_size / side if side else 1.0


def window_side(config: Config) -> int:
    """Side (px) of the sliding windows: the training patch, else the letterbox input size."""
    return config.data.patch_size or config.data.image_size


def input_geometry(config: Config) -> dict:
    """How images reach the network: ``mode`` (letterbox, sliding, or auto: letterbox unless the image is
    over ``sliding_above`` x ``train_side``), ``input_size`` (px: the window side, else the letterbox side),
    ``patch_size`` (px, None for whole-image training) and ``scale`` (the resize to the training scale)."""
    patch = config.data.patch_size
    mode = "sliding" if patch and config.infer.mode == "auto" else config.infer.mode
    return {"mode": mode, "input_size": window_side(config), "patch_size": patch,
            "scale": round(training_scale(config), 4) if patch or mode == "sliding" else None}


def describe_input(config: Config) -> str:
    """One phrase for :func:`input_geometry`: ``input 256x256 letterboxed`` or ``sliding 192x192 windows at
    scale 0.5``."""
    g = input_geometry(config)
    n = g["input_size"]
    if g["mode"] == "sliding":
        return f"sliding {n}x{n} windows at scale {g['scale']:g}"
    return f"input {n}x{n} letterboxed" + (", sliding windows for large images" if g["mode"] == "auto" else "")


def resize(image: np.ndarray, height: int, width: int, *, shrinking: bool | None = None) -> np.ndarray:
    if image.shape[:2] == (height, width):
        return image
    shrinking = height < image.shape[0] if shrinking is None else shrinking
    interp = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    return cv2.resize(np.ascontiguousarray(image), (width, height), interpolation=interp)


def _gaussian(window: int, sigma_scale: float = 0.125) -> np.ndarray:
    """1-D Gaussian weights over a window (sigma = window / 8, peak 1), as MONAI's importance map
    (``mode="gaussian"``, ``sigma_scale=0.125``); the 2-D map is the outer product of two of these."""
    i = np.arange(window, dtype=np.float64) - (window - 1) / 2
    g = np.exp(-0.5 * (i / (sigma_scale * window)) ** 2)
    return np.maximum(g / g.max(), 1e-3).astype(np.float32)


def _starts(length: int, window: int, overlap: float) -> list[int]:
    """Window starts covering ``length`` with steps of ``window * (1 - overlap)``; the last ends at the edge."""
    if length <= window:
        return [0]
    step = max(1, int(window * (1 - overlap)))
    starts = list(range(0, length - window + 1, step))
    if starts[-1] != length - window:
        starts.append(length - window)
    return starts


def sliding_members(image: np.ndarray, backend: Backend, *, window: int, scale: float, flips: tuple[str, ...],
                    overlap: float, batch_size: int) -> np.ndarray:
    """Probabilities (F, C, H', W') of ``image`` resized by ``scale``: one map per flip member.

    Windows of ``window`` px with ``overlap``, blended by Gaussian weights (as MONAI's sliding-window
    inferer with ``mode="gaussian"``); windows reaching past a small image are zero padded. Memory:
    the uint8 image, ``batch_size`` windows and the float32 output only; the blending weights are
    separable (a product of one row and one column profile), so no per-pixel weight map is stored.
    """
    h, w = image.shape[:2]
    hs, ws = max(1, round(h * scale)), max(1, round(w * scale))
    scaled = resize(image, hs, ws)
    n_members = 1 + len(flips)
    rows, cols = _starts(hs, window, overlap), _starts(ws, window, overlap)
    g = _gaussian(window)
    weight_y, weight_x = np.zeros(hs, np.float32), np.zeros(ws, np.float32)
    for r in rows:
        weight_y[r : r + window] += g[: min(window, hs - r)]
    for c in cols:
        weight_x[c : c + window] += g[: min(window, ws - c)]
    per_call = max(1, batch_size // n_members)
    out: np.ndarray | None = None
    places = [(r, c) for r in rows for c in cols]
    for i in range(0, len(places), per_call):
        chunk = places[i : i + per_call]
        batch = np.zeros((len(chunk), window, window, 3), np.uint8)
        for k, (r, c) in enumerate(chunk):
            tile = scaled[r : r + window, c : c + window]
            batch[k, : tile.shape[0], : tile.shape[1]] = tile
        members = flip_members(backend, batch, flips, max_batch=batch_size)  # (B, F, C, S, S)
        if out is None:
            out = np.zeros((n_members, members.shape[2], hs, ws), np.float32)
        for k, (r, c) in enumerate(chunk):
            th, tw = min(window, hs - r), min(window, ws - c)
            weights = g[:th, None] * g[None, :tw]
            out[:, :, r : r + th, c : c + tw] += members[k, :, :, :th, :tw] * weights
    for r0 in range(0, hs, 1024):  # normalise in row blocks: no full-size temporary
        out[:, :, r0 : r0 + 1024] /= weight_y[r0 : r0 + 1024, None] * weight_x[None, :]
    return out


def sliding_predict(image: np.ndarray, backend: Backend, config: Config, plan: TTAPlan, *, want_std: bool,
                    baked_flips: tuple[str, ...] = ()) -> tuple[np.ndarray, np.ndarray | None]:
    """(mean probability, std or None) at the image's own size, from sliding windows at each TTA scale."""
    h, w = image.shape[:2]
    stats = MemberStats(want_std)
    flips = () if baked_flips else plan.flips
    for s in plan.scales:
        members = sliding_members(image, backend, window=window_side(config), scale=training_scale(config) * s,
                                  flips=flips, overlap=config.infer.overlap, batch_size=config.infer.batch_size)
        for member in members:
            stats.add(resize(classes_last(member), h, w, shrinking=member.shape[-2] > h))
    return stats.mean(), (stats.std() if want_std else None)
