"""Plain helpers that write tiny image/mask files for the io and data tests (no fixtures here)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

SIZE = (24, 16)  # (width, height) of the synthetic images


def rgb(seed: int = 0, size: tuple[int, int] = SIZE) -> np.ndarray:
    """A random HxWx3 uint8 picture."""
    w, h = size
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def disc(size: tuple[int, int] = SIZE, value: int = 255, radius: float = 0.3) -> np.ndarray:
    """An HxW uint8 mask with a centred disc of ``value`` on 0."""
    w, h = size
    yy, xx = np.mgrid[:h, :w]
    inside = (yy - h / 2) ** 2 + (xx - w / 2) ** 2 <= (radius * min(w, h)) ** 2
    return (inside * value).astype(np.uint8)


def save(path: Path, arr: np.ndarray, **kwargs) -> Path:
    """Write ``arr`` with PIL (format from the file ending); creates parent folders."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path, **kwargs)
    return path


def jpeg_bytes(arr: np.ndarray, quality: int = 60) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def truncated_jpeg(path: Path, seed: int = 0, size: tuple[int, int] = (64, 48)) -> Path:
    """A JPEG cut in half: the header is fine, the pixels are not all there."""
    data = jpeg_bytes(rgb(seed, size), quality=95)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data[: len(data) // 2])
    return path


def not_an_image(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("this is not a picture\n")
    return path


def noisy_mask(size: tuple[int, int] = (64, 48)) -> np.ndarray:
    """A 0/255 disc that went through JPEG: grey levels near 0 and 255 along the edge."""
    return np.asarray(Image.open(io.BytesIO(jpeg_bytes(disc(size, radius=0.35), quality=50))).convert("L"))


def isic_folder(root: Path, ids: list[str], image_ext: str = ".jpg", mask_suffix: str = "_segmentation",
                images: str = "images", masks: str = "masks") -> Path:
    """``root/images/<id><ext>`` + ``root/masks/<id><suffix>.png`` with good 0/255 masks."""
    for i, case in enumerate(ids):
        save(root / images / f"{case}{image_ext}", rgb(i))
        save(root / masks / f"{case}{mask_suffix}.png", disc())
    return root


def messy_folder(root: Path) -> Path:
    """An ISIC-like folder with every kind of broken file mixed among good ones.

    Good pairs: good1, good2 (0/255), zero_one (0/1), empty (all 0, warning), noisy (JPEG mask, warning),
    rgbgrey (RGB with equal channels). Broken: truncated (image), notimage (image), size (mismatch),
    colour (RGB mask), grey (continuous mask), badmask (mask not an image), lonely (no mask),
    orphan (mask without image).
    """
    img, msk = root / "images", root / "masks"
    for i, case in enumerate(["good1", "good2", "zero_one", "empty", "rgbgrey", "size", "colour", "grey",
                              "badmask", "lonely"]):
        save(img / f"{case}.jpg", rgb(i))
    save(img / "noisy.jpg", rgb(20, (64, 48)))
    truncated_jpeg(img / "truncated.jpg")
    not_an_image(img / "notimage.png")
    for case in ["good1", "good2"]:
        save(msk / f"{case}_segmentation.png", disc())
    save(msk / "zero_one_segmentation.png", disc(value=1))
    save(msk / "empty_segmentation.png", np.zeros(SIZE[::-1], np.uint8))
    save(msk / "rgbgrey_segmentation.png", np.repeat(disc()[:, :, None], 3, axis=2))
    save(msk / "noisy_segmentation.png", noisy_mask())
    save(msk / "truncated_segmentation.png", disc((64, 48)))
    save(msk / "notimage_segmentation.png", disc())
    save(msk / "size_segmentation.png", disc((20, 20)))
    colour = np.zeros(SIZE[::-1] + (3,), np.uint8)
    colour[:5] = (255, 0, 0)
    colour[5:10] = (0, 255, 0)
    save(msk / "colour_segmentation.png", colour)
    save(msk / "grey_segmentation.png", rgb(99)[:, :, 0])
    not_an_image(msk / "badmask_segmentation.png")
    save(msk / "orphan_segmentation.png", disc())
    (root / "ATTRIBUTION.txt").write_text("ISIC\n")
    (img / "ATTRIBUTION.txt").write_text("ISIC\n")
    (img / "Thumbs.db").write_bytes(b"\0\1")
    (img / ".DS_Store").write_bytes(b"\0")
    (msk / "._good1_segmentation.png").write_bytes(b"\0")
    return root
