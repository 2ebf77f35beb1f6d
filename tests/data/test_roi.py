"""Regions of interest: DRIVE-style field-of-view files are found, never taken for labels, and bound the
pixel metrics."""

from __future__ import annotations

import numpy as np
import pytest

from medseg.data.check import check_pairs
from medseg.data.layouts import find_pairs
from tests._factories import disc, rgb, save

SIZE = (40, 48)


def fov(size=SIZE):
    return disc(size, 255, radius=0.45)


def drive_like(root, layout: str):
    """Two DRIVE cases in one of three layouts: fov_masks/ folder, official mask/ + 1st_manual/, or mixed."""
    labels = {"fov_folder": "masks", "official": "1st_manual", "mixed": "masks"}[layout]
    rois = {"fov_folder": "fov_masks", "official": "mask", "mixed": labels}[layout]
    for i in (21, 22):
        save(root / "images" / f"{i}_training.tif", rgb(i, SIZE))
        save(root / labels / f"{i}_manual1.gif", disc(SIZE, 255, radius=0.2))
        save(root / rois / f"{i}_training_mask.gif", fov())
    return root


@pytest.mark.parametrize("layout", ["fov_folder", "official", "mixed"])
def test_fov_files_are_regions_of_interest_not_labels(tmp_path, layout):
    index = find_pairs(drive_like(tmp_path, layout))
    assert [p.case_id for p in index.pairs] == ["21_training", "22_training"]
    for p in index.pairs:
        assert p.mask.name.endswith("_manual1.gif")
        assert p.roi is not None and p.roi.name == f"{p.case_id}_mask.gif"
    assert not index.problems
    report = check_pairs(index)
    assert report.ok
    assert "with a region of interest" in report.summary_lines()[0]


def test_lone_mask_suffix_files_stay_labels(tmp_path):
    for i in range(2):
        save(tmp_path / "images" / f"ISIC_{i}.jpg", rgb(i, SIZE))
        save(tmp_path / "masks" / f"ISIC_{i}_mask.png", disc(SIZE))
    index = find_pairs(tmp_path)
    assert [p.mask.name for p in index.pairs] == ["ISIC_0_mask.png", "ISIC_1_mask.png"]
    assert all(p.roi is None for p in index.pairs)


def test_manifest_roi_column_and_bad_roi(tmp_path):
    save(tmp_path / "a.png", rgb(1, SIZE))
    save(tmp_path / "a_gt.png", disc(SIZE))
    save(tmp_path / "a_fov.png", fov())
    save(tmp_path / "b.png", rgb(2, SIZE))
    save(tmp_path / "b_gt.png", disc(SIZE))
    save(tmp_path / "b_fov.png", np.zeros(SIZE[::-1], np.uint8))  # empty: nothing would be scored
    (tmp_path / "manifest.csv").write_text("image,mask,roi,patient\na.png,a_gt.png,a_fov.png,P1\n"
                                           "b.png,b_gt.png,b_fov.png,P1\n")
    index = find_pairs(tmp_path)
    assert index.pairs[0].roi.name == "a_fov.png" and index.pairs[0].attr("patient") == "P1"
    report = check_pairs(index)
    bad = [p for p in report.problems if p.kind == "bad-roi"]
    assert len(bad) == 1 and "b_fov.png" in bad[0].message and "empty" in bad[0].message
    assert [p.case_id for p in report.good] == ["a"]


def test_pixel_metrics_count_only_inside_the_roi(tmp_path):
    from medseg.evaluation.evaluate import score_image
    from medseg.metrics import MetricAccumulator

    truth = np.zeros((10, 10), bool)
    truth[4:6, 4:6] = True
    pred = truth.copy()
    pred[0, :] = True  # false positives, outside the field of view
    roi = np.zeros_like(truth)
    roi[2:8, 2:8] = True
    acc = MetricAccumulator(("hd95", "assd", "nsd"))
    from medseg.evaluation.evaluate import surface_extra

    inside = score_image(acc, "x", pred, truth, roi, multiclass=False, extra=surface_extra(None))
    assert inside["dice"] == 1.0 and inside["specificity"] == 1.0 and inside["hd95"] == 0.0
    assert inside["accuracy"] == 1.0
    outside = score_image(acc, "y", pred, truth, None, multiclass=False, extra=surface_extra(None))
    assert outside["dice"] < 1.0 and outside["specificity"] < 1.0 and outside["hd95"] > 0


def test_drive_fov_masks_in_shared_data(shared_data):
    index = find_pairs(shared_data / "drive_train")
    assert len(index.pairs) == 20
    assert all(p.roi is not None and p.roi.parent.name == "fov_masks" for p in index.pairs)
    assert all("_manual1" in p.mask.name for p in index.pairs)
