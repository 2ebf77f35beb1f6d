"""A synthetic dermoscopy-like dataset in the ISIC layout, for the demo and the tests.

Each image is skin with smooth shading and texture, one irregular pigmented lesion (light brown to
dark brown or blue-grey, with blotches and dots, sometimes a fuzzy low-contrast border), dark
hairs that cross it, dermatoscope vignetting, blur and noise. The mask is the lesion region
(hairs are not part of it), limited to the visible field of the dermatoscope. A small U-Net learns
it to Dice >= 0.9 in minutes on a CPU; a few percent of lesions are faint on purpose.

Layout written by :func:`make_synthetic_dataset`::

    out/images/SYN_0001.jpg                 RGB JPEG
    out/masks/SYN_0001_segmentation.png     {0, 255}
    out/split.csv                           image_id,split  (train / val / test)
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from medseg.errors import ConfigError
from medseg.io.files import write_bytes_atomic

JPEG_QUALITY = 92
MIN_SIZE = 32

# RGB anchors in 0..1. Skin from light to tanned; lesions from light brown to dark brown.
_SKIN_LIGHT = np.array([0.93, 0.78, 0.70], np.float32)
_SKIN_TAN = np.array([0.78, 0.56, 0.42], np.float32)
_LESION_BROWNS = np.array([[0.70, 0.50, 0.36], [0.52, 0.33, 0.22], [0.32, 0.20, 0.14]], np.float32)  # light .. dark
_BLUE_GREY = np.array([0.34, 0.37, 0.45], np.float32)


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Zero-mean, unit-std float32 field with about ``cells`` bumps across the image."""
    small = rng.standard_normal((cells + 1, cells + 1)).astype(np.float32)
    field = cv2.resize(small, (size, size), interpolation=cv2.INTER_CUBIC)
    return (field - field.mean()) / (field.std() + 1e-6)


def _skin(rng: np.random.Generator, size: int) -> np.ndarray:
    """Skin-toned HxWx3 float image with low-frequency shading, redness and fine texture."""
    base = _SKIN_LIGHT + rng.uniform(0, 1) * (_SKIN_TAN - _SKIN_LIGHT)
    shade = 1 + 0.05 * _smooth_noise(rng, size, 3)
    red = np.clip(_smooth_noise(rng, size, 4), 0, None) * rng.uniform(0, 0.05)
    fine = rng.standard_normal((size, size)).astype(np.float32)
    fine = cv2.GaussianBlur(fine, (0, 0), rng.uniform(0.8, 1.6))
    texture = 1 + rng.uniform(0.02, 0.05) * fine / (fine.std() + 1e-6)
    img = base[None, None, :] * (shade * texture)[..., None]
    img[..., 1:] -= red[..., None]  # redness: less green and blue
    return img


def _lesion_field(rng: np.random.Generator, size: int) -> tuple[np.ndarray, float]:
    """Signed distance-like field in pixels (> 0 inside an irregular blob) and its mean radius."""
    frac = 0.05 + 0.55 * rng.uniform() ** 1.3  # target area fraction
    radius = size * np.sqrt(frac / np.pi)
    margin = max(size / 2 - 0.8 * radius, 0.0)
    cx, cy = size / 2 + rng.uniform(-0.8, 0.8, 2) * margin
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    dx, dy = xx - cx, yy - cy
    beta, stretch = rng.uniform(0, np.pi), rng.uniform(0.75, 1.3)
    u = (dx * np.cos(beta) + dy * np.sin(beta)) / stretch
    v = (-dx * np.sin(beta) + dy * np.cos(beta)) * stretch
    rho, theta = np.hypot(u, v), np.arctan2(v, u)
    r = np.ones_like(rho)
    for k in range(2, 8):
        r += rng.uniform(0, 0.16) / k**0.7 * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    r *= 1 + 0.07 * _smooth_noise(rng, size, 8) + 0.025 * _smooth_noise(rng, size, 20)
    return radius * r - rho, radius


