"""Open every pair of a :class:`~medseg.data.pairs.DataIndex` and report what is wrong with it.

Fatal problems (the pair cannot be trained on): ``unreadable-image``, ``unreadable-mask`` (truncated,
corrupt or not an image), ``bad-mask`` (RGB colours, continuous grey), ``size-mismatch``, ``bad-roi``
(a region-of-interest mask unreadable, empty or of another size), plus the
index's own problems (files without a partner, duplicates). Warnings (the pair is still used):
``empty-mask`` (no foreground; normal for healthy cases), ``noisy-mask`` (JPEG-like noise,
binarised at half range), ``exif-rotated`` (a photo whose EXIF orientation turns it; read as shown)
and ``merged-masks`` (several mask files of one image, merged by union).
"""

from __future__ import annotations

import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from medseg.data.pairs import DataIndex, Pair, Problem
from medseg.data.readers import TargetSpec, load_pair_mask, pair_image_size, read_pair_target
from medseg.errors import DataError
from medseg.io.images import EXIF_ORIENTATIONS, IMAGE_SUFFIXES, MASK_KINDS, exif_orientation
from medseg.progress import progress_bar


@dataclass
class CheckReport:
    """The outcome of :func:`check_pairs`: usable pairs, every problem, and how masks are encoded."""

    index: DataIndex
    good: list[Pair]
    problems: list[Problem]
    mask_kinds: dict[str, int]
    foreground: list[float] = field(default_factory=list)  # share of foreground pixels per readable mask

    @property
    def n_fatal(self) -> int:
        return sum(p.fatal for p in self.problems)

    @property
    def n_warnings(self) -> int:
        return sum(not p.fatal for p in self.problems)

    @property
    def ok(self) -> bool:
        """True when nothing fatal was found (warnings allowed)."""
        return self.n_fatal == 0

    def summary_lines(self, max_problems: int | None = None) -> list[str]:
        """A human report: layout, counts, mask encodings, then the problems (all, or the first N)."""
        n = len(self.index.pairs)
        where = f" in {self.index.root}" if self.index.root is not None else ""
        n_roi = sum(p.roi is not None for p in self.index.pairs)
        lines = [f"found {n} pairs{where}; layout: {self.index.layout}"
                 + (f"; {n_roi} with a region of interest (field of view)" if n_roi else ""),
                 f"{len(self.good)} usable pairs; {self.n_fatal} errors, {self.n_warnings} warnings"]
        if self.mask_kinds:
            kinds = ", ".join(f"{count} {kind}" for kind, count in self.mask_kinds.items())
            lines.append(f"masks: {kinds}")
        if self.mask_kinds.get("label-map"):
            lines.append("label-map masks are read with every value above 0 as foreground")
        lines += self._split_and_foreground_lines()
        if self.index.ignored:
            lines.append("ignored folders (no image or mask used from them): "
                         + ", ".join(f"{_show(d, self.index.root)}/" for d in self.index.ignored))
        if self.problems:
            by_kind = Counter(p.kind for p in self.problems)
            counts = ", ".join(f"{count} {kind}" for kind, count in sorted(by_kind.items()))
            lines.append(f"problems: {counts}")
            ordered = sorted(self.problems, key=lambda p: not p.fatal)  # errors first, stable
            shown = ordered if max_problems is None else ordered[:max_problems]
            for p in shown:
                lines.append(f"{'error' if p.fatal else 'warning'}: {p.message}")
            if len(shown) < len(ordered):
                lines.append(f"... and {len(ordered) - max_problems} more")
        return lines

    def _split_and_foreground_lines(self) -> list[str]:
        lines = []
        splits = Counter(p.split or "unassigned" for p in self.good)
        if set(splits) != {"unassigned"}:
            lines.append("splits: " + ", ".join(f"{n} {s}" for s, n in sorted(splits.items())))
        else:
            lines.append("splits: none in the data; training makes a seeded one (data.val_fraction)")
        if self.foreground:
            fg = sorted(self.foreground)
            mean = sum(fg) / len(fg)
            lines.append(f"foreground: {mean:.1%} of the pixels on average (per mask {fg[0]:.1%} .. {fg[-1]:.1%},"
                         f" median {fg[len(fg) // 2]:.1%})")
            if mean > 0.5:
                lines.append("more than half of the pixels are foreground: if the structure to segment is stored "
                             "as 0 (ISBI membranes), train with --set data.invert_masks=true")
        return lines


