"""Native-resolution patch training: patch sampling, padding, training end to end, sliding inference."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from medseg.data.pairs import Pair
from medseg.data.patches import PatchDataset, ScaledImageDataset, patch_origin
from tests.conftest import TINY


def _pair(tmp_path, name: str, image: np.ndarray, mask: np.ndarray) -> Pair:
    cv2.imwrite(str(tmp_path / f"{name}.png"), image[..., ::-1])
    cv2.imwrite(str(tmp_path / f"{name}_mask.png"), mask)
    return Pair(name, tmp_path / f"{name}.png", tmp_path / f"{name}_mask.png")


def _uniform_hit_rate(h: int, w: int, side: int, rows: tuple[int, int], cols: tuple[int, int]) -> float:
    """Share of the uniformly placed ``side`` patches of an h x w image that overlap the foreground box."""
    def axis(length: int, lo: int, hi: int) -> float:
        starts = np.arange(length - side + 1)
        return float(np.mean((starts <= hi) & (starts + side - 1 >= lo)))

    return axis(h, *rows) * axis(w, *cols)


@pytest.mark.parametrize("rate", [0.0, 0.33, 0.8])
def test_foreground_share_matches_the_configured_rate(tmp_path, rate):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (200, 180, 3), dtype=np.uint8)
    mask = np.zeros((200, 180), np.uint8)
    mask[150:160, 20:30] = 255  # a 10 x 10 object: a uniform 32 px patch rarely meets it
    ds = PatchDataset([_pair(tmp_path, "a", image, mask)], 32, foreground_oversample=rate, seed=3)
    ds.set_random_seed(5)
    n = 3000
    hits = np.mean([ds[i % len(ds)][1].numpy().any() for i in range(n)])
    uniform = _uniform_hit_rate(200, 180, 32, (150, 159), (20, 29))
    expected = rate + (1 - rate) * uniform  # foreground-centred patches always hold foreground
    assert uniform < 0.1
    assert abs(hits - expected) < 4 * np.sqrt(expected * (1 - expected) / n) + 0.005


def test_patches_have_the_patch_size_and_small_images_are_padded(tmp_path):
    image = np.full((20, 30, 3), 200, np.uint8)
    mask = np.zeros((20, 30), np.uint8)
    mask[5:10, 5:10] = 255
    ds = PatchDataset([_pair(tmp_path, "s", image, mask)], 48, foreground_oversample=1.0)
    x, y = ds[0]
    assert x.shape == (3, 48, 48) and y.shape == (1, 48, 48)
    assert (x[:, :20, :30] == 200).all() and (x[:, 20:] == 0).all() and (x[:, :, 30:] == 0).all()
    assert int(y.sum()) == 25  # the target {0, 1}, the whole object, nothing in the padding


def test_scale_resamples_images_and_masks(tmp_path):
    image = np.zeros((100, 60, 3), np.uint8)
    mask = np.zeros((100, 60), np.uint8)
    mask[:50] = 255
    pair = _pair(tmp_path, "r", image, mask)
    ds = PatchDataset([pair], 16, scale=0.5)
    assert ds.scaled(0)[1].shape == (50, 30) and set(np.unique(ds.scaled(0)[1])) == {0, 1}
    assert len(ds) == 4 * 2  # patches per epoch: tiles of 16 px over 50 x 30
    assert ScaledImageDataset([pair], 0.5)[0][0].shape == (3, 50, 30)


def test_origin_is_centred_on_foreground_and_stays_inside():
    mask = np.zeros((64, 64), np.uint8)
    mask[0, 63] = 1
    top, left = patch_origin(mask, 16, np.random.default_rng(0), foreground=True)
    assert (top, left) == (0, 48)


def test_patch_run_trains_and_predicts_masks_at_the_input_size(tiny_dataset, tmp_path):
    from medseg.engine.checkpoint import load_checkpoint
    from medseg.engine.train import train
    from medseg.inference.predictor import Predictor
    from medseg.inference.sliding import choose_mode

    run = train(tiny_dataset, tmp_path / "run", config="default", progress=False,
                overrides=TINY + ["train.epochs=1", "data.patch_size=32", "data.scale=0.75"])
    cfg = load_checkpoint(run)["config"]
    assert cfg["data"]["patch_size"] == 32 and cfg["data"]["scale"] == 0.75
    predictor = Predictor.load(run)
    assert choose_mode(150, 97, predictor.config) == "sliding"
    image = np.random.default_rng(0).integers(0, 255, (150, 97, 3), dtype=np.uint8)
    proba = predictor.predict_proba_batch([image, image[:20, :25]])
    assert proba[0].shape == (150, 97) and proba[1].shape == (20, 25)
    assert np.isfinite(proba[0]).all() and 0 <= proba[0].min() and proba[0].max() <= 1
    rows = (run / "metrics.csv").read_text().splitlines()
    assert len(rows) == 2 and rows[1].split(",")[3] not in ("", "nan")  # validated by sliding windows