def _lesion_colour(rng: np.random.Generator, skin_rgb: np.ndarray, hard: bool) -> np.ndarray:
    """Base RGB of a lesion: along light -> dark brown, sometimes towards blue-grey."""
    t = rng.uniform(0, 2)
    i = min(int(t), 1)
    rgb = _LESION_BROWNS[i] + (t - i) * (_LESION_BROWNS[i + 1] - _LESION_BROWNS[i])
    if rng.uniform() < 0.15:
        rgb = rgb + rng.uniform(0.3, 0.7) * (_BLUE_GREY - rgb)
    if hard:  # faint lesion: close to the skin colour
        rgb = skin_rgb + rng.uniform(0.25, 0.4) * (rgb - skin_rgb)
    return rgb


def _paint_lesion(rng: np.random.Generator, img: np.ndarray, dist: np.ndarray, radius: float) -> None:
    """Blend a pigmented lesion into ``img`` in place, with fuzzy borders, blotches and dots."""
    size = img.shape[0]
    hard = rng.uniform() < 0.04
    skin_rgb = img.reshape(-1, 3).mean(axis=0)
    rgb = _lesion_colour(rng, skin_rgb, hard)
    softness = rng.uniform(2.5, 5.0) if (hard or rng.uniform() < 0.3) else rng.uniform(0.5, 1.5)
    alpha = 1 / (1 + np.exp(-np.clip(dist / softness, -30, 30)))
    depth = np.clip(dist / (0.7 * radius), 0, 1) ** 0.7  # 0 at the border, 1 in the core
    darken = 1 - rng.uniform(0.0, 0.3) * depth  # cores are darker
    blotch = np.clip(_smooth_noise(rng, size, int(rng.integers(4, 9))) - 0.4, 0, 1.5)
    darken *= 1 - rng.uniform(0.1, 0.3) * blotch
    darken *= 1 + 0.06 * _smooth_noise(rng, size, 12)
    # pigment network: the zero-crossings of band-passed noise form a mesh of thin dark lines
    mesh = cv2.GaussianBlur(rng.standard_normal((size, size)).astype(np.float32), (0, 0), size / 100)
    mesh = np.clip(1 - np.abs(mesh) / (0.35 * mesh.std() + 1e-6), 0, 1)
    darken *= 1 - rng.uniform(0.05, 0.25) * mesh * (0.3 + 0.7 * depth)
    colour = rgb[None, None, :] * darken[..., None]
    if rng.uniform() < 0.15:  # whitish-blue regression area
        white = np.clip(_smooth_noise(rng, size, 6) - 1.0, 0, 1)[..., None] * rng.uniform(0.15, 0.4)
        colour += white * (np.array([0.70, 0.70, 0.76], np.float32) - colour)
    if not hard:
        dots = np.zeros((size, size), np.uint8)
        inside = np.argwhere(dist > 0.15 * radius)
        n_dots = int(rng.integers(0, 10)) if len(inside) else 0
        for y, x in inside[rng.integers(0, max(len(inside), 1), n_dots)]:
            value = int(rng.integers(100, 256))
            cv2.circle(dots, (int(x), int(y)), int(rng.integers(1, 4)), value, -1, cv2.LINE_AA)
        colour *= 1 - 0.5 * (dots.astype(np.float32) / 255)[..., None]
    img *= 1 - alpha[..., None]
    img += alpha[..., None] * colour


def _draw_hairs(rng: np.random.Generator, img: np.ndarray) -> np.ndarray:
    """Draw dark curved hairs over ``img`` in place; return the hair coverage in 0..1."""
    size = img.shape[0]
    kind = rng.uniform()
    n = 0 if kind < 0.35 else int(rng.integers(1, 6)) if kind < 0.8 else int(rng.integers(6, 20))
    canvas = np.zeros((size, size), np.uint8)
    t = np.linspace(0, 1, 40)[:, None]
    for _ in range(n):
        start = rng.uniform(-0.1, 1.1, 2) * size
        angle = rng.uniform(0, 2 * np.pi)
        end = start + rng.uniform(0.3, 1.2) * size * np.array([np.cos(angle), np.sin(angle)])
        bend = rng.normal(0, 0.15) * size * np.array([-np.sin(angle), np.cos(angle)])
        ctrl = (start + end) / 2 + bend
        pts = (1 - t) ** 2 * start + 2 * (1 - t) * t * ctrl + t**2 * end  # quadratic Bezier
        pts = np.round(pts * 16).astype(np.int32)  # 4 fractional bits for smooth lines
        thickness = 1 if rng.uniform() < 0.7 else 2
        cv2.polylines(canvas, [pts], False, 255, thickness, cv2.LINE_AA, shift=4)
    cover = canvas.astype(np.float32) / 255 * rng.uniform(0.75, 1.0)
    hair_rgb = np.array([0.14, 0.10, 0.08], np.float32) * rng.uniform(0.4, 1.2)
    img *= 1 - cover[..., None]
    img += cover[..., None] * hair_rgb
    return cover


