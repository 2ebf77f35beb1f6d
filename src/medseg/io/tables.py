"""Report files: one CSV line per image and a summary JSON, both written atomically, and the CSV read back.

Used by ``medseg evaluate``, ``medseg compare`` and the cross-validation summary. JSON has no NaN or
infinity: they are written as ``null`` (RFC 8259 allows neither), numpy scalars as plain numbers.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from medseg.io.files import write_text_atomic


def write_per_image_csv(path: str | Path, rows: Iterable[Mapping[str, Any]]) -> Path:
    """Write one CSV line per image (columns of the first row, then any new ones); atomic."""
    rows = list(rows)
    columns: list[str] = []
    for row in rows:
        columns.extend(key for key in row if key not in columns)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    path = Path(path)
    write_text_atomic(path, buf.getvalue())
    return path


def read_per_image_csv(path: str | Path) -> list[dict[str, Any]]:
    """The rows of a :func:`write_per_image_csv` file: ``case_id`` as text, every other column a float
    (an empty cell is NaN)."""
    with Path(path).open(newline="", encoding="utf-8") as f:
        return [{k: (v if k == "case_id" else float(v) if v not in ("", None) else math.nan) for k, v in r.items()}
                for r in csv.DictReader(f)]


def json_safe(value: Any) -> Any:
    """``value`` with NaN/inf as None, numpy scalars as Python numbers, tuples as lists (JSON-ready)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, np.generic):
        return json_safe(value.item())
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


def write_summary_json(path: str | Path, summary: Mapping[str, Any]) -> Path:
    """Write a summary dict as indented JSON (NaN and inf become null, so it is valid JSON); atomic."""
    path = Path(path)
    write_text_atomic(path, json.dumps(json_safe(summary), indent=2) + "\n")
    return path
