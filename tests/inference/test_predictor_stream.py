"""Predictor.stream, the one read-ahead loop: every item comes back, in order, errors included."""

from __future__ import annotations

import logging
import shutil

import numpy as np
import pytest

from medseg.inference.predictor import Predictor


@pytest.fixture(scope="module")
def predictor(tiny_run) -> Predictor:
    return Predictor.load(tiny_run, precision="fp32", device="cpu")


def test_stream_keeps_every_item_in_order_with_errors(predictor, tiny_dataset, tmp_path):
    images = sorted((tiny_dataset / "images").glob("*.jpg"))[:3]
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    items = [images[0], broken, *images[1:3]]
    results = list(predictor.stream(items, batch_size=2))
    assert [r.item for r in results] == items
    assert results[1].error and "broken.png" in results[1].error and results[1].proba is None
    for r, path in zip([results[0], *results[2:]], [images[0], *images[1:3]], strict=True):
        assert r.error is None and r.proba.shape == r.image.shape[:2]
        np.testing.assert_allclose(r.proba, predictor.predict_proba(path), atol=1e-4)  # batch of 2 vs 1


def test_stream_reads_anything_through_read(predictor):
    arrays = [np.full((40 + 8 * i, 50, 3), 30 * i, np.uint8) for i in range(5)]
    got = [r.proba for r in predictor.stream(arrays, read=np.asarray, batch_size=2, uncertainty=False)]
    assert len(got) == 5 and [g.shape for g in got] == [a.shape[:2] for a in arrays]
    with_std = list(predictor.stream(arrays[:2], read=np.asarray, uncertainty=True))
    assert all(r.uncertainty is not None and r.uncertainty.shape == r.proba.shape for r in with_std)


def test_stream_pairs_logs_an_unreadable_image(predictor, tiny_dataset, tmp_path, caplog):
    from medseg.data.prepare import discover_and_check

    data = tmp_path / "data"
    shutil.copytree(tiny_dataset, data)
    pairs = discover_and_check(data, progress=False).good[:3]
    pairs[1].image.write_bytes(b"broken")
    with caplog.at_level(logging.WARNING):
        results = list(predictor.stream_pairs(pairs))
    assert [r.item for r in results] == pairs and [r.error is None for r in results] == [True, False, True]
    assert pairs[1].image.name in caplog.text


def test_with_overrides_builds_a_new_predictor(predictor):
    before = predictor.config.model_dump()
    threshold, fill = (0.3 if predictor.threshold != 0.3 else 0.4), not predictor.config.infer.fill_holes
    tuned = predictor.with_overrides([f"infer.threshold={threshold}", f"infer.fill_holes={str(fill).lower()}"])
    assert tuned is not predictor and tuned.backend is predictor.backend
    assert (tuned.threshold, tuned.config.infer.fill_holes) == (threshold, fill)
    assert predictor.config.model_dump() == before
