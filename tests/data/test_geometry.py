from __future__ import annotations

import numpy as np
import pytest

from medseg.data.geometry import letterbox, unletterbox


@pytest.mark.parametrize("hw", [(1072, 1920), (1920, 1072), (256, 256), (31, 517), (600, 451), (7, 9)])
def test_round_trip_returns_exact_original_size(hw):
    h, w = hw
    image = np.random.default_rng(0).integers(0, 255, (h, w, 3), dtype=np.uint8)
    boxed, box = letterbox(image, 256)
    assert boxed.shape == (256, 256, 3)
    back = unletterbox(boxed[..., 0].astype(np.float32), box)
    assert back.shape == (h, w)


def test_aspect_kept_and_padding_zero():
    image = np.full((100, 200, 3), 255, np.uint8)
    boxed, box = letterbox(image, 128)
    assert (box.inner_h, box.inner_w, box.top, box.left) == (64, 128, 32, 0)
    assert boxed[:32].max() == 0 and boxed[96:].max() == 0 and boxed[32:96].min() == 255


def test_mask_round_trip_preserves_shape_and_labels():
    mask = np.zeros((300, 500), np.uint8)
    mask[100:200, 150:350] = 1
    boxed, box = letterbox(mask, 128, is_mask=True)
    assert set(np.unique(boxed)) == {0, 1}
    back = unletterbox(boxed.astype(np.float32), box) > 0.5
    assert back.shape == mask.shape
    assert (back == mask.astype(bool)).mean() > 0.99
