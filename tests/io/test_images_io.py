"""medseg.io.images: reading images and masks of every common encoding, clear errors, atomic writes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medseg.errors import DataError
from medseg.io import images
from medseg.io.formats import read_image
from medseg.io.images import image_size, inspect_mask, load_mask, read_mask, write_png
from tests._factories import disc, noisy_mask, not_an_image, rgb, save, truncated_jpeg


@pytest.mark.parametrize("name", ["a.png", "a.tif", "a.bmp", "a.gif"])
def test_read_image_lossless_formats_roundtrip_rgb(tmp_path, name):
    arr = rgb(1)
    if name.endswith(".gif"):  # GIF is paletted: use few colours so it stays exact
        arr = (arr // 128 * 255).astype(np.uint8)
    out = read_image(save(tmp_path / name, arr))
    assert out.dtype == np.uint8 and out.shape == arr.shape
    np.testing.assert_array_equal(out, arr)


def test_read_image_jpeg_is_rgb_in_rgb_order(tmp_path):
    reddish = np.zeros((16, 24, 3), np.uint8) + np.array([200, 50, 10], np.uint8)
    out = read_image(save(tmp_path / "ISIC_1.jpg", reddish, quality=95))
    assert out.shape == (16, 24, 3) and out.dtype == np.uint8
    assert np.abs(out.astype(int) - reddish).max() <= 3


def test_read_image_grey_is_replicated(tmp_path):
    grey = rgb(3)[:, :, 0]
    out = read_image(save(tmp_path / "g.png", grey))
    assert out.shape == (16, 24, 3)
    for c in range(3):
        np.testing.assert_array_equal(out[:, :, c], grey)


def test_read_image_rgba_drops_alpha(tmp_path):
    rgba = np.dstack([rgb(4), np.full((16, 24), 7, np.uint8)])
    np.testing.assert_array_equal(read_image(save(tmp_path / "a.png", rgba)), rgba[:, :, :3])


def test_read_image_palette_is_converted(tmp_path):
    im = Image.fromarray(rgb(5)).quantize(8)
    im.save(tmp_path / "p.png")
    np.testing.assert_array_equal(read_image(tmp_path / "p.png"), np.asarray(im.convert("RGB")))


def test_read_image_16bit_is_scaled_by_its_bit_depth_not_its_own_range(tmp_path):
    a = np.linspace(1000, 3000, 16 * 24).reshape(16, 24).astype(np.uint16)
    Image.fromarray(a).save(tmp_path / "u16.png")
    out = read_image(tmp_path / "u16.png")
    assert out.shape == (16, 24, 3)
    assert out[0, 0, 0] == round(1000 / 257) and out[-1, -1, 0] == round(3000 / 257)
    Image.fromarray((a // 2).astype(np.uint16)).save(tmp_path / "half.png")  # another image of the study
    np.testing.assert_array_equal(read_image(tmp_path / "half.png")[..., 0], np.rint((a // 2) / 257).astype(np.uint8))


@pytest.mark.parametrize("reader", [read_image, read_mask])
def test_truncated_file_fails_naming_it(tmp_path, reader):
    path = truncated_jpeg(tmp_path / "cut.jpg")
    with pytest.raises(DataError, match="cut.jpg.*truncated"):
        reader(path)


@pytest.mark.parametrize("reader", [read_image, read_mask, image_size])
def test_not_an_image_fails_naming_it(tmp_path, reader):
    path = not_an_image(tmp_path / "fake.png")
    with pytest.raises(DataError, match="fake.png"):
        reader(path)


def test_missing_file_fails_naming_it(tmp_path):
    with pytest.raises(DataError, match="nothere.png does not exist"):
        read_image(tmp_path / "nothere.png")


def test_image_size_reads_the_header_only(tmp_path):
    assert image_size(save(tmp_path / "a.png", rgb(0, (30, 20)))) == (30, 20)
    assert image_size(truncated_jpeg(tmp_path / "cut.jpg", size=(64, 48))) == (64, 48)


# ---- masks -----------------------------------------------------------------------------------------

def test_binary_0_255_and_0_1_masks_read_as_0_1(tmp_path):
    expected = (disc() > 0).astype(np.uint8)
    for name, arr in [("a.png", disc()), ("b.png", disc(value=1)), ("c.gif", disc()), ("d.bmp", disc())]:
        out = read_mask(save(tmp_path / name, arr))
        assert out.dtype == np.uint8
        np.testing.assert_array_equal(out, expected)


def test_mode_1_bilevel_mask(tmp_path):
    Image.fromarray(disc() > 0).save(tmp_path / "b.png")
    _, info = load_mask(tmp_path / "b.png")
    np.testing.assert_array_equal(read_mask(tmp_path / "b.png"), disc() > 0)
    assert info.kind == "binary-0-1"


def test_16bit_binary_mask(tmp_path):
    Image.fromarray(disc().astype(np.uint16) * 257).save(tmp_path / "m16.png")
    binary, info = load_mask(tmp_path / "m16.png")
    assert info.kind == "binary-0-255" and info.values == (0, 65535)
    np.testing.assert_array_equal(binary, disc() > 0)


def test_rgb_grey_mask_is_read_as_grey(tmp_path):
    path = save(tmp_path / "m.png", np.repeat(disc()[:, :, None], 3, axis=2))
    binary, info = load_mask(path)
    assert info.kind == "rgb-grey" and info.usable and not info.noisy
    assert "m.png" in info.message and "RGB" in info.message
    np.testing.assert_array_equal(binary, disc() > 0)


def test_jpeg_noisy_mask_is_binarised_at_128(tmp_path):
    noisy = noisy_mask()
    path = save(tmp_path / "m.png", noisy)
    binary, info = load_mask(path)
    assert info.kind == "jpeg-noisy" and info.usable and info.noisy
    assert info.n_values > 2 and "128" in info.message and "m.png" in info.message
    np.testing.assert_array_equal(binary, noisy >= 128)
    assert (binary == (disc((64, 48), radius=0.35) > 0)).mean() > 0.97


def test_label_map_values_above_zero_are_foreground(tmp_path):
    labels = np.zeros((16, 24), np.uint8)
    labels[2:6, 2:6], labels[8:12, 10:20] = 1, 2
    binary, info = load_mask(save(tmp_path / "l.png", labels))
    assert info.kind == "label-map" and info.values == (0, 1, 2)
    np.testing.assert_array_equal(binary, labels > 0)


def test_coloured_palette_mask_uses_indices_as_labels(tmp_path):
    idx = (disc() > 0).astype(np.uint8)
    im = Image.fromarray(idx, mode="P")
    im.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    im.save(tmp_path / "voc.png")
    binary, info = load_mask(tmp_path / "voc.png")
    assert info.usable
    np.testing.assert_array_equal(binary, idx)


def test_grey_palette_gif_uses_the_grey_it_shows(tmp_path):
    idx = (disc() == 0).astype(np.uint8)  # index 0 = disc, palette entry 0 is white
    im = Image.fromarray(idx, mode="P")
    im.putpalette([255, 255, 255, 0, 0, 0] + [0] * 762)
    im.save(tmp_path / "m.gif")
    np.testing.assert_array_equal(read_mask(tmp_path / "m.gif"), disc() > 0)


def test_mask_drawn_in_alpha_channel(tmp_path):
    rgba = np.zeros((16, 24, 4), np.uint8)
    rgba[..., 3] = disc()
    np.testing.assert_array_equal(read_mask(save(tmp_path / "a.png", rgba)), disc() > 0)


def test_rgb_colour_mask_is_rejected_with_colour_count(tmp_path):
    colour = np.zeros((16, 24, 3), np.uint8)
    colour[:4], colour[4:8] = (255, 0, 0), (0, 255, 0)
    path = save(tmp_path / "c.png", colour)
    with pytest.raises(DataError, match=r"c\.png is RGB with 3 distinct colours; expected a binary or label"):
        read_mask(path)


def test_continuous_grey_mask_is_rejected(tmp_path):
    path = save(tmp_path / "photo.png", rgb(7)[:, :, 0])
    binary, info = load_mask(path)
    assert binary is None and info.kind == "continuous" and not info.usable
    with pytest.raises(DataError, match=r"photo\.png has \d+ grey levels"):
        read_mask(path)


def test_empty_mask_is_usable_and_flagged(tmp_path):
    binary, info = load_mask(save(tmp_path / "e.png", np.zeros((16, 24), np.uint8)))
    assert info.usable and info.empty and info.foreground_fraction == 0.0
    assert binary.shape == (16, 24) and binary.max() == 0


@pytest.mark.parametrize(
    ("arr", "kind", "usable"),
    [
        (np.array([[0, 255], [255, 255]], np.uint8), "binary-0-255", True),
        (np.array([[0, 1], [1, 1]], np.uint8), "binary-0-1", True),
        (np.array([[False, True]]), "binary-0-1", True),
        (np.array([[0.0, 1.0]], np.float32), "binary-0-1", True),
        (np.array([[0, 128, 128]], np.uint8), "label-map", True),
        (np.array([[0.0, 0.3, 0.7, 1.0] * 8], np.float32) + np.linspace(0, 0.01, 32, dtype=np.float32),
         "continuous", False),
        (np.array([[0.0, np.nan]], np.float32), "continuous", False),
        (np.arange(256, dtype=np.uint8).reshape(16, 16), "continuous", False),
        (np.zeros((2, 2, 5), np.uint8), "continuous", False),
    ],
)
def test_inspect_mask_kinds(arr, kind, usable):
    info = inspect_mask(arr, "m.png")
    assert (info.kind, info.usable) == (kind, usable)
    assert info.usable or "m.png" in info.message


def test_inspect_mask_values_are_truncated_and_fraction_is_right():
    info = inspect_mask(np.array([[0, 255, 255, 255]], np.uint8), "m.png")
    assert info.values == (0, 255) and info.foreground_fraction == 0.75 and not info.empty
    many = inspect_mask(np.arange(100, dtype=np.uint8).reshape(10, 10), "m.png")
    assert len(many.values) == 16 and many.n_values == 100


# ---- writing ---------------------------------------------------------------------------------------

def test_write_png_roundtrip_creates_parents_and_leaves_no_temp(tmp_path):
    path = tmp_path / "out" / "deep" / "m.png"
    write_png(path, disc())
    np.testing.assert_array_equal(np.asarray(Image.open(path)), disc())
    write_png(tmp_path / "out" / "rgb.png", rgb(1))
    np.testing.assert_array_equal(read_image(tmp_path / "out" / "rgb.png"), rgb(1))
    write_png(tmp_path / "out" / "b.png", disc() > 0)
    assert set(np.unique(np.asarray(Image.open(tmp_path / "out" / "b.png")))) == {0, 255}
    assert sorted(p.name for p in path.parent.iterdir()) == ["m.png"]
    write_png(tmp_path / "out" / "u16.png", disc().astype(np.uint16) * 257)
    _, info = load_mask(tmp_path / "out" / "u16.png")
    assert info.values == (0, 65535)


def test_write_png_failure_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "m.png"
    write_png(path, disc())
    before = path.read_bytes()

    def boom(self, fp, *args, **kwargs):  # writes half a file, then fails
        Path(fp).write_bytes(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(images.Image.Image, "save", boom)
    with pytest.raises(OSError, match="disk full"):
        write_png(path, np.zeros((16, 24), np.uint8))
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.png"]


def test_write_png_rejects_unwritable_arrays(tmp_path):
    with pytest.raises(ValueError, match="float32"):
        write_png(tmp_path / "m.png", np.zeros((4, 4), np.float32))
