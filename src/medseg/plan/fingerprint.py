"""The dataset fingerprint: what a folder of image/mask pairs is, in figures a plan can be made from.

Like nnU-Net's fingerprint (Isensee et al., Nature Methods 2021, "dataset fingerprint"), extended for
2D work: besides sizes, spacing and intensities it measures how large and how thin the labelled
structures are, since that decides whether whole images can be shrunk (letterbox) or must be
trained at native resolution in patches.

Figures (all in pixels of the stored image unless a unit is named):

- ``height``/``width``/``aspect`` (width / height): :class:`Distribution` over images.
- ``channels`` (1 grey, 3 colour) and ``modality``: the DICOM Modality tag (``CT``, ``MR``, ...) for
  DICOM images, otherwise ``rgb`` (channels differ) or ``grey``.
- ``spacing_mm``: median (row, column) pixel spacing in mm from DICOM PixelSpacing or
  ImagerPixelSpacing (PS3.3 C.7.6.2.1.1 / C.8.11.4.1.1), None when no image has one.
- ``intensity`` / ``intensity_foreground``: per channel mean, std and the 0.5/50/99.5 percentiles of
  the values the network is fed (uint8 after windowing), over all pixels and over foreground pixels;
  ``modality_values`` / ``modality_values_foreground``: the same over stored modality values (HU for
  CT) for DICOM data, over all pixels and over foreground pixels.
- ``classes``: label value -> fraction of all mask pixels; ``foreground_fraction`` per image.
- ``objects_per_image`` and ``object_area``: connected components (8-connectivity) of the foreground.
- ``structure_width``: the thin-structure measure. For each image, the median over medial-axis pixels
  (local maxima of the Euclidean distance transform of the foreground) of ``2 * d - 1``: 1 for a
  one-pixel line, about the diameter for a disk. ``structure_width_rel`` divides it by the image's
  longer side, which is what survives a resize to a fixed size.
- ``structure_width_area`` (and ``_rel``): the same widths, each medial-axis pixel weighted by the area
  of its inscribed disc (``d**2``), median per image. The plain median counts every ridge pixel
  alike, so the one-pixel spurs of a ragged outline outvote the single centre of a large blob (ISIC:
  1 px plain on many images, about 150 px weighted); weighted by area it is the width of the
  structures that hold most of the foreground (DRIVE vessels about 3.5 px, ISBI membranes 5).

Images are sampled (seeded) when there are more than ``max_images``; sampling is deterministic, so a
fingerprint is the same for the same data.
"""

from __future__ import annotations

import logging
import random
import zlib
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage

from medseg.data.pairs import Pair
from medseg.data.readers import load_pair_mask, read_pair_image
from medseg.errors import DataError
from medseg.io.dicom import is_dicom
from medseg.io.images import IMAGE_SUFFIXES, open_image
from medseg.progress import progress_bar

log = logging.getLogger(__name__)

#: Pixels sampled per image for the intensity percentiles (all pixels when the image has fewer).
PIXELS_PER_IMAGE = 5_000
_PERCENTILES = (0.5, 50.0, 99.5)
#: The default letterbox side (``data.image_size``) against which structure widths are judged.
THIN_AT_SIDE = 256


@dataclass(frozen=True)
class Distribution:
    """Summary of one figure over images: median, 5th/95th percentiles, min, max and count."""

    median: float
    p5: float
    p95: float
    min: float
    max: float
    n: int

    @classmethod
    def of(cls, values) -> Distribution | None:
        a = np.asarray(list(values), dtype=np.float64)
        if a.size == 0:
            return None
        p5, med, p95 = np.percentile(a, [5, 50, 95])
        return cls(round(float(med), 4), round(float(p5), 4), round(float(p95), 4), round(float(a.min()), 4),
                   round(float(a.max()), 4), int(a.size))

    def __str__(self) -> str:
        return f"{_fmt(self.median)} (5-95 %: {_fmt(self.p5)}-{_fmt(self.p95)})"


@dataclass(frozen=True)
class ChannelStats:
    """Intensity statistics of one channel: mean, standard deviation, 0.5 / 50 / 99.5 percentiles."""

    mean: float
    std: float
    p0_5: float
    p50: float
    p99_5: float

    @classmethod
    def of(cls, values: np.ndarray) -> ChannelStats | None:
        if values.size == 0:
            return None
        lo, med, hi = np.percentile(values, _PERCENTILES)
        return cls(*(round(float(v), 3) for v in (values.mean(), values.std(), lo, med, hi)))


