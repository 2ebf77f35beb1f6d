"""Train/val/test splits: respect the ones the data brings, otherwise draw them reproducibly.

A random split ranks cases by a hash of ``seed`` and the case id, so it depends only on the seed and
the set of case ids (not on file order, platform or library versions), and adding cases moves few
existing ones. Split files are CSVs with the columns ``image_id,split`` (ISIC's ``split.csv``).
"""

from __future__ import annotations

import csv
import hashlib
import io
from dataclasses import replace
from pathlib import Path

from medseg.data.pairs import Pair
from medseg.errors import ConfigError, DataError
from medseg.io.files import write_text_atomic

SPLITS = ("train", "val", "test")
_ALIASES = {"training": "train", "valid": "val", "validation": "val", "testing": "test"}
_ID_COLUMNS = ("image_id", "case_id", "id")


def normalise_split(value: str, where: str) -> str | None:
    """``value`` as one of SPLITS (case-insensitive; "validation" -> "val"), None when blank.

    ``where`` names the source in the error, e.g. "manifest.csv row 7".
    """
    name = value.strip().lower()
    if not name:
        return None
    name = _ALIASES.get(name, name)
    if name not in SPLITS:
        raise DataError(f"{where}: unknown split '{value}'; expected one of {', '.join(SPLITS)}")
    return name


def assign_splits(pairs: list[Pair], *, val_fraction: float = 0.2, test_fraction: float = 0.0,
                  seed: int = 0) -> dict[str, list[Pair]]:
    """Group pairs by split: their own ``split`` if every pair has one, else a seeded random split.

    Returns {"train": [...], "val": [...], "test": [...]} (each sorted by case id, ``split`` set).
    A random split puts at least one pair in val when ``val_fraction`` > 0 and there are two pairs
    or more. DataError when only some pairs have a split, or a split name is unknown.
    """
    if not 0 <= val_fraction < 1 or not 0 <= test_fraction < 1 or val_fraction + test_fraction >= 1:
        raise ConfigError(f"val_fraction ({val_fraction}) and test_fraction ({test_fraction}) must each be "
                          "in [0, 1) and leave some data for training")
    pairs = sorted(pairs, key=lambda p: (p.case_id, str(p.image)))
    if not pairs:
        raise DataError("no image/mask pairs to split")
    out: dict[str, list[Pair]] = {name: [] for name in SPLITS}
    given = [p for p in pairs if p.split is not None]
    if given:
        if len(given) < len(pairs):
            lacking = [p.case_id for p in pairs if p.split is None]
            examples = ", ".join(lacking[:3]) + (", ..." if len(lacking) > 3 else "")
            raise DataError(f"{len(lacking)} of {len(pairs)} pairs have no split ({examples}); give every "
                            "pair a split (manifest split column or split.csv) or none")
        for p in pairs:
            name = normalise_split(p.split, f"case {p.case_id}")
            out[name].append(replace(p, split=name))
        return out
    n = len(pairs)
    n_test = min(round(n * test_fraction), n - 1)
    n_val = round(n * val_fraction)
    if val_fraction > 0 and n >= 2:
        n_val = max(1, n_val)
    n_val = min(n_val, n - 1 - n_test) if n > n_test + 1 else 0
    ranked = sorted(pairs, key=lambda p: (hashlib.sha256(f"{seed}:{p.case_id}".encode()).hexdigest(), p.case_id,
                                          str(p.image)))  # the module docstring's seeded hash rank
    chosen = {"test": ranked[:n_test], "val": ranked[n_test:n_test + n_val], "train": ranked[n_test + n_val:]}
    for name, group in chosen.items():
        out[name] = sorted((replace(p, split=name) for p in group), key=lambda p: (p.case_id, str(p.image)))
    return out


def save_splits(path: str | Path, splits: dict[str, list[Pair]]) -> None:
    """Write ``image_id,split`` rows (train, val, test; by case id) to ``path`` atomically."""
    unknown = set(splits) - set(SPLITS)
    if unknown:
        raise DataError(f"cannot save splits to {path}: unknown split names {', '.join(sorted(unknown))}")
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["image_id", "split"])
    for name in SPLITS:
        for p in sorted(splits.get(name, []), key=lambda p: p.case_id):
            writer.writerow([p.case_id, name])
    write_text_atomic(path, buf.getvalue())


def read_csv_table(path: Path, what: str) -> tuple[list[str], list[dict[str, str]]]:
    """(header, rows) of a CSV file (UTF-8, a BOM allowed): column names stripped and lower-cased, cells
    stripped. Raises DataError naming ``what`` and the file when it is missing or cannot be read."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            rows = [{(k or "").strip().lower(): (v or "").strip() for k, v in raw.items()} for raw in reader]
            return [(h or "").strip().lower() for h in reader.fieldnames or []], rows
    except FileNotFoundError:
        raise DataError(f"{what} {path} does not exist") from None
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise DataError(f"{what} {path} could not be read ({err})") from None


def load_splits(path: str | Path) -> dict[str, str]:
    """{case id: split} from a CSV with columns ``image_id,split`` (``case_id`` or ``id`` also accepted)."""
    path = Path(path)
    header, rows = read_csv_table(path, "split file")
    id_col = next((c for c in _ID_COLUMNS if c in header), None)
    if id_col is None or "split" not in header:
        columns = ", ".join(header) or "(none)"
        raise DataError(f"split file {path} has columns {columns}; expected 'image_id,split'")
    mapping: dict[str, str] = {}
    for line, row in enumerate(rows, start=2):
        case_id, where = row[id_col], f"split file {path.name} row {line}"
        if not case_id:
            continue
        name = normalise_split(row["split"], where)
        if name is None:
            raise DataError(f"{where}: case {case_id} has no split")
        if mapping.setdefault(case_id, name) != name:
            raise DataError(f"{where}: case {case_id} is listed in both {mapping[case_id]} and {name}")
    return mapping


def apply_splits(pairs: list[Pair], mapping: dict[str, str]) -> list[Pair]:
    """Pairs with ``split`` set from ``mapping`` (case id -> split); DataError for pairs it lacks."""
    lacking = [p.case_id for p in pairs if p.case_id not in mapping]
    if lacking:
        examples = ", ".join(lacking[:3]) + (", ..." if len(lacking) > 3 else "")
        raise DataError(f"{len(lacking)} of {len(pairs)} pairs are missing from the split file ({examples}); "
                        "delete the split file to draw a new split, or add them")
    return [replace(p, split=normalise_split(mapping[p.case_id], f"split of case {p.case_id}"))
            for p in pairs]
