"""From a data argument to checked, split pairs: the step shared by train and evaluate."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from medseg.data.check import CheckReport, check_pairs
from medseg.data.pairs import Pair
from medseg.data.readers import TargetSpec
from medseg.data.source import DataSource
from medseg.data.splits import SPLITS, apply_splits, assign_splits, load_splits, save_splits
from medseg.errors import DataError

log = logging.getLogger(__name__)

SPLITS_FILE = "splits.csv"


@dataclass
class PreparedData:
    report: CheckReport
    splits: dict[str, list[Pair]]
    source: str  # where the split came from


def discover_and_check(data: DataSource | str | Path | None, *, progress: bool = False,
                       target: TargetSpec | None = None) -> CheckReport:
    """Find the pairs of ``data`` (a :class:`DataSource`, or a data folder), open every file, report problems."""
    source = DataSource.of(data)
    index = source.find()
    report = check_pairs(index, progress=progress, target=target)
    for problem in report.problems:
        (log.warning if problem.fatal else log.info)("%s", problem.message)
    if not report.good:
        raise DataError(f"no usable image/mask pairs in {source}: all {len(index.pairs)} pairs have "
                        "problems (run `medseg data check` for the list)")
    return report


def split_for_training(report: CheckReport, run_dir: Path, *, val_fraction: float, test_fraction: float,
                       seed: int, reuse: bool, save: bool = True,
                       assignment: dict[str, str] | None = None) -> PreparedData:
    """Use ``assignment`` (case id -> split; a cross-validation fold, cases it lacks are left out), else
    the data's own split, else the run's saved one (on resume), else a new seeded one. The split is saved
    unless ``save`` is False (in multi-process runs only rank 0 writes)."""
    pairs = report.good
    saved = run_dir / SPLITS_FILE
    if assignment is not None:
        chosen = [p for p in pairs if p.case_id in assignment]
        splits, source = _group(apply_splits(chosen, assignment)), "the cross-validation fold"
    elif any(p.split for p in pairs):
        splits, source = assign_splits(pairs), "the data's split column / split.csv"
    elif reuse and saved.is_file():
        splits, source = _group(apply_splits(pairs, load_splits(saved))), f"{saved}"
    else:
        splits = assign_splits(pairs, val_fraction=val_fraction, test_fraction=test_fraction, seed=seed)
        source = f"a seeded split (seed {seed})"
    if save:
        save_splits(saved, splits)
    if not splits.get("train"):
        raise DataError(f"the split of {len(pairs)} pairs leaves no training images")
    if not splits.get("val"):
        raise DataError("the split leaves no validation images; lower data.test_fraction or add data")
    return PreparedData(report, splits, source)


def _group(pairs: list[Pair]) -> dict[str, list[Pair]]:
    out: dict[str, list[Pair]] = {s: [] for s in SPLITS}
    for p in pairs:
        out.setdefault(p.split or "train", []).append(p)
    return out


def unusable_in_split(report: CheckReport, split: str, run_dir: Path | None) -> list[str]:
    """Case ids of ``split`` (as :func:`pairs_for_split` assigns it) that the check left out: an image or
    mask that cannot be read; ``report.problems`` say why."""
    good = {p.case_id for p in report.good}
    bad = [p for p in report.index.pairs if p.case_id not in good]
    if split != "all" and bad:
        if any(p.split for p in report.index.pairs):
            bad = [p for p in bad if p.split == split]
        else:
            saved = run_dir / SPLITS_FILE if run_dir else None
            mapping = load_splits(saved) if saved is not None and saved.is_file() else {}
            bad = [p for p in bad if mapping.get(p.case_id) == split]
    return sorted(p.case_id for p in bad)


def pairs_for_split(report: CheckReport, split: str, run_dir: Path | None) -> list[Pair]:
    """Pairs of ``split`` (train/val/test/all) using the data's split, else the run's saved split."""
    pairs = report.good
    if split == "all":
        return pairs
    if not any(p.split for p in pairs):
        saved = run_dir / SPLITS_FILE if run_dir else None
        if saved is None or not saved.is_file():
            raise DataError(f"the data has no split and no {SPLITS_FILE} was found in the run; use --split all")
        mapping = load_splits(saved)
        known = [p for p in pairs if p.case_id in mapping]
        if not known:
            raise DataError(f"none of the images is listed in {saved}: is this the data the run was trained on? "
                            "Use --split all to evaluate every image")
        pairs = apply_splits(known, mapping)
    chosen = [p for p in pairs if p.split == split]
    if not chosen:
        raise DataError(f"no images in split {split!r}; splits present: "
                        f"{sorted({p.split for p in pairs if p.split})}")
    return chosen
