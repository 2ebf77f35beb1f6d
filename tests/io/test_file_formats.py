"""The file-format registry (medseg.io.formats): built-in kinds, and a new format added in one place."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medseg.data.check import check_pairs
from medseg.data.dataset import SegmentationDataset
from medseg.data.layouts import find_pairs
from medseg.data.readers import TargetSpec, pair_image_size, read_pair_mask, read_pair_target
from medseg.errors import DataError
from medseg.inference.predictor import list_images
from medseg.io import formats
from medseg.io.formats import FileFormat, image_format, is_mask_file, mask_format, read_image, register


def _npy(path: Path) -> np.ndarray:
    return np.load(path, allow_pickle=False)


@pytest.fixture()
def raw_formats():
    """A made-up image kind (``.rawimg``: an .npy of HxWx3 uint8) and label kind (``.rawlbl``: HxW
    uint8 labels), registered for one test."""
    fmts = [FileFormat("rawimg", (".rawimg",), "raw image", read_image=lambda path, frame, window: _npy(path)),
            FileFormat("rawlbl", (".rawlbl",), "raw label map", read_labels=_npy)]
    for fmt in fmts:
        register(fmt)
    yield fmts
    for fmt in fmts:
        formats.unregister(fmt.name)


def _save(path: Path, array: np.ndarray) -> Path:
    with path.open("wb") as f:
        np.save(f, array)
    return path


def _raw_dataset(root: Path, n: int = 3) -> dict[str, np.ndarray]:
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rng = np.random.default_rng(0)
    truths = {}
    for i in range(n):
        image = rng.integers(0, 255, (40, 60, 3), dtype=np.uint8)
        labels = np.zeros((40, 60), np.uint8)
        labels[5:20 + i, 10:30] = 1
        _save(root / "images" / f"case{i}.rawimg", image)
        _save(root / "masks" / f"case{i}_mask.rawlbl", labels)
        truths[f"case{i}"] = labels
    (root / "images" / "notes.txt").write_text("not an image")
    return truths


def test_a_registered_format_goes_through_discovery_checks_and_the_dataset(raw_formats, tmp_path):
    truths = _raw_dataset(tmp_path)
    index = find_pairs(tmp_path)
    assert [p.case_id for p in index.pairs] == ["case0", "case1", "case2"]
    assert [p.mask.name for p in index.pairs] == ["case0_mask.rawlbl", "case1_mask.rawlbl", "case2_mask.rawlbl"]
    report = check_pairs(index)
    assert [p.case_id for p in report.good] == ["case0", "case1", "case2"], report.problems
    pair = index.pairs[2]
    assert pair_image_size(pair) == (60, 40)
    np.testing.assert_array_equal(read_pair_mask(pair), truths["case2"])
    np.testing.assert_array_equal(read_pair_target(pair, TargetSpec()), truths["case2"])
    dataset = SegmentationDataset(index.pairs, 32, target=TargetSpec())
    image, mask = dataset[1]
    assert tuple(image.shape) == (3, 32, 32) and tuple(mask.shape[-2:]) == (32, 32)
    assert 0 < float(mask.float().mean()) < 1  # the foreground survived letterboxing
    assert [p.name for p in list_images(tmp_path / "images")] == ["case0.rawimg", "case1.rawimg", "case2.rawimg"]


def test_without_the_registration_those_files_are_not_images(tmp_path):
    _raw_dataset(tmp_path)
    with pytest.raises(DataError):
        find_pairs(tmp_path)
    assert mask_format(tmp_path / "masks" / "case0_mask.rawlbl") is None


def test_a_format_name_is_registered_once_and_needs_a_reader():
    with pytest.raises(ValueError, match="registered twice"):
        register(FileFormat("image", (".x",), "x", read_labels=_npy))
    with pytest.raises(ValueError, match="no reader"):
        register(FileFormat("nothing", (".x",), "x"))


def test_builtin_kinds_by_ending_and_content(tmp_path):
    png = tmp_path / "a.PNG"
    Image.fromarray(np.zeros((4, 6, 3), np.uint8)).save(png, format="PNG")
    assert image_format(png).name == "image" and mask_format(png).name == "image"
    assert read_image(png).shape == (4, 6, 3)
    assert image_format(tmp_path / "x.dcm").name == "dicom"
    assert mask_format(tmp_path / "x.nii.gz").name == "volume" and mask_format(tmp_path / "x.nrrd").name == "volume"
    assert mask_format(tmp_path / "x.dcm") is None  # not a SEG (not even a file)
    json_file = tmp_path / "a.json"
    json_file.write_text('{"other": 1}')
    assert mask_format(json_file).name == "labelme" and not is_mask_file(json_file)  # not LabelMe content
    json_file.write_text('{"shapes": [], "imageHeight": 4, "imageWidth": 6}')
    assert is_mask_file(json_file)
    assert formats.strip_suffix("case7.nii.gz") == "case7" and formats.strip_suffix("Case7.PNG") == "Case7"
    assert "a DICOM SEG" in formats.mask_format_names()
