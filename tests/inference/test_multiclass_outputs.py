"""Multi-class reporting and outputs: per-class metrics, indexed PNGs, colour overlays, class names."""

from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image

from medseg.config import build_config, label_names
from medseg.errors import ConfigError
from medseg.inference.overlay import DEFAULT_COLOURS, class_colours, make_overlay
from medseg.io.images import write_png
from medseg.metrics import MulticlassAccumulator


def test_per_class_metrics_leave_out_absent_classes():
    acc = MulticlassAccumulator(["bg", "a", "b"])
    truth = np.array([[0, 1], [2, 2]])
    # image 1: class a perfect (dice 1), class b 1 of 2 found (dice 2/3)
    row = acc.update("i1", np.array([[0, 1], [2, 0]]), truth)
    assert row["dice_a"] == 1 and row["dice_b"] == pytest.approx(2 / 3)
    assert row["dice"] == pytest.approx(5 / 6)
    # image 2: class b absent from truth and prediction -> not scored; class a missed entirely
    row = acc.update("i2", np.zeros((2, 2), int), np.array([[1, 0], [0, 0]]))
    assert row["dice_a"] == 0 and math.isnan(row["dice_b"]) and row["dice"] == 0
    summary = acc.aggregate()
    assert summary["per_class"]["a"]["dice"] == pytest.approx(0.5)
    assert summary["per_class"]["a"]["n_images"] == 2
    assert summary["per_class"]["b"]["dice"] == pytest.approx(2 / 3)  # only the image where b exists
    assert summary["per_class"]["b"]["n_images"] == 1
    assert summary["dice"] == pytest.approx((0.5 + 2 / 3) / 2)  # macro mean over foreground classes
    assert summary["n_images"] == 2
    # an image with no foreground anywhere, predicted empty, is perfect
    assert MulticlassAccumulator(["bg", "a"]).update("e", np.zeros((3, 3)), np.zeros((3, 3)))["dice"] == 1.0


def test_indexed_png_keeps_class_values_and_shows_colours(tmp_path):
    labels = np.array([[0, 1, 2], [2, 1, 0]], np.uint8)
    colours = [(0, 0, 0), (255, 0, 0), (0, 0, 255)]
    write_png(tmp_path / "m.png", labels, palette=colours)
    with Image.open(tmp_path / "m.png") as im:
        assert im.mode == "P"
        np.testing.assert_array_equal(np.asarray(im), labels)
        np.testing.assert_array_equal(np.asarray(im.convert("RGB"))[0, 2], [0, 0, 255])
    with pytest.raises(ValueError, match="indexed PNG needs an HxW uint8"):
        write_png(tmp_path / "bad.png", np.zeros((2, 2, 3), np.uint8), palette=colours)


def test_colour_overlay_paints_each_class_in_its_colour():
    image = np.full((40, 40, 3), 100, np.uint8)
    labels = np.zeros((40, 40), np.uint8)
    labels[5:15, 5:15] = 1
    labels[25:35, 25:35] = 2
    cfg = build_config(overrides=["model.classes=3"])
    colours = class_colours(cfg)
    assert colours[1] == DEFAULT_COLOURS[0] and colours[2] == DEFAULT_COLOURS[1]
    out = make_overlay(image, labels, colours=colours, truth=labels)
    inside_1, inside_2, outside = out[10, 10].astype(int), out[30, 30].astype(int), out[20, 20]
    assert np.argmax(inside_1) == 0 and np.argmax(inside_2) == 2  # reddish, bluish
    np.testing.assert_array_equal(outside, [100, 100, 100])
    assert (out[5, 5:15] == [0, 255, 0]).all(axis=1).any()  # truth outline in green
    palette_cfg = build_config(overrides={"model": {"classes": 2}, "data": {"palette": [[0, 0, 0], [9, 9, 9]]}})
    assert class_colours(palette_cfg) == [(0, 0, 0), (9, 9, 9)]


def test_class_names_must_name_every_label_value():
    assert label_names(build_config()) == ["background", "foreground"]
    assert label_names(build_config(overrides=["model.classes=3"])) == ["background", "class 1", "class 2"]
    named = build_config(overrides={"model": {"classes": 3}, "data": {"class_names": ["bg", "liver", "tumour"]}})
    assert label_names(named) == ["bg", "liver", "tumour"]
    with pytest.raises(ConfigError, match="class_names has 2 names but the labels are 0..2"):
        build_config(overrides={"model": {"classes": 3}, "data": {"class_names": ["liver", "tumour"]}})
