"""Discovery and checks on the real data sets in ../shared/data (skipped when it is absent)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from medseg.data.check import check_pairs
from medseg.data.layouts import find_pairs
from medseg.data.splits import assign_splits
from medseg.io.formats import read_image
from medseg.io.images import read_mask
from tests._paths import SHARED

DATA = SHARED / "data"

pytestmark = pytest.mark.realdata


def dataset(name: str) -> Path:
    path = DATA / name
    if not path.is_dir():
        pytest.skip(f"real data {path} is not available")
    return path


def test_isic2018_256_pairs_and_official_split():
    root = dataset("isic2018_256")
    index = find_pairs(root)
    assert len(index.pairs) == 2000 and index.problems == []
    assert "_segmentation" in index.layout and "split.csv" in index.layout
    first = index.pairs[0]
    assert first.image.name == f"{first.case_id}.jpg"
    assert first.mask.name == f"{first.case_id}_segmentation.png"
    splits = assign_splits(index.pairs, seed=123)  # the given split wins over fraction and seed
    assert (len(splits["train"]), len(splits["val"]), len(splits["test"])) == (1600, 400, 0)


def test_isic2018_256_check_is_clean():
    index = find_pairs(dataset("isic2018_256"))
    report = check_pairs(index)  # all 2000 pairs: about 1.5 s on 2 cores
    assert report.ok and report.n_warnings == 0, report.summary_lines()
    assert report.mask_kinds == {"binary-0-255": 2000} and len(report.good) == 2000
    image, mask = read_image(index.pairs[0].image), read_mask(index.pairs[0].mask)
    assert image.shape == (256, 256, 3) and mask.shape == (256, 256) and set(np.unique(mask)) <= {0, 1}


def test_drive_train_via_manifest(tmp_path):
    root = dataset("drive_train")
    rows = [f"{img},{root / 'masks' / (img.stem.split('_')[0] + '_manual1.gif')}"
            for img in sorted((root / "images").glob("*_training.tif"))]
    (tmp_path / "manifest.csv").write_text("image,mask\n" + "\n".join(rows) + "\n")
    index = find_pairs(tmp_path)
    assert len(index.pairs) == 20 and index.problems == [] and index.layout == "manifest manifest.csv"
    assert check_pairs(index).ok
    image, mask = read_image(index.pairs[0].image), read_mask(index.pairs[0].mask)
    assert image.shape == (584, 565, 3) and image.dtype == np.uint8
    assert mask.shape == (584, 565) and set(np.unique(mask)) == {0, 1}
    assert 0.03 < mask.mean() < 0.2  # thin vessels
    auto = find_pairs(root)  # the name rule finds the same pairs without a manifest
    assert [(p.image, p.mask) for p in auto.pairs] == [(p.image, p.mask) for p in index.pairs]


def test_isbi2012_same_names():
    index = find_pairs(dataset("isbi2012_membrane"))
    assert len(index.pairs) == 30 and index.problems == [] and "same names" in index.layout
    assert all(p.image.name == p.mask.name for p in index.pairs)
    report = check_pairs(index)
    assert report.ok and report.mask_kinds == {"binary-0-255": 30}
    assert read_image(index.pairs[0].image).shape == (512, 512, 3)