def _vignette(rng: np.random.Generator, size: int) -> np.ndarray:
    """Dermatoscope field of view: 1 inside a circle, falling to 0 in the corners (or all 1)."""
    if rng.uniform() < 0.35:
        return np.ones((size, size), np.float32)
    cx, cy = size / 2 + rng.uniform(-0.05, 0.05, 2) * size
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    rho = np.hypot(xx - cx, yy - cy)
    edge = rng.uniform(0.56, 0.72) * size
    width = rng.uniform(0.01, 0.05) * size
    return np.clip((edge - rho) / width + 0.5, 0, 1)


def make_synthetic_pair(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """One dermoscopy-like image (HxWx3 uint8 RGB) and its lesion mask (HxW uint8 in {0, 1})."""
    if size < MIN_SIZE:
        raise ConfigError(f"synthetic image size {size} is too small; use at least {MIN_SIZE} pixels")
    img = _skin(rng, size)
    for _ in range(6):  # resample blobs that fall almost entirely off the image
        dist, radius = _lesion_field(rng, size)
        if 0.04 <= np.mean(dist > 0) <= 0.65:
            break
    _paint_lesion(rng, img, dist, radius)
    _draw_hairs(rng, img)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    falloff = 1 - rng.uniform(0, 0.15) * (np.hypot(xx - size / 2, yy - size / 2) / (size / 2)) ** 2
    field = _vignette(rng, size)
    img *= (falloff * (0.03 + 0.97 * field))[..., None]
    img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.3, 0.7))
    img += rng.normal(0, rng.uniform(0.006, 0.02), img.shape).astype(np.float32)
    image = np.clip(img * 255 + 0.5, 0, 255).astype(np.uint8)
    mask = ((dist > 0) & (field >= 0.5)).astype(np.uint8)
    return image, mask


def _encode(ext: str, array: np.ndarray, params: list[int]) -> bytes:
    ok, buf = cv2.imencode(ext, array, params)
    if not ok:  # pragma: no cover - OpenCV always encodes these
        raise RuntimeError(f"OpenCV could not encode a {ext} image")
    return buf.tobytes()


def make_synthetic_dataset(out: Path | str, *, n_train: int = 160, n_val: int = 40, n_test: int = 40, size: int = 192,
                           seed: int = 0) -> Path:
    """Write a synthetic dermoscopy dataset in the ISIC layout under ``out`` and return ``out``.

    Image ``i`` depends only on ``(seed, i)``, so the same seed gives the same files, and a larger
    dataset extends a smaller one. ``split.csv`` is written last: its presence marks a complete set.
    """
    counts = {"train": n_train, "val": n_val, "test": n_test}
    if any(n < 0 for n in counts.values()) or sum(counts.values()) == 0:
        raise ConfigError(f"synthetic split sizes must be >= 0 and not all zero, got {counts}")
    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    splits = [name for name, n in counts.items() for _ in range(n)]
    rows = []
    for index, split in enumerate(splits, start=1):
        image_id = f"SYN_{index:04d}"
        image, mask = make_synthetic_pair(np.random.default_rng([seed, index]), size)
        bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
        jpeg = _encode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        write_bytes_atomic(out / "images" / f"{image_id}.jpg", jpeg)
        png = _encode(".png", mask * np.uint8(255), [cv2.IMWRITE_PNG_COMPRESSION, 3])
        write_bytes_atomic(out / "masks" / f"{image_id}_segmentation.png", png)
        rows.append((image_id, split))
    write_bytes_atomic(out / "split.csv", "".join(f"{i},{s}\n" for i, s in [("image_id", "split"), *rows]).encode())
    return out
