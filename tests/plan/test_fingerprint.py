"""Dataset fingerprint: figures on synthetic data with known properties, determinism, DICOM, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from medseg.cli import app
from medseg.data.layouts import find_pairs
from medseg.data.pairs import Pair
from medseg.plan.fingerprint import compute_fingerprint, structure_widths
from tests._dicom_factories import ct_slice
from tests._factories import save


def _lines(h: int = 96, w: int = 128, width: int = 1, n: int = 4) -> np.ndarray:
    mask = np.zeros((h, w), np.uint8)
    for i in range(n):
        y = 10 + i * (h - 20) // n
        mask[y : y + width, 5:-5] = 255
    return mask


def _blob(h: int = 96, w: int = 128, radius: int = 30) -> np.ndarray:
    yy, xx = np.mgrid[:h, :w]
    return (((yy - h / 2) ** 2 + (xx - w / 2) ** 2 <= radius**2) * 255).astype(np.uint8)


def _dataset(root: Path, masks: list[np.ndarray], *, grey: bool = False, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    for i, mask in enumerate(masks):
        h, w = mask.shape
        image = rng.integers(0, 256, (h, w) if grey else (h, w, 3), dtype=np.uint8)
        save(root / "images" / f"case{i}.png", image)
        save(root / "masks" / f"case{i}.png", mask)
    return root


@pytest.mark.parametrize("width", [1, 3, 5, 9])
def test_structure_width_of_a_bar_is_its_width(width):
    mask = np.zeros((40, 60), np.uint8)
    mask[10 : 10 + width, 5:55] = 1
    # odd widths exactly; the medial axis of an even-width bar lies between pixels (one less)
    assert np.median(structure_widths(mask)) == width


def test_structure_width_of_a_disc_is_about_its_diameter():
    widths = structure_widths(_blob(radius=20))
    assert 38 <= widths.max() <= 41
    assert structure_widths(np.zeros((8, 8))).size == 0


def test_thin_lines_and_large_blobs_are_told_apart(tmp_path):
    thin = compute_fingerprint(find_pairs(_dataset(tmp_path / "thin", [_lines()] * 3)).pairs)
    blobs = compute_fingerprint(find_pairs(_dataset(tmp_path / "blobs", [_blob()] * 3)).pairs)
    assert thin.structure_width.median == 1
    assert blobs.structure_width.median > 20
    assert thin.structure_width_rel.median < 0.01 < 0.15 < blobs.structure_width_rel.median
    assert thin.objects_per_image.median == 4 and blobs.objects_per_image.median == 1
    assert blobs.object_area.median == pytest.approx(np.pi * 30**2, rel=0.02)
    assert thin.height.median == 96 and thin.width.median == 128
    assert thin.aspect.median == pytest.approx(128 / 96, abs=1e-3)
    fg = float((_blob() > 0).mean())
    assert blobs.foreground_fraction.median == pytest.approx(fg, abs=1e-4)
    assert blobs.classes[1] == pytest.approx(fg, abs=1e-4)


def test_grey_and_colour_and_intensity_statistics(tmp_path):
    grey = compute_fingerprint(find_pairs(_dataset(tmp_path / "g", [_blob()] * 2, grey=True)).pairs)
    colour = compute_fingerprint(find_pairs(_dataset(tmp_path / "c", [_blob()] * 2)).pairs)
    assert (grey.modality, grey.channels, len(grey.intensity)) == ("grey", 1, 1)
    assert (colour.modality, colour.channels, len(colour.intensity)) == ("rgb", 3, 3)
    stats = colour.intensity[0]
    assert stats.mean == pytest.approx(127.5, abs=3) and stats.p0_5 <= 2 and stats.p99_5 >= 253
    assert grey.spacing_mm is None and grey.modality_values is None


def test_label_maps_give_class_frequencies_and_inverted_masks_swap(tmp_path):
    labels = np.zeros((40, 40), np.uint8)
    labels[:10] = 1
    labels[30:] = 2
    fp = compute_fingerprint(find_pairs(_dataset(tmp_path / "l", [labels] * 2)).pairs)
    assert fp.classes == {0: 0.5, 1: 0.25, 2: 0.25}
    mask = _blob()
    inverted = compute_fingerprint(find_pairs(_dataset(tmp_path / "i", [255 - mask])).pairs, invert_masks=True)
    assert inverted.foreground_fraction.median == pytest.approx(float((mask > 0).mean()), abs=1e-4)


def test_fingerprint_is_deterministic_and_samples(tmp_path):
    rng = np.random.default_rng(3)
    masks = [_blob(radius=int(r)) for r in rng.integers(5, 40, 12)]
    pairs = find_pairs(_dataset(tmp_path / "d", masks)).pairs
    a = compute_fingerprint(pairs, max_images=5, seed=1).to_dict()
    b = compute_fingerprint(list(reversed(pairs)), max_images=5, seed=1, workers=1).to_dict()
    assert a == b and a["n_sampled"] == 5 and a["n_pairs"] == 12


def test_dicom_ct_reports_modality_spacing_and_hounsfield_units(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(3):
        hu = rng.integers(-1000, 400, (32, 32)).astype(np.int16)
        ct_slice(tmp_path / "images" / f"s{i}.dcm", (hu + 1024).astype(np.int16), z=float(i), spacing=0.7,
                 window=(40, 400))
        mask = np.zeros((32, 32), np.uint8)
        mask[8:20, 8:20] = 255
        save(tmp_path / "masks" / f"s{i}.png", mask)
    fp = compute_fingerprint(find_pairs(tmp_path).pairs)
    assert fp.modality == "CT" and fp.spacing_mm == (0.7, 0.7) and fp.channels == 1
    assert -1000 <= fp.modality_values.p0_5 < -900 and 300 < fp.modality_values.p99_5 <= 400


def test_unreadable_pairs_are_named_and_left_out(tmp_path):
    root = _dataset(tmp_path / "d", [_blob()] * 2)
    broken = root / "images" / "case1.png"
    broken.write_bytes(b"not an image")
    fp = compute_fingerprint([Pair("case0", root / "images/case0.png", root / "masks/case0.png"),
                              Pair("case1", broken, root / "masks/case1.png")])
    assert fp.n_sampled == 2 and fp.height.n == 1
    assert len(fp.unreadable) == 1 and "case1.png" in fp.unreadable[0]


def test_cli_prints_and_writes_json(tmp_path):
    root = _dataset(tmp_path / "d", [_lines(width=3)] * 2)
    out = tmp_path / "fp.json"
    result = CliRunner().invoke(app, ["data", "fingerprint", str(root), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "structure width (px, medial axis): 3" in result.output
    saved = json.loads(out.read_text())
    assert saved["structure_width"]["median"] == 3 and saved["classes"]["1"] > 0


@pytest.mark.realdata
def test_real_datasets_separate_thin_from_large_structures(shared_data):
    drive = compute_fingerprint(find_pairs(shared_data / "drive_train").pairs)
    isic = compute_fingerprint(find_pairs(shared_data / "isic2018_256").pairs, max_images=60)
    assert drive.n_pairs == 20 and drive.structure_width_rel.median < 0.01
    assert isic.structure_width_rel.median > 0.05
    assert isic.modality == drive.modality == "rgb"
