"""medseg.data.check: every broken file in a messy folder is reported once, with its kind and name."""

from __future__ import annotations

from pathlib import Path

import pytest

from medseg.data import check
from medseg.data.check import check_pairs
from medseg.data.layouts import find_pairs
from tests._factories import isic_folder, messy_folder


@pytest.fixture(scope="module")
def messy_report(tmp_path_factory):
    root = messy_folder(tmp_path_factory.mktemp("messy"))
    return check_pairs(find_pairs(root))


EXPECTED = {
    # case id: (kind, fatal, file named in the message)
    "truncated": ("unreadable-image", True, "truncated.jpg"),
    "notimage": ("unreadable-image", True, "notimage.png"),
    "size": ("size-mismatch", True, "size_segmentation.png"),
    "colour": ("bad-mask", True, "colour_segmentation.png"),
    "grey": ("bad-mask", True, "grey_segmentation.png"),
    "badmask": ("unreadable-mask", True, "badmask_segmentation.png"),
    "lonely": ("missing-mask", True, "lonely.jpg"),
    "orphan_segmentation": ("missing-image", True, "orphan_segmentation.png"),
    "empty": ("empty-mask", False, "empty_segmentation.png"),
    "noisy": ("noisy-mask", False, "noisy_segmentation.png"),
}


def test_good_pairs_are_exactly_the_usable_ones(messy_report):
    good = [p.case_id for p in messy_report.good]
    assert good == ["empty", "good1", "good2", "noisy", "rgbgrey", "zero_one"]


def test_each_problem_has_the_right_kind_and_names_the_file(messy_report):
    got = {p.case_id: (p.kind, p.fatal) for p in messy_report.problems}
    assert got == {case: (kind, fatal) for case, (kind, fatal, _) in EXPECTED.items()}
    for p in messy_report.problems:
        assert EXPECTED[p.case_id][2] in p.message, p.message


def test_problem_messages_say_what_is_wrong(messy_report):
    msg = {p.case_id: p.message for p in messy_report.problems}
    assert "RGB with 3 distinct colours" in msg["colour"]
    assert "mask for colour (masks/colour_segmentation.png)" in msg["colour"]
    assert "grey levels" in msg["grey"]
    assert "truncated" in msg["truncated"]
    assert "20x20" in msg["size"] and "24x16" in msg["size"] and "size.jpg" in msg["size"]
    assert "binarised at 128" in msg["noisy"]
    assert "empty" in msg["empty"]


def test_counts_and_mask_kinds(messy_report):
    assert messy_report.n_fatal == 8 and messy_report.n_warnings == 2 and not messy_report.ok
    assert messy_report.mask_kinds == {"binary-0-255": 5, "binary-0-1": 2, "jpeg-noisy": 1, "rgb-grey": 1,
                                       "rgb-colour": 1, "continuous": 1}


def test_summary_lines(messy_report):
    lines = messy_report.summary_lines(max_problems=3)
    text = "\n".join(lines)
    assert "found 12 pairs" in lines[0] and "_segmentation" in lines[0]
    assert "6 usable pairs; 8 errors, 2 warnings" in text
    assert "1 jpeg-noisy" in text and "1 size-mismatch" in text
    assert sum(line.startswith("error: ") for line in lines) == 3
    assert lines[-1] == "... and 7 more"


def test_clean_folder_is_ok_and_progress_changes_nothing(tmp_path):
    isic_folder(tmp_path, ["a", "b", "c"])
    index = find_pairs(tmp_path)
    report = check_pairs(index, progress=True, workers=1)
    assert report.ok and report.problems == [] and report.good == index.pairs
    assert report.mask_kinds == {"binary-0-255": 3}
    assert check_pairs(index, workers=3).good == report.good


def test_an_unexpected_reader_error_is_reported_not_raised(tmp_path, monkeypatch):
    isic_folder(tmp_path, ["a", "b"])

    def flaky(pair, subject=None):
        if "b_" in Path(pair.mask).name:
            raise RuntimeError("decoder exploded")
        return real(pair, subject)

    real = check.load_pair_mask
    monkeypatch.setattr(check, "load_pair_mask", flaky)
    report = check_pairs(find_pairs(tmp_path))
    assert [p.case_id for p in report.good] == ["a"]
    (problem,) = report.problems
    assert problem.kind == "unreadable-mask" and "RuntimeError: decoder exploded" in problem.message
    assert "b_segmentation.png" in problem.message
