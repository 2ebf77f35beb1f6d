"""TTA and sliding windows around fake backends whose answers are known exactly (no model needed)."""

from __future__ import annotations

import numpy as np
import pytest

from medseg.config import build_config
from medseg.inference.predictor import Predictor, uncertainty_image
from medseg.inference.sliding import choose_mode, training_scale
from medseg.inference.tta import TTAPlan, flip_members, model_side


class RedBackend:
    """Probability = red / 255 at every pixel: flip- and scale-equivariant, so TTA must change nothing."""

    flips: tuple[str, ...] = ()

    def __init__(self) -> None:
        self.shapes: list[tuple[int, ...]] = []

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        assert batch.dtype == np.uint8 and batch.shape[3] == 3
        self.shapes.append(batch.shape)
        return (batch[..., 0].astype(np.float32) / 255.0)[:, None]

    def describe(self) -> str:
        return "red channel"


class RampBackend(RedBackend):
    """Probability = x / (W - 1) whatever the image: not flip-equivariant."""

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        n, h, w, _ = batch.shape
        ramp = np.linspace(0.0, 1.0, w, dtype=np.float32)
        return np.broadcast_to(ramp, (n, 1, h, w)).copy()


def smooth_image(h: int, w: int) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    red = 128 + 100 * np.sin(xx / max(w, 1) * np.pi) * np.cos(yy / max(h, 1) * np.pi)
    img = np.zeros((h, w, 3), np.uint8)
    img[..., 0] = np.round(red).astype(np.uint8)
    img[..., 1] = 50
    return img


def predictor(backend, *sets: str) -> Predictor:
    return Predictor(backend, build_config(overrides=["data.image_size=64", *sets]))


@pytest.mark.parametrize("shape", [(37, 91), (101, 33), (64, 64), (1, 5), (250, 7)])
def test_tta_on_odd_sizes_keeps_shape_and_values(shape):
    img = smooth_image(*shape)
    expected = img[..., 0].astype(np.float32) / 255
    plain = predictor(RedBackend()).predict_proba(img)
    p = predictor(RedBackend(), "infer.tta=true", "infer.tta_flips=[h,v,hv]")
    proba, unc = p.predict_with_uncertainty(img)
    assert plain.shape == proba.shape == unc.shape == shape
    assert proba.dtype == np.float32
    assert p.plan.members() == 12
    if min(shape) >= 30:  # tiny images lose detail in the 48/64/80 px round trips
        assert np.abs(plain - expected).max() < 0.05
        assert np.abs(proba - expected).max() < 0.05
        assert unc.max() < 0.05


def test_flips_are_undone_before_averaging():
    img = smooth_image(40, 64)
    p = predictor(RampBackend(), "infer.tta=true", "infer.tta_flips=[h]", "infer.tta_scales=[1.0]")
    proba, unc = p.predict_with_uncertainty(img)
    ramp = np.linspace(0, 1, 64, dtype=np.float32)
    np.testing.assert_allclose(proba, 0.5, atol=1e-6)  # ramp + mirrored ramp
    np.testing.assert_allclose(unc[0], np.abs(ramp - 0.5), atol=1e-6)  # two members: std = |a - b| / 2
    v = predictor(RampBackend(), "infer.tta=true", "infer.tta_flips=[v]", "infer.tta_scales=[1.0]")
    np.testing.assert_allclose(v.predict_proba(img)[0], ramp, atol=1e-6)  # a vertical flip leaves x alone


def test_flip_members_batches_and_order():
    backend = RedBackend()
    batch = np.stack([smooth_image(32, 64)] * 3)
    members = flip_members(backend, batch, ("h", "v"), max_batch=4)
    assert members.shape == (3, 3, 1, 32, 64)
    assert [s[0] for s in backend.shapes] == [4, 4, 1]  # 9 views in pieces of at most 4
    np.testing.assert_array_equal(members[:, 0], members[:, 1])


def test_model_side_and_plan():
    assert [model_side(256, s) for s in (0.75, 1.0, 1.25)] == [192, 256, 320]
    assert model_side(64, 0.3) == 32
    cfg = build_config(overrides=["infer.tta=true"])
    plan = TTAPlan.from_config(cfg.infer)
    assert plan.flips == ("h", "v") and plan.scales == (0.75, 1.0, 1.25) and plan.members() == 9
    assert plan.members(baked_flips=("h", "v")) == 3
    assert TTAPlan.from_config(build_config().infer).members() == 1


def test_choose_mode_follows_the_training_scale():
    cfg = build_config(overrides=["data.image_size=256"])
    assert choose_mode(3000, 4000, cfg) == "sliding"
    assert choose_mode(600, 700, cfg) == "letterbox"
    cfg = build_config(overrides=["data.image_size=256", "infer.train_side=1024"])
    assert choose_mode(3000, 2000, cfg) == "letterbox"  # like the training images
    assert choose_mode(3000, 4000, cfg) == "sliding"
    assert training_scale(cfg) == 0.25
    assert choose_mode(100, 100, build_config(overrides=["infer.mode=sliding"])) == "sliding"
    assert choose_mode(9000, 100, build_config(overrides=["infer.mode=letterbox"])) == "letterbox"


def test_sliding_window_on_a_large_image():
    img = smooth_image(3000, 4000)
    backend = RedBackend()
    p = predictor(backend, "data.image_size=256", "infer.batch_size=16")
    proba = p.predict_proba(img)
    assert proba.shape == (3000, 4000) and proba.dtype == np.float32
    assert {s[1:3] for s in backend.shapes} == {(256, 256)}  # only windows reach the backend
    assert sum(s[0] for s in backend.shapes) > 300 and max(s[0] for s in backend.shapes) <= 16
    np.testing.assert_allclose(proba, img[..., 0] / 255, atol=1e-4)  # blending identical values


def test_sliding_window_at_training_scale_with_tta():
    img = smooth_image(900, 1300)
    backend = RedBackend()
    p = predictor(backend, "infer.train_side=128", "infer.tta=true", "infer.tta_scales=[1.0]", "infer.overlap=0.5")
    proba, unc = p.predict_with_uncertainty(img)  # tiles the image shrunk by 64 / 128
    assert proba.shape == unc.shape == (900, 1300)
    assert {s[1:3] for s in backend.shapes} == {(64, 64)}
    assert np.abs(proba - img[..., 0] / 255).max() < 0.03
    assert unc.max() < 1e-4  # flips of an equivariant model agree


def test_uncertainty_image_scale():
    std = np.array([[0.0, 0.25, 0.5, 0.7]], np.float32)
    np.testing.assert_array_equal(uncertainty_image(std), [[0, 128, 255, 255]])


def test_folder_prediction_memory_does_not_grow_with_the_number_of_images(tmp_path):
    import tracemalloc

    from PIL import Image

    src = tmp_path / "in"
    src.mkdir()
    for i in range(40):
        Image.fromarray(np.roll(smooth_image(300, 300), i, axis=1)).save(src / f"{i:02d}.png")
    p = predictor(RedBackend(), "infer.batch_size=2", "infer.mode=letterbox")

    def peak(files: int) -> int:
        sub = tmp_path / f"in{files}"
        sub.mkdir()
        for f in sorted(src.iterdir())[:files]:
            (sub / f.name).symlink_to(f)
        tracemalloc.start()
        result = p.predict_folder(sub, tmp_path / f"out{files}", overlay=True, progress=False)
        _, top = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert len(result.written) == files
        return top

    small, large = peak(8), peak(40)
    assert large < 1.3 * small + 2**20, (small, large)  # 5x the images, about the same peak