@dataclass
class Fingerprint:
    """What a dataset is (see the module docstring for each figure and its unit)."""

    n_pairs: int
    n_sampled: int
    height: Distribution
    width: Distribution
    aspect: Distribution
    channels: int
    modality: str
    spacing_mm: tuple[float, float] | None
    intensity: list[ChannelStats]
    intensity_foreground: list[ChannelStats | None]
    modality_values: ChannelStats | None
    classes: dict[int, float]
    foreground_fraction: Distribution
    objects_per_image: Distribution
    object_area: Distribution | None
    structure_width: Distribution | None
    structure_width_rel: Distribution | None
    unreadable: list[str] = field(default_factory=list)
    modality_values_foreground: ChannelStats | None = None
    structure_width_area: Distribution | None = None
    structure_width_area_rel: Distribution | None = None

    def to_dict(self) -> dict:
        d = asdict(self)
        d["classes"] = {str(k): v for k, v in self.classes.items()}
        return d

    def summary_lines(self) -> list[str]:
        """A human report, one figure per line."""
        lines = [f"images: {self.n_pairs}" + (f" ({self.n_sampled} sampled)" if self.n_sampled < self.n_pairs else ""),
                 f"size (H x W, px): {self.height} x {self.width}; aspect W/H {self.aspect}",
                 f"modality: {self.modality}, {self.channels} channel(s)"
                 + (f", pixel spacing {self.spacing_mm[0]:g} x {self.spacing_mm[1]:g} mm" if self.spacing_mm else
                    ", pixel spacing unknown")]
        names = "RGB" if len(self.intensity) == 3 else "I"
        for i, stats in enumerate(self.intensity):
            fg = self.intensity_foreground[i]
            fg_text = f"; foreground mean {fg.mean:g}" if fg else ""
            lines.append(f"intensity {names[i] if len(names) > i else i}: mean {stats.mean:g}, std {stats.std:g}, "
                         f"0.5-99.5 %: {stats.p0_5:g}-{stats.p99_5:g}{fg_text}")
        if self.modality_values:
            mv = self.modality_values
            unit = " HU" if self.modality == "CT" else ""
            fg = self.modality_values_foreground
            fg_text = (f"; foreground 0.5-99.5 % {fg.p0_5:g}-{fg.p99_5:g}, mean {fg.mean:g}, std {fg.std:g}"
                       if fg else "")
            lines.append(f"stored values{unit}: 0.5-99.5 % {mv.p0_5:g}-{mv.p99_5:g}, median {mv.p50:g}{fg_text}")
        classes, share = ", ".join(f"{k}: {v:.1%}" for k, v in self.classes.items()), self.foreground_fraction
        lines += [f"classes (pixel share): {classes}",
                  f"foreground per image: median {share.median:.1%} (5-95 %: {share.p5:.1%}-{share.p95:.1%})",
                  f"objects per image: {self.objects_per_image}"]
        if self.object_area:
            lines.append(f"object area (px): {self.object_area}")
        if self.structure_width:
            lines.append(f"structure width (px, medial axis): {self.structure_width}; relative to the longer side "
                         f"{self.structure_width_rel}")
        if self.structure_width_area:
            lines.append(f"structure width weighted by area (px): {self.structure_width_area}; relative "
                         f"{self.structure_width_area_rel}")
        if self.foreground_fraction.median > 0.5:
            lines.append("note: foreground covers more than half of most images; if the masks mark background "
                         "(as ISBI 2012 membranes do), fingerprint with --invert-masks and train with "
                         "--set data.invert_masks=true")
        if self.structure_width_rel and self.structure_width_rel.median * THIN_AT_SIDE < 2:
            w = self.structure_width_rel.median
            lines.append(f"note: thin structures: at {THIN_AT_SIDE} px (the default image_size) the median structure "
                         f"would be {w * THIN_AT_SIDE:.1f} px wide; resizing will erase much of it, so keep a larger "
                         "data.image_size or native resolution")
        if self.unreadable:
            lines.append(f"{len(self.unreadable)} pairs could not be read and were left out: "
                         + "; ".join(self.unreadable[:3]) + (" ..." if len(self.unreadable) > 3 else ""))
        return lines


def _fmt(v: float) -> str:
    return f"{v:.3g}" if abs(v) < 1000 else f"{v:.0f}"


