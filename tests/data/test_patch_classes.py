"""Foreground patches of a multi-class mask: a class drawn uniformly among those present (nnU-Net's
force_fg), so a rare class is centred as often as a common one."""

from __future__ import annotations

import numpy as np

from medseg.data.patches import patch_origin


def test_a_rare_class_is_centred_as_often_as_a_common_one():
    mask = np.zeros((256, 256), np.uint8)
    mask[20:230, 20:230] = 1  # common: 44,000 pixels
    mask[200:204, 30:34] = 2  # rare: 16 pixels, 0.04 % of the foreground
    rng = np.random.default_rng(0)
    hits = 0
    for _ in range(400):
        top, left = patch_origin(mask, 64, rng, foreground=True)
        hits += bool((mask[top : top + 64, left : left + 64] == 2).any())
    assert 0.35 < hits / 400 < 0.75  # about half (plus the common-class patches that happen to reach it)


def test_binary_masks_centre_on_foreground_and_empty_masks_place_uniformly():
    mask = np.zeros((128, 128), np.uint8)
    mask[100:104, 100:104] = 1
    rng = np.random.default_rng(1)
    for _ in range(50):
        top, left = patch_origin(mask, 32, rng, foreground=True)
        assert mask[top : top + 32, left : left + 32].any()
    origins = {patch_origin(np.zeros((128, 128), np.uint8), 32, rng, foreground=True) for _ in range(20)}
    assert len(origins) > 10 and all(0 <= t <= 96 and 0 <= le <= 96 for t, le in origins)
