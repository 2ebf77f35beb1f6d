"""`evaluate` and post-processing tuning count the images they could not read in their summary JSON."""

from __future__ import annotations

import csv
import json
import shutil

import medseg
from medseg.inference.postprocess_tuning import tune_postprocess
from tests._factories import truncated_jpeg


def test_unreadable_images_are_counted_and_named_in_both_summaries(tiny_dataset, tiny_run, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(tiny_dataset, data)
    with open(data / "split.csv") as f:
        val = sorted(r["image_id"] for r in csv.DictReader(f) if r["split"] == "val")
    truncated_jpeg(data / "images" / f"{val[0]}.jpg", size=(96, 96))  # cannot be decoded
    summary = medseg.evaluate(tiny_run, data, split="val", out=tmp_path / "eval", progress=False)
    assert summary["n_failed"] == 1 and summary["failed"] == [val[0]] and summary["n_images"] == len(val) - 1
    assert json.loads((tmp_path / "eval" / "summary.json").read_text())["failed"] == [val[0]]
    tuned = tune_postprocess(tiny_run, data, progress=False, store=False)
    assert tuned["n_failed"] == 1 and tuned["failed"] == [val[0]] and tuned["n_images"] == len(val) - 1
    whole = medseg.evaluate(tiny_run, tiny_dataset, split="val", out=tmp_path / "eval2", progress=False)
    assert whole["n_failed"] == 0 and whole["failed"] == []