def structure_widths(mask: np.ndarray) -> np.ndarray:
    """Local structure width (px) at each medial-axis pixel of a binary mask: ``2 * d - 1``.

    ``mask``: HxW, nonzero = foreground. The medial axis is approximated by the local maxima (3x3) of
    the Euclidean distance transform (scipy.ndimage.distance_transform_edt), where ``d`` is the distance
    to the nearest background pixel (1 on the border of the foreground). Returns a 1-D float array, empty
    for an empty mask.
    """
    fg = np.asarray(mask) > 0
    if not fg.any():
        return np.zeros(0)
    dist = ndimage.distance_transform_edt(np.pad(fg, 1))[1:-1, 1:-1]
    ridge = fg & (dist >= ndimage.maximum_filter(dist, size=3))
    return 2.0 * dist[ridge] - 1.0


@dataclass
class _ImageFigures:
    height: int
    width: int
    pixels: np.ndarray  # sampled pixels, N x C uint8
    fg_pixels: np.ndarray  # sampled foreground pixels, M x C
    values: np.ndarray | None  # sampled modality values (DICOM grey)
    fg_values: np.ndarray | None  # sampled modality values of foreground pixels
    labels: Counter
    foreground: float
    objects: int
    areas: list[int]
    width_px: float | None
    width_area_px: float | None
    modality: str | None
    spacing: tuple[float, float] | None


def _dicom_facts(pair: Pair) -> tuple[str | None, tuple[float, float] | None, np.ndarray | None]:
    from medseg.io.dicom import read_dataset, read_dicom_values

    ds = read_dataset(pair.image, pixels=False)
    spacing = None
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        value = getattr(ds, keyword, None)
        if value is not None and len(value) == 2:
            spacing = (float(value[0]), float(value[1]))
            break
    values = None
    if getattr(ds, "SamplesPerPixel", 1) == 1:
        values = np.asarray(read_dicom_values(pair.image, frame=pair.frame), dtype=np.float64)
    return str(getattr(ds, "Modality", "") or "OT"), spacing, values


def _label_image(pair: Pair, invert: bool) -> np.ndarray:
    """Raw label values (HxW ints) of a grey mask image; the binary mask for anything else."""
    binary, info = load_pair_mask(pair)
    if binary is None:
        raise DataError(info.message)
    if invert:
        return (1 - binary).astype(np.int64)
    if info.kind == "label-map" and Path(pair.mask).suffix.lower() in IMAGE_SUFFIXES:
        raw = np.asarray(open_image(pair.mask))
        if raw.ndim == 2:
            return raw.astype(np.int64)
    return binary.astype(np.int64)


def _weighted_median(values: np.ndarray, weights: np.ndarray) -> float:
    order = np.argsort(values, kind="stable")
    cum = np.cumsum(weights[order])
    return float(values[order][np.searchsorted(cum, cum[-1] / 2)])


def _sample(a: np.ndarray, rng: np.random.Generator, n: int = PIXELS_PER_IMAGE) -> np.ndarray:
    return a if len(a) <= n else a[rng.choice(len(a), n, replace=False)]


def _figures(pair: Pair, seed: int, invert: bool) -> _ImageFigures:
    rng = np.random.default_rng(seed)
    image = read_pair_image(pair)
    labels = _label_image(pair, invert)
    if labels.shape != image.shape[:2]:
        raise DataError(f"mask {pair.mask} is {labels.shape[1]}x{labels.shape[0]} but image {pair.image} is "
                        f"{image.shape[1]}x{image.shape[0]}")
    fg = labels > 0
    modality = spacing = values = fg_values = None
    if is_dicom(pair.image):
        modality, spacing, raw = _dicom_facts(pair)
        if raw is not None:
            values = _sample(raw.reshape(-1), rng)
            if raw.shape == fg.shape:
                fg_values = _sample(raw[fg], rng)
    flat = image.reshape(-1, image.shape[2])
    components, n_objects = ndimage.label(fg, structure=np.ones((3, 3), bool))
    areas = np.bincount(components.reshape(-1))[1:].tolist() if n_objects else []
    widths = structure_widths(fg)
    width_area = _weighted_median(widths, ((widths + 1) / 2) ** 2) if widths.size else None
    return _ImageFigures(image.shape[0], image.shape[1], _sample(flat, rng), _sample(flat[fg.reshape(-1)], rng),
                         values, fg_values, Counter(dict(zip(*np.unique(labels, return_counts=True), strict=True))),
                         float(fg.mean()), n_objects, areas, float(np.median(widths)) if widths.size else None,
                         width_area,
                         modality, spacing)


