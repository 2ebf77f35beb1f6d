"""The array contract of Predictor.predict: each documented dtype, range, shape and order; each refusal."""

from __future__ import annotations

import numpy as np
import pytest

import medseg
from medseg.errors import MedsegError
from medseg.inference.arrays import as_rgb_uint8

RNG = np.random.default_rng(3)
RGB = RNG.integers(0, 256, (24, 32, 3), dtype=np.uint8)


def test_uint8_rgb_is_used_as_is():
    out = as_rgb_uint8(RGB)
    assert out.dtype == np.uint8 and out.shape == (24, 32, 3) and out.flags.c_contiguous
    np.testing.assert_array_equal(out, RGB)


def test_float_in_unit_range_is_scaled_by_255():
    np.testing.assert_array_equal(as_rgb_uint8(RGB / 255.0), RGB)
    np.testing.assert_array_equal(as_rgb_uint8((RGB / 255.0).astype(np.float32)), RGB)


def test_bgr_is_reversed_only_when_declared():
    bgr = np.ascontiguousarray(RGB[..., ::-1])
    np.testing.assert_array_equal(as_rgb_uint8(bgr, channel_order="bgr"), RGB)
    np.testing.assert_array_equal(as_rgb_uint8(bgr), bgr)  # RGB is the default; nothing is guessed
    bgra = np.concatenate([bgr, np.full((24, 32, 1), 255, np.uint8)], axis=2)
    np.testing.assert_array_equal(as_rgb_uint8(bgra, channel_order="BGR"), RGB)


def test_grey_and_alpha_shapes():
    grey = RGB[..., 0]
    for arr in (grey, grey[..., None]):
        out = as_rgb_uint8(arr)
        assert out.shape == (24, 32, 3)
        assert (out == grey[..., None]).all()
    rgba = np.concatenate([RGB, np.zeros((24, 32, 1), np.uint8)], axis=2)
    np.testing.assert_array_equal(as_rgb_uint8(rgba), RGB)


def test_uint16_is_scaled_by_bit_depth_like_16_bit_files():
    a = np.array([[0, 257], [30 * 257, 65535]], np.uint16)
    out = as_rgb_uint8(a)[..., 0]
    np.testing.assert_array_equal(out, [[0, 1], [30, 255]])
    # the same picture in 8 and 16 bits gives the same pixels (never a per-image stretch)
    grey8 = np.arange(30, 221, dtype=np.uint8).reshape(1, -1)
    np.testing.assert_array_equal(as_rgb_uint8(grey8.astype(np.uint16) * 257), as_rgb_uint8(grey8))


@pytest.mark.parametrize("array,message", [
    (RGB.astype(np.float32), "spans 0..255.*astype\\(np.uint8\\)"),
    (RGB / 127.5 - 1.0, "must hold values in \\[0, 1\\]"),
    (np.full((4, 4), np.nan), "NaN"),
    (RGB[..., 0] > 100, "bool"),
    (RGB.astype(np.int64), "not int64"),
    (RGB.astype(np.int16), "not int16"),
    (np.zeros((2, 24, 32, 3), np.uint8), "shape \\(2, 24, 32, 3\\)"),
    (np.zeros((24, 32, 2), np.uint8), "shape \\(24, 32, 2\\)"),
    (np.zeros((3, 24, 32), np.uint8), "shape \\(3, 24, 32\\), channels first.*transpose\\(1, 2, 0\\)"),
    (np.zeros((0, 32, 3), np.uint8), "empty"),
])
def test_refusals_say_what_to_pass(array, message):
    with pytest.raises(MedsegError, match=message):
        as_rgb_uint8(array)


def test_unknown_channel_order():
    with pytest.raises(MedsegError, match="channel_order must be 'rgb' or 'bgr'"):
        as_rgb_uint8(RGB, channel_order="hsv")


def test_predictor_gives_the_same_mask_for_every_encoding_of_one_image(tiny_run):
    predictor = medseg.load(tiny_run)
    image = RNG.integers(0, 256, (70, 90, 3), dtype=np.uint8)
    reference = predictor.predict(image)
    assert reference.dtype == np.uint8 and reference.shape == (70, 90)
    np.testing.assert_array_equal(predictor.predict(image / 255.0), reference)
    np.testing.assert_array_equal(predictor.predict(image[..., ::-1].copy(), channel_order="bgr"), reference)
    np.testing.assert_array_equal(predictor.predict_proba(image / 255.0), predictor.predict_proba(image))
    with pytest.raises(MedsegError, match="float image arrays"):
        predictor.predict(image.astype(np.float32))
    assert len(predictor.predict_proba_batch([image, image / 255.0])) == 2


def test_predictor_repr_names_model_classes_size_and_backend(tiny_run):
    text = repr(medseg.load(tiny_run))
    assert text.startswith("Predictor(unet/resnet18, binary, input 64x64")
    assert "PyTorch" in text and "best.pt" in text
