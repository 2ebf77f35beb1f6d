"""What discovery finds: :class:`Pair` (an image and its mask), :class:`Problem`, :class:`DataIndex`.

The types every ``medseg.data`` module shares; this module imports no other medseg module, so
``layouts``, ``dicom_layout``, ``splits``, ``readers`` and the rest all import it one way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

#: Mask stem = image stem + one of these ("" = same stem).
MASK_SUFFIXES = ("", "_segmentation", "_Segmentation", "_mask", "_masks", "_label", "_labels", "_seg",
                 "_gt", "_manual1")

@dataclass(frozen=True)
class Pair:
    """One image and its mask (``mask`` None for unlabelled images); ``split`` when known.

    ``frame`` is the 1-based frame number for a frame of a multi-frame DICOM file (else None).
    ``extra_masks`` are further masks of the same image (``<stem>_mask_1.png``, ``<stem>_mask_2.png``
    beside ``<stem>_mask.png``); readers merge them with ``mask`` (union, see
    :func:`medseg.data.readers.load_pair_mask`).
    ``roi`` is an optional region-of-interest mask (DRIVE field of view): pixel metrics count only
    inside it. ``attrs`` holds a manifest's other columns as (name, value) pairs (e.g. patient id,
    used to group cross-validation folds).
    """

    case_id: str
    image: Path
    mask: Path | None
    split: str | None = None
    frame: int | None = None
    extra_masks: tuple[Path, ...] = ()  # more mask files of the same image (BUSI ``<stem>_mask_1``), merged
    roi: Path | None = None
    attrs: tuple[tuple[str, str], ...] = ()

    def attr(self, name: str) -> str | None:
        """The value of manifest column ``name`` for this pair (None when absent or blank)."""
        return next((v for k, v in self.attrs if k == name and v), None)


@dataclass(frozen=True)
class Problem:
    """Something wrong with one case or file; ``fatal`` problems exclude the case from training."""

    case_id: str
    path: Path
    kind: str
    message: str
    fatal: bool = True


@dataclass
class DataIndex:
    """What :func:`find_pairs` found: complete pairs (sorted by case id) and the problems on the way."""

    root: Path | None
    layout: str
    pairs: list[Pair]
    problems: list[Problem] = field(default_factory=list)
    ignored: list[Path] = field(default_factory=list)  # sub-folders of root that hold no used file
