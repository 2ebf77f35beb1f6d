"""Post-processing on hand-made masks, and the greedy tuning that keeps only what improves Dice."""

from __future__ import annotations

import numpy as np
import pytest

from medseg.config import build_config
from medseg.inference.postprocess import Postprocess, fill_holes, largest_component, remove_small_objects
from medseg.inference.postprocess_tuning import search
from medseg.metrics import mask_dice as dice


def blobs() -> np.ndarray:
    """20x20 mask: a 5x6 block (30 px), a 2x2 block (4 px) and a single pixel."""
    m = np.zeros((20, 20), bool)
    m[2:7, 2:8] = True
    m[12:14, 12:14] = True
    m[18, 1] = True
    return m


def test_largest_component_keeps_the_biggest_object():
    out = largest_component(blobs())
    assert out.sum() == 30 and out[2:7, 2:8].all()
    empty = np.zeros((5, 5), bool)
    assert not largest_component(empty).any()
    single = np.zeros((5, 5), bool)
    single[1:3, 1:3] = True
    np.testing.assert_array_equal(largest_component(single), single)


def test_diagonal_pixels_are_one_object():
    m = np.eye(6, dtype=bool)  # 8-connected: one object of 6 pixels
    m[0, 5] = True
    assert largest_component(m).sum() == 6
    assert remove_small_objects(m, 2).sum() == 6


def test_remove_small_objects_by_pixels_and_by_fraction():
    m = blobs()
    assert remove_small_objects(m, 2).sum() == 34  # only the single pixel goes
    assert remove_small_objects(m, 5).sum() == 30
    assert remove_small_objects(m, 1).sum() == 35  # 1 = nothing to remove
    pp = Postprocess(threshold=0.5, min_object_fraction=5 / 400)  # 5 of 400 pixels
    assert pp(m.astype(np.float32)).sum() == 30


def test_fill_holes_fills_enclosed_background_only():
    ring = np.zeros((9, 9), bool)
    ring[1:8, 1:8] = True
    ring[3:6, 3:6] = False  # enclosed hole
    filled = fill_holes(ring)
    assert filled[1:8, 1:8].all() and filled.sum() == 49
    cup = ring.copy()
    cup[3:6, 5:9] = False  # the hole now opens to the right border
    np.testing.assert_array_equal(fill_holes(cup), cup)
    diagonal_gap = np.ones((5, 5), bool)
    diagonal_gap[2, 2] = False  # a 1-pixel hole is filled
    assert fill_holes(diagonal_gap).all()
    assert not fill_holes(np.zeros((4, 4), bool)).any()


def test_postprocess_order_and_threshold_from_config():
    cfg = build_config(overrides=["infer.threshold=0.3", "infer.largest_component=true", "infer.fill_holes=true"])
    pp = Postprocess.from_config(cfg.infer)
    proba = np.zeros((12, 12), np.float32)
    proba[1:9, 1:9] = 0.4  # above 0.3
    proba[4:6, 4:6] = 0.1  # a hole
    proba[10:12, 10:12] = 0.9  # a second, smaller object
    mask = pp(proba)
    assert mask[1:9, 1:9].all() and mask.sum() == 64
    assert "largest component" in pp.describe() and "fill holes" in pp.describe()
    assert Postprocess()(proba).sum() == 4  # default: threshold 0.5 only


def _case(rng, spurious: bool, hole: bool, level: float):
    truth = np.zeros((40, 40), bool)
    truth[10:30, 8:32] = True
    proba = np.where(truth, level, 0.05).astype(np.float32) + rng.uniform(0, 0.02, truth.shape).astype(np.float32)
    if spurious:
        proba[1:4, 1:4] = 0.9
    if hole:
        proba[18:21, 18:21] = 0.1
    return proba, truth


def test_search_keeps_only_steps_that_improve_dice():
    rng = np.random.default_rng(0)
    cases = [_case(rng, spurious=i % 2 == 0, hole=i % 3 == 0, level=0.42) for i in range(6)]
    probas, truths = [c[0] for c in cases], [c[1] for c in cases]
    choice, crf, trials = search(probas, truths, Postprocess(threshold=0.5))
    assert not crf and trials[1]["step"] == "threshold"  # no CRF candidate given
    assert choice.threshold < 0.42  # the object's probability is 0.42..0.44
    assert choice.largest_component and choice.fill_holes
    assert [t["step"] for t in trials][:4] == ["baseline", "threshold", "largest component", "fill holes"]
    assert all(t["kept"] for t in trials[1:4])
    # clean predictions: nothing but the threshold can help, so nothing else is kept
    clean = [_case(rng, spurious=False, hole=False, level=0.8) for _ in range(3)]
    choice, _, trials = search([c[0] for c in clean], [c[1] for c in clean], Postprocess(threshold=0.5))
    assert not (choice.largest_component or choice.fill_holes or choice.min_object_fraction)
    assert dice(choice(clean[0][0]), clean[0][1]) == pytest.approx(1.0)


def test_dice_empty_convention():
    empty = np.zeros((3, 3), bool)
    assert dice(empty, empty) == 1.0
    assert dice(~empty, empty) == 0.0


def _edge_case():
    """A two-colour image with a sharp edge and probabilities blurred across it."""
    import cv2

    image = np.full((96, 96, 3), (200, 170, 150), np.uint8)
    truth = np.zeros((96, 96), bool)
    truth[20:76, 20:76] = True
    image[truth] = (90, 50, 40)
    proba = cv2.GaussianBlur(truth.astype(np.float32), (0, 0), 9) * 0.8 + 0.1
    return image, proba.astype(np.float32), truth


def test_crf_sharpens_probabilities_along_image_edges():
    pytest.importorskip("pydensecrf.densecrf")
    from medseg.inference.crf import crf_refine

    image, proba, truth = _edge_case()
    refined = crf_refine(image, proba)
    assert refined.shape == proba.shape and refined.dtype == np.float32
    assert dice(refined > 0.5, truth) > dice(proba > 0.5, truth) + 0.02
    big = crf_refine(np.repeat(np.repeat(image, 8, 0), 8, 1), np.repeat(np.repeat(proba, 8, 0), 8, 1))
    assert big.shape == (768, 768)  # refined at <= 512 px, resized back
    choice, use_crf, trials = search([proba], [truth], Postprocess(), crf_probas=[refined])
    assert use_crf and trials[1]["step"] == "dense CRF" and trials[1]["kept"]