def _show(path: Path, root: Path | None) -> str:
    if root is not None:
        try:
            return str(path.relative_to(root))
        except ValueError:
            pass
    return str(path)


def _size_mismatch(pair: Pair, shape: tuple[int, int], size, subject: str, root) -> list[Problem]:
    """A ``size-mismatch`` problem when a mask of ``shape`` (H, W) is not its image's ``size`` (W, H)."""
    if size is None or shape == (size[1], size[0]):
        return []
    return [Problem(pair.case_id, pair.mask, "size-mismatch", f"{subject} is {shape[1]}x{shape[0]} but its image "
                    f"({_show(pair.image, root)}) is {size[0]}x{size[1]}; image and mask must have the same size")]


def _check_labels(pair: Pair, target: TargetSpec, subject: str, size, root) -> tuple[list[Problem], str | None]:
    """Multi-class masks: label maps 0..K-1, or colours of ``target.palette``."""
    try:
        labels = read_pair_target(pair, target)
    except DataError as err:
        return [Problem(pair.case_id, pair.mask, "bad-mask", f"{subject}: {err}")], None
    problems = _size_mismatch(pair, labels.shape, size, subject, root)
    if not labels.any():
        problems.append(Problem(pair.case_id, pair.mask, "empty-mask",
                                f"{subject} is empty (background only); it is used as a negative example",
                                fatal=False))
    return problems, "palette" if target.palette else "label-map"


def _orientation_notes(pair: Pair, root: Path | None) -> list[Problem]:
    """Warnings for photos whose EXIF Orientation turns them: they are read as shown."""
    notes = []
    for path in (pair.image, pair.mask, *pair.extra_masks):
        if path is None or Path(path).suffix.lower() not in IMAGE_SUFFIXES:
            continue
        turn = exif_orientation(path)
        if turn != 1:
            notes.append(Problem(pair.case_id, path, "exif-rotated",
                                 f"{_show(path, root)} carries EXIF orientation {turn} ({EXIF_ORIENTATIONS[turn]}); "
                                 "it is read as a viewer shows it", fatal=False))
    return notes


def _check_roi(pair: Pair, size, root) -> list[Problem]:
    """A region-of-interest mask must be readable, binary, non-empty and the image's size."""
    from medseg.io.images import load_mask

    subject = f"region of interest for {pair.case_id} ({_show(pair.roi, root)})"
    try:
        roi, info = load_mask(pair.roi, subject=subject)
    except Exception as err:  # an odd file must not stop the check of the others
        return [Problem(pair.case_id, pair.roi, "bad-roi", f"{subject} could not be read ({err})")]
    if roi is None:
        return [Problem(pair.case_id, pair.roi, "bad-roi", info.message)]
    if size is not None and roi.shape != (size[1], size[0]):
        h, w = roi.shape
        return [Problem(pair.case_id, pair.roi, "bad-roi", f"{subject} is {w}x{h} but its image is "
                        f"{size[0]}x{size[1]}; they must have the same size")]
    if info.empty:
        return [Problem(pair.case_id, pair.roi, "bad-roi", f"{subject} is empty: nothing would be scored")]
    return []


