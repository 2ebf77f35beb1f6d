"""Report files: one CSV line per image and a summary JSON, both written atomically.

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
