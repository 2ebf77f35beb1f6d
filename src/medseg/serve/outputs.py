"""What the service answers: mask PNG, overlay PNG, probability PNG, JSON summary, DICOM SEG.

PNG files are written with :func:`medseg.io.images.write_png`, the writer ``medseg predict`` uses, so a
mask from the service is the same file, byte for byte, as the command line writes for the same input.

JSON conventions (COCO, https://cocodataset.org/#format-data): ``bbox`` is ``[x, y, width, height]``
in pixels from the top-left corner; ``rle`` is COCO's compressed RLE (column-major run lengths starting
with background, as ``pycocotools.mask.encode`` writes them); ``polygons`` are outer contours as flat
``[x1, y1, x2, y2, ...]`` lists (OpenCV ``findContours``, simple chain approximation).
"""

from __future__ import annotations

import base64
from io import BytesIO
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from medseg.config import label_names
from medseg.inference.overlay import class_colours, make_overlay
from medseg.io.images import write_png

#: ``?format=`` values and the media type each answers with.
MEDIA_TYPES = {"png": "image/png", "json": "application/json", "overlay": "image/png", "dicom-seg": "application/dicom",
               "probability": "image/png", "viewer": "application/json"}
#: ``Accept`` media types that choose a format when ``?format=`` is absent (first match wins).
ACCEPT = (("application/json", "json"), ("application/dicom", "dicom-seg"), ("image/png", "png"))


def png_bytes(arr: np.ndarray, workdir: Path, *, palette=None, name: str = "out.png") -> bytes:
    """``arr`` as the PNG file :func:`write_png` writes (same encoder, same bytes as ``medseg predict``)."""
    path = Path(workdir) / name
    write_png(path, arr, palette=palette)
    data = path.read_bytes()
    path.unlink(missing_ok=True)
    return data


def mask_png(mask: np.ndarray, config, workdir: Path, *, dicom: bool = False) -> bytes:
    """The mask file ``medseg predict`` writes: 0/255 for one class; for several, class values as an indexed
    PNG in the class colours (images) or plain grey values (DICOM frames, as ``--format png`` writes them)."""
    return png_bytes(mask, workdir, palette=class_colours(config) if config.model.classes > 1 and not dicom else None)


def overlay_png(image: np.ndarray, mask: np.ndarray, config, workdir: Path) -> bytes:
    """The ``<stem>_overlay.png`` of ``medseg predict --overlay``."""
    colours = class_colours(config) if config.model.classes > 1 else None
    return png_bytes(make_overlay(image, mask, colours=colours), workdir)


def probability_image(proba: np.ndarray) -> np.ndarray:
    """8-bit probabilities for the viewer (the threshold is then applied in the browser).

    One class: HxW grey, ``round(p * 255)``. Several classes: HxWx3 RGB, R = argmax class index,
    G = ``round(p_max * 255)`` (the winning class's probability), B = 0.
    """
    if proba.ndim == 2:
        return np.clip(np.rint(proba * 255.0), 0, 255).astype(np.uint8)
    out = np.zeros((*proba.shape[:2], 3), np.uint8)
    out[..., 0] = np.argmax(proba, axis=2)
    out[..., 1] = np.clip(np.rint(proba.max(axis=2) * 255.0), 0, 255)
    return out


def jpeg_bytes(image: np.ndarray, quality: int = 90) -> bytes:
    """A display copy of the decoded input (what the model saw), for the viewer."""
    buf = BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


# -------------------------------------------------------------------------------------------- JSON
def coco_rle(region: np.ndarray) -> dict:
    """COCO compressed RLE of a boolean HxW mask: ``{"size": [H, W], "counts": str}`` (pycocotools' format).

    Run lengths are taken in column-major order, starting with a (possibly empty) background run; the
    string is pycocotools' ``rleToString`` encoding (5-bit groups + 48, deltas from the run two before).
    """
    h, w = region.shape
    flat = np.asarray(region, dtype=bool).ravel(order="F")
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    runs = np.diff(bounds).tolist()
    if flat.size and flat[0]:
        runs = [0] + runs
    chars = []
    for i, run in enumerate(runs):
        x = run - runs[i - 2] if i > 2 else run
        more = True
        while more:
            c = x & 0x1F
            x >>= 5
            more = (x != -1) if (c & 0x10) else (x != 0)
            if more:
                c |= 0x20
            chars.append(chr(c + 48))
    return {"size": [int(h), int(w)], "counts": "".join(chars)}


def polygons(region: np.ndarray) -> list[list[int]]:
    """Outer contours of a boolean mask as flat ``[x1, y1, x2, y2, ...]`` lists (at least 3 points each)."""
    contours, _ = cv2.findContours(region.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    return [c.reshape(-1).astype(int).tolist() for c in contours if len(c) >= 3]


def bbox(region: np.ndarray) -> list[int] | None:
    """``[x, y, width, height]`` of the foreground, None when empty."""
    ys, xs = np.nonzero(region)
    if not len(xs):
        return None
    x0, y0 = int(xs.min()), int(ys.min())
    return [x0, y0, int(xs.max()) - x0 + 1, int(ys.max()) - y0 + 1]


def class_summaries(mask: np.ndarray, config, spacing_mm: tuple[float, float] | None = None) -> list[dict]:
    """Per foreground class: name, value in the mask PNG, area (pixels, fraction, mm² when known), bbox,
    COCO RLE and polygons. ``mask`` is the mask PNG's array (0/255 for one class, indices otherwise)."""
    names, colours, multi = label_names(config), class_colours(config), config.model.classes > 1
    values = range(1, config.model.classes) if multi else [255]
    out = []
    for i, value in enumerate(values, start=1):
        region = mask == value
        area = int(region.sum())
        entry = {"index": i, "name": names[i] if i < len(names) else f"class {i}", "value": int(value),
                 "colour": list(colours[i % len(colours)]) if multi else [255, 64, 32],
                 "area_pixels": area, "area_fraction": area / mask.size if mask.size else 0.0,
                 "bbox": bbox(region), "rle": coco_rle(region), "polygons": polygons(region)}
        if spacing_mm is not None:
            entry["area_mm2"] = area * spacing_mm[0] * spacing_mm[1]
        out.append(entry)
    return out


def dicom_seg_bytes(dataset, masks: list[np.ndarray], config, workdir: Path) -> bytes:
    """A DICOM SEG for the uploaded instance (every frame), described as ``medseg predict --format dicom-seg``
    describes it (:func:`~medseg.inference.dicom_prediction.seg_description`, :func:`medseg.io.dicom_seg.write_seg`)."""
    from medseg.inference.dicom_prediction import seg_description
    from medseg.io.dicom_seg import write_seg

    binary = config.model.classes == 1
    labels = np.stack([(m > 0).astype(np.uint8) if binary else m.astype(np.uint8) for m in masks])
    path = Path(workdir) / "mask.seg.dcm"
    write_seg([dataset], labels, path, **seg_description(config))
    data = path.read_bytes()
    path.unlink(missing_ok=True)
    return data