def _check_pair(pair: Pair, root: Path | None, target: TargetSpec | None = None
                ) -> tuple[list[Problem], str | None, float | None]:
    """Problems of one pair (its region of interest included), its mask kind (None when unreadable)
    and its foreground fraction."""
    problems, kind, fraction = _check_image_and_mask(pair, root, target)
    if pair.roi is not None:
        problems += _check_roi(pair, None if any(p.kind == "unreadable-image" for p in problems)
                               else pair_image_size(pair), root)
    return problems, kind, fraction


def _check_image_and_mask(pair: Pair, root: Path | None, target: TargetSpec | None = None
                          ) -> tuple[list[Problem], str | None, float | None]:
    problems: list[Problem] = []
    size = None
    try:
        size = pair_image_size(pair)
    except DataError as err:
        problems.append(Problem(pair.case_id, pair.image, "unreadable-image", str(err)))
    except Exception as err:  # an odd file must not stop the check of the others
        problems.append(Problem(pair.case_id, pair.image, "unreadable-image",
                                f"image {pair.image} could not be read ({type(err).__name__}: {err})"))
    problems += _orientation_notes(pair, root)
    if pair.mask is None:
        return problems, None, None
    shown = _show(pair.mask, root)
    subject = f"mask for {pair.case_id} ({shown})"
    if target is not None and target.classes > 1:
        label_problems, kind = _check_labels(pair, target, subject, size, root)
        return problems + label_problems, kind, None
    try:
        binary, info = load_pair_mask(pair, subject)
    except DataError as err:
        problems.append(Problem(pair.case_id, pair.mask, "unreadable-mask", str(err)))
        return problems, None, None
    except Exception as err:  # an odd file must not stop the check of the others
        problems.append(Problem(pair.case_id, pair.mask, "unreadable-mask",
                                f"{subject} could not be read ({type(err).__name__}: {err})"))
        return problems, None, None
    if binary is None:
        problems.append(Problem(pair.case_id, pair.mask, "bad-mask", info.message))
        return problems, info.kind, None
    problems += _size_mismatch(pair, binary.shape, size, subject, root)
    if info.noisy:
        problems.append(Problem(pair.case_id, pair.mask, "noisy-mask", info.message, fatal=False))
    if pair.extra_masks:
        names = ", ".join(_show(p, root) for p in (pair.mask, *pair.extra_masks))
        problems.append(Problem(pair.case_id, pair.mask, "merged-masks",
                                f"{subject}: {1 + len(pair.extra_masks)} mask files ({names}) are merged into one "
                                "(union of their foreground)", fatal=False))
    if info.empty:
        problems.append(Problem(pair.case_id, pair.mask, "empty-mask",
                                f"{subject} is empty (no foreground pixel); it is used as a negative example",
                                fatal=False))
    return problems, info.kind, float(binary.mean())


def check_pairs(index: DataIndex, *, progress: bool = False, workers: int | None = None,
                target: TargetSpec | None = None) -> CheckReport:
    """Decode every image and mask of ``index`` and collect problems (see the module docstring).

    ``good`` keeps the index's order and holds the pairs without a fatal problem. ``target`` with more
    than one class checks masks as label maps (or palette colours) instead of binary masks.
    """
    workers = workers or min(8, (os.cpu_count() or 1) + 2)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = pool.map(lambda p: _check_pair(p, index.root, target), index.pairs)
        results = list(progress_bar(results, total=len(index.pairs), desc="checking", unit="pair",
                                      enabled=progress, leave=False))
    problems = list(index.problems)
    kinds: Counter[str] = Counter()
    good: list[Pair] = []
    foreground: list[float] = []
    for pair, (pair_problems, kind, fraction) in zip(index.pairs, results, strict=True):
        problems.extend(pair_problems)
        if fraction is not None:
            foreground.append(fraction)
        if kind is not None:
            kinds[kind] += 1
        if not any(p.fatal for p in pair_problems):
            good.append(pair)
    mask_kinds = {k: kinds[k] for k in MASK_KINDS if kinds[k]}
    return CheckReport(index, good, problems, mask_kinds, foreground)
