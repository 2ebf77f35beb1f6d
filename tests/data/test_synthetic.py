"""The synthetic dermoscopy dataset: layout, determinism, binary masks, hairs."""

from __future__ import annotations

import csv

import cv2
import numpy as np
import pytest

from medseg.data import synthetic
from medseg.data.synthetic import make_synthetic_dataset, make_synthetic_pair
from medseg.errors import ConfigError

SIZE = 64


def _pairs(n: int, size: int = SIZE, seed: int = 0):
    return [make_synthetic_pair(np.random.default_rng([seed, i]), size) for i in range(n)]


def test_pair_shapes_types_and_binary_mask():
    for image, mask in _pairs(6):
        assert image.shape == (SIZE, SIZE, 3) and image.dtype == np.uint8
        assert mask.shape == (SIZE, SIZE) and mask.dtype == np.uint8
        assert set(np.unique(mask)) <= {0, 1}


def test_pair_is_deterministic_for_a_seed():
    a_img, a_mask = make_synthetic_pair(np.random.default_rng(7), SIZE)
    b_img, b_mask = make_synthetic_pair(np.random.default_rng(7), SIZE)
    c_img, _ = make_synthetic_pair(np.random.default_rng(8), SIZE)
    assert np.array_equal(a_img, b_img) and np.array_equal(a_mask, b_mask)
    assert not np.array_equal(a_img, c_img)


def test_lesions_vary_in_size_and_are_darker_than_skin():
    pairs = _pairs(40, size=96)
    fractions = np.array([mask.mean() for _, mask in pairs])
    assert fractions.min() >= 0.02 and fractions.max() <= 0.7
    assert fractions.max() - fractions.min() > 0.25  # small and large lesions both occur
    darker = [img[mask == 1].mean() < img[mask == 0].mean() for img, mask in pairs]
    assert np.mean(darker) >= 0.9  # learnable: lesions mostly stand out from skin


def test_images_look_like_skin():
    pairs = _pairs(10, size=96)
    for image, mask in pairs:
        skin = image[(mask == 0)].reshape(-1, 3).astype(float)
        r, g, b = np.median(skin, axis=0)
        assert r > g > b  # skin tone: red dominates, blue lowest
        assert image.std() > 5  # not a flat colour


def test_hairs_are_drawn_and_not_in_the_mask(monkeypatch):
    seed = 3
    rngs = [np.random.default_rng([seed, i]) for i in range(12)]
    with_hair = [make_synthetic_pair(rng, SIZE) for rng in rngs]

    def no_hairs(rng, img):  # same random draws as the real one, then the drawing is undone
        before = img.copy()
        cover = real_draw(rng, img)
        img[...] = before
        return cover

    real_draw = synthetic._draw_hairs
    monkeypatch.setattr(synthetic, "_draw_hairs", no_hairs)
    without = [make_synthetic_pair(np.random.default_rng([seed, i]), SIZE) for i in range(12)]
    changed = [not np.array_equal(a[0], b[0]) for a, b in zip(with_hair, without, strict=True)]
    assert 0 < sum(changed) < 12  # some images have hairs, some have none
    for (_, m1), (_, m2) in zip(with_hair, without, strict=True):
        assert np.array_equal(m1, m2)  # hairs never change the mask


def test_hair_coverage_is_thin_dark_lines():
    rng = np.random.default_rng(0)
    covers = []
    for _ in range(30):
        img = np.full((SIZE, SIZE, 3), 0.8, np.float32)
        cover = synthetic._draw_hairs(rng, img)
        covers.append(cover.mean())
        if cover.max() > 0.7:
            assert img[cover > 0.7].mean() < 0.4  # dark where the hair is
    assert 0 < max(covers) < 0.3


def test_dataset_layout_and_split(tmp_path):
    out = make_synthetic_dataset(tmp_path / "syn", n_train=3, n_val=2, n_test=1, size=SIZE, seed=1)
    assert out == tmp_path / "syn"
    with (out / "split.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["image_id", "split"]
    assert [r["split"] for r in rows] == ["train"] * 3 + ["val"] * 2 + ["test"]
    assert rows[0]["image_id"] == "SYN_0001"
    for row in rows:
        image = cv2.imread(str(out / "images" / f"{row['image_id']}.jpg"), cv2.IMREAD_UNCHANGED)
        mask = cv2.imread(str(out / "masks" / f"{row['image_id']}_segmentation.png"), cv2.IMREAD_UNCHANGED)
        assert image.shape == (SIZE, SIZE, 3)
        assert mask.shape == (SIZE, SIZE) and mask.dtype == np.uint8
        assert set(np.unique(mask)) <= {0, 255}
        assert 0.02 <= (mask > 0).mean() <= 0.7
    assert len(list((out / "images").iterdir())) == 6
    assert not list(out.rglob("*.tmp"))


def test_dataset_is_deterministic_and_rgb(tmp_path):
    a = make_synthetic_dataset(tmp_path / "a", n_train=2, n_val=1, n_test=1, size=SIZE, seed=5)
    b = make_synthetic_dataset(tmp_path / "b", n_train=2, n_val=1, n_test=1, size=SIZE, seed=5)
    c = make_synthetic_dataset(tmp_path / "c", n_train=2, n_val=1, n_test=1, size=SIZE, seed=6)
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert len(files) == 9
    for rel in files:
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel
    assert (a / "images/SYN_0001.jpg").read_bytes() != (c / "images/SYN_0001.jpg").read_bytes()
    # the JPEG is stored as RGB: decoding (BGR) and flipping gives back the pair's colours
    image, _ = make_synthetic_pair(np.random.default_rng([5, 1]), SIZE)
    decoded = cv2.cvtColor(cv2.imread(str(a / "images/SYN_0001.jpg")), cv2.COLOR_BGR2RGB)
    assert np.abs(decoded.astype(int) - image).mean() < 4


def test_invalid_arguments(tmp_path):
    with pytest.raises(ConfigError, match="too small"):
        make_synthetic_pair(np.random.default_rng(0), 8)
    with pytest.raises(ConfigError):
        make_synthetic_dataset(tmp_path, n_train=-1)
    with pytest.raises(ConfigError):
        make_synthetic_dataset(tmp_path, n_train=0, n_val=0, n_test=0)