def _modality(figures: list[_ImageFigures]) -> tuple[str, int]:
    dicom = Counter(f.modality for f in figures if f.modality)
    pixels = np.concatenate([f.pixels for f in figures])
    colour = bool(np.mean(np.ptp(pixels.astype(np.int16), axis=1) > 2) > 0.01)
    if dicom:
        return dicom.most_common(1)[0][0], 3 if colour else 1
    return ("rgb" if colour else "grey"), 3 if colour else 1


def compute_fingerprint(pairs: list[Pair], *, max_images: int = 400, seed: int = 0, workers: int = 2,
                        invert_masks: bool = False, progress: bool = False) -> Fingerprint:
    """Fingerprint the labelled ``pairs`` (a seeded sample of ``max_images`` when there are more).

    ``invert_masks``: binary masks mark the background (``data.invert_masks``, e.g. ISBI 2012).

    Pairs that cannot be read are left out and listed in ``unreadable`` (one sentence each).
    Raises DataError when no pair can be read.
    """
    labelled = sorted((p for p in pairs if p.mask is not None), key=lambda p: (p.case_id, str(p.image)))
    chosen = sorted(random.Random(seed).sample(labelled, max_images), key=lambda p: (p.case_id, str(p.image))) \
        if len(labelled) > max_images else labelled
    figures: list[_ImageFigures] = []
    unreadable: list[str] = []

    def one(pair: Pair):
        try:  # the pixel sample of an image depends on the seed and the case, not on the order
            return _figures(pair, seed * 100_003 + zlib.crc32(pair.case_id.encode()), invert_masks)
        except DataError as err:
            return str(err)

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        results = pool.map(one, chosen)
        for result in progress_bar(results, total=len(chosen), desc="fingerprint", unit="img", enabled=progress):
            (unreadable.append if isinstance(result, str) else figures.append)(result)
    if not figures:
        raise DataError(f"none of the {len(chosen)} pairs could be read for the fingerprint"
                        + (f": {unreadable[0]}" if unreadable else ""))
    modality, channels = _modality(figures)
    pixels = np.concatenate([f.pixels for f in figures]).astype(np.float64)
    fg_pixels = np.concatenate([f.fg_pixels for f in figures]).astype(np.float64)
    values = [f.values for f in figures if f.values is not None]
    fg_values = [f.fg_values for f in figures if f.fg_values is not None and len(f.fg_values)]
    spacings = [f.spacing for f in figures if f.spacing]
    label_counts = sum((f.labels for f in figures), Counter())
    total = sum(label_counts.values())
    areas = [a for f in figures for a in f.areas]
    widths = [(f.width_px, f.width_px / max(f.height, f.width)) for f in figures if f.width_px is not None]
    widths_area = [(f.width_area_px, f.width_area_px / max(f.height, f.width)) for f in figures
                   if f.width_area_px is not None]
    n_channels = pixels.shape[1] if channels == 3 else 1
    return Fingerprint(
        n_pairs=len(labelled), n_sampled=len(chosen),
        height=Distribution.of(f.height for f in figures), width=Distribution.of(f.width for f in figures),
        aspect=Distribution.of(f.width / f.height for f in figures), channels=channels, modality=modality,
        spacing_mm=tuple(float(v) for v in np.median(np.array(spacings), axis=0)) if spacings else None,
        intensity=[ChannelStats.of(pixels[:, c]) for c in range(n_channels)],
        intensity_foreground=[ChannelStats.of(fg_pixels[:, c]) if len(fg_pixels) else None
                              for c in range(n_channels)],
        modality_values=ChannelStats.of(np.concatenate(values)) if values else None,
        classes={int(k): round(float(v) / total, 6) for k, v in sorted(label_counts.items())},
        foreground_fraction=Distribution.of(f.foreground for f in figures),
        objects_per_image=Distribution.of(f.objects for f in figures),
        object_area=Distribution.of(areas), structure_width=Distribution.of(w for w, _ in widths),
        structure_width_rel=Distribution.of(r for _, r in widths), unreadable=unreadable,
        modality_values_foreground=ChannelStats.of(np.concatenate(fg_values)) if fg_values else None,
        structure_width_area=Distribution.of(w for w, _ in widths_area),
        structure_width_area_rel=Distribution.of(r for _, r in widths_area))
