"""The field cases in ../shared/field-cases (each built by its build.py in tmp_path), and for each one a
synthetic test of the same kind of fault that needs no shared data."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medseg.convert import convert_dicom, convert_labels
from medseg.data.check import check_pairs
from medseg.data.layouts import find_pairs
from medseg.data.readers import read_pair_image, read_pair_mask
from medseg.errors import DataError
from medseg.io.formats import read_image
from medseg.io.images import image_size, read_mask
from tests._paths import ROOT, SHARED

FIELD = SHARED / "field-cases"


def build(case: str, out: Path) -> Path:
    """Run ``case``'s build.py into ``out`` (skip when the field cases are not here)."""
    script = FIELD / case / "build.py"
    if not script.is_file():
        pytest.skip(f"field case {case} not available at {FIELD}")
    subprocess.run([sys.executable, str(script), str(out)], check=True, capture_output=True, timeout=120)
    return out


def kinds(report) -> dict[str, int]:
    out: dict[str, int] = {}
    for p in report.problems:
        out[p.kind] = out.get(p.kind, 0) + 1
    return out


# ------------------------------------------------------------------------------- 01 EXIF orientation
def test_case01_exif_orientation(tmp_path, tiny_run):
    root = build("01-exif-orientation", tmp_path / "case")
    report = check_pairs(find_pairs(root))
    assert len(report.good) == 2 and report.ok
    assert kinds(report) == {"exif-rotated": 2}
    for pair in report.good:
        image, mask = read_pair_image(pair), read_pair_mask(pair)
        assert image.shape[:2] == mask.shape == (64, 48)
        bright = image[..., 0] > 128
        assert (bright & (mask > 0)).sum() / (bright | (mask > 0)).sum() > 0.9
    result = convert_labels(root / "labelme", root / "images", tmp_path / "m")
    (written,) = result.written
    want = np.zeros((64, 48), np.uint8)
    want[4:20, 4:20] = 255
    np.testing.assert_array_equal(read_mask(written) * 255, want)
    from medseg.inference.predictor import Predictor

    out = Predictor.load(tiny_run).predict_folder(root / "images", tmp_path / "p", overlay=True, progress=False)
    assert len(out.written) == 2
    for name in ("ISIC_0000901", "ISIC_0000902"):
        assert Image.open(tmp_path / "p" / f"{name}.png").size == (48, 64)
        assert Image.open(tmp_path / "p" / f"{name}_overlay.png").size == (48, 64)


_TO_STORED = {  # orientation -> how the camera stored the shown picture (inverse of the viewer's transform)
    2: [Image.Transpose.FLIP_LEFT_RIGHT], 3: [Image.Transpose.ROTATE_180], 4: [Image.Transpose.FLIP_TOP_BOTTOM],
    5: [Image.Transpose.TRANSPOSE], 6: [Image.Transpose.ROTATE_90], 7: [Image.Transpose.TRANSVERSE],
    8: [Image.Transpose.ROTATE_270]}


@pytest.mark.parametrize("orientation", range(1, 9))
def test_all_eight_exif_orientations_read_as_shown(tmp_path, orientation):
    shown = np.zeros((30, 20, 3), np.uint8)
    shown[2:8, 3:6] = 255  # asymmetric: top-left bar
    shown[25, 15] = 128
    stored = Image.fromarray(shown)
    for t in _TO_STORED.get(orientation, []):
        stored = stored.transpose(t)
    exif = Image.Exif()
    exif[0x0112] = orientation
    for ext in (".png", ".tif"):
        path = tmp_path / f"o{orientation}{ext}"
        stored.save(path, exif=exif.tobytes())
        np.testing.assert_array_equal(read_image(path), shown)
        assert image_size(path) == (20, 30)


# ------------------------------------------------------------------------ 02 several masks per image
def test_case02_busi_several_masks_and_class_folders(tmp_path):
    root = build("02-several-masks-per-image", tmp_path / "case") / "Dataset_BUSI_with_GT"
    report = check_pairs(find_pairs(root / "benign"))
    assert len(report.good) == 3 and report.ok and kinds(report) == {"merged-masks": 1}
    (four,) = [p for p in report.good if p.case_id == "benign (4)"]
    assert [p.name for p in (four.mask, *four.extra_masks)] == ["benign (4)_mask.png", "benign (4)_mask_1.png"]
    assert read_pair_mask(four).sum() == 200  # lesion A and lesion B
    everything = check_pairs(find_pairs(root))
    assert len(everything.good) == 4 and everything.ok
    assert "class folders" in everything.index.layout
    assert kinds(everything) == {"merged-masks": 1, "empty-mask": 1}


def _square(path: Path, r0: int, value: int = 255, size: int = 32) -> Path:
    m = np.zeros((size, size), np.uint8)
    m[r0 : r0 + 4, 4:8] = value
    Image.fromarray(m).save(path)
    return path


def test_numbered_masks_merge_in_separate_folders_and_disagreeing_labels_are_refused(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    for stem in ("a", "b", "case_1", "case"):
        Image.fromarray(np.full((32, 32, 3), 90, np.uint8)).save(tmp_path / "images" / f"{stem}.png")
    _square(tmp_path / "masks" / "a_mask.png", 0)
    _square(tmp_path / "masks" / "a_mask_1.png", 10)
    _square(tmp_path / "masks" / "a_mask_2.png", 20)
    _square(tmp_path / "masks" / "b_mask.png", 0, value=1)
    _square(tmp_path / "masks" / "b_mask_1.png", 2, value=2)  # overlaps with another label: ambiguous
    _square(tmp_path / "masks" / "case_mask.png", 0)
    _square(tmp_path / "masks" / "case_1_mask.png", 10)  # an image of its own, not a second mask of "case"
    report = check_pairs(find_pairs(tmp_path))
    by_id = {p.case_id: p for p in find_pairs(tmp_path).pairs}
    assert len(by_id["a"].extra_masks) == 2 and read_pair_mask(by_id["a"]).sum() == 48
    assert by_id["case"].extra_masks == () and by_id["case_1"].extra_masks == ()
    (bad,) = [p for p in report.problems if p.fatal]
    assert bad.case_id == "b" and "b_mask.png" in bad.message and "b_mask_1.png" in bad.message


# ------------------------------------------------------------------------------ 03 grey 16-bit
def test_case03_sixteen_bit_gives_the_same_mask(tmp_path, tiny_run):
    from medseg.inference.predictor import Predictor

    root = build("03-grey-16bit", tmp_path / "case")
    Predictor.load(tiny_run).predict_folder(root / "in", tmp_path / "p", progress=False)
    masks = {p.stem: np.asarray(Image.open(p)) for p in (tmp_path / "p").glob("*.png")}
    assert len(masks) == 4
    for name in ("b_RGB", "c_LA", "d_I16"):
        assert (masks[name] == masks["a_L"]).mean() >= 0.999


def test_more_than_8_bits_scaled_by_bit_depth_the_same_for_every_image(tmp_path):
    rng = np.random.default_rng(3)
    g = rng.integers(0, 256, (20, 30)).astype(np.uint8)
    Image.fromarray(g).save(tmp_path / "g8.png")
    Image.fromarray(g.astype(np.uint16) * 257).save(tmp_path / "g16.png")
    Image.fromarray(g.astype(np.uint16) * 257).save(tmp_path / "g16.tif")
    Image.fromarray(g.astype(np.float32) / 255).save(tmp_path / "f01.tif")
    for name in ("g16.png", "g16.tif", "f01.tif"):
        np.testing.assert_array_equal(read_image(tmp_path / name), read_image(tmp_path / "g8.png"))
    dim = (g.astype(np.uint16) * 257 // 4).astype(np.uint16)  # a darker image of the same study stays darker
    Image.fromarray(dim).save(tmp_path / "dim.png")
    assert read_image(tmp_path / "dim.png").max() <= 64


# --------------------------------------------------------------------------- 04 cropped label volume
def _masks(folder: Path) -> np.ndarray:
    return np.stack([np.asarray(Image.open(folder / f"slice{k}.png")) for k in range(3)])


def test_case04_cropped_label_volume_lands_on_its_slices(tmp_path):
    root = build("04-cropped-label-volume", tmp_path / "case")
    result = convert_labels(root / "labels" / "crop.seg.nrrd", root / "ct", tmp_path / "crop")
    assert len(result.written) == 3 and not result.failed
    np.testing.assert_array_equal(_masks(tmp_path / "crop"), np.load(root / "expected_crop.npy"))
    assert any("empty masks" in n for n in result.notes)
    for name in ("full.nrrd", "lps.nii.gz", "ras.nii.gz"):
        convert_labels(root / "labels" / name, root / "ct", tmp_path / name)
        np.testing.assert_array_equal(_masks(tmp_path / name), np.load(root / "expected_bars.npy"))
    off = convert_labels(root / "labels" / "half_off.nrrd", root / "ct", tmp_path / "off")
    assert not off.written and "between two slices" in off.failed[0][1]


def test_cropped_volume_in_a_dataset_gives_empty_masks_outside_its_extent(tmp_path):
    import SimpleITK as sitk

    from tests._dicom_factories import ct_series

    ct_series(tmp_path / "data" / "images" / "case7", n=5, size=16)  # z = 10, 12.5 ... 20; spacing 0.5 at (-10,-20)
    vol = sitk.GetImageFromArray(np.ones((2, 3, 4), np.uint8))  # z, y, x: 2 slices of 3 rows x 4 columns
    vol.SetSpacing((0.5, 0.5, 2.5))
    vol.SetOrigin((-10 + 0.5 * 6, -20 + 0.5 * 5, 12.5))  # columns 6..9, rows 5..7, slices at z 12.5 and 15
    (tmp_path / "data" / "labels").mkdir(parents=True)
    sitk.WriteImage(vol, str(tmp_path / "data" / "labels" / "case7.nrrd"))
    report = check_pairs(find_pairs(tmp_path / "data"))
    assert len(report.good) == 5 and report.ok
    sums = sorted(int(read_pair_mask(p).sum()) for p in report.good)
    assert sums == [0, 0, 0, 12, 12]
    result = convert_labels(tmp_path / "data" / "labels", tmp_path / "data" / "images", tmp_path / "m")
    assert len(result.written) == 5
    assert sorted(int((np.asarray(Image.open(p)) > 0).sum()) for p in result.written) == [0, 0, 0, 12, 12]


# ---------------------------------------------------------------------------- 05 missing decoder
def test_case05_missing_decoder_named_with_the_package(tmp_path, shared_data):
    script = FIELD / "05-missing-dicom-decoder" / "without_plugins.py"
    if not script.is_file():
        pytest.skip("field case 05 not available")
    (tmp_path / "in").mkdir()
    shutil.copy(shared_data / "dicom" / "single" / "JPEG-LL.dcm", tmp_path / "in")
    shutil.copy(shared_data / "dicom" / "single" / "CT_small.dcm", tmp_path / "in")
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    out = subprocess.run([sys.executable, str(script), "libjpeg,gdcm", "--", "convert", "dicom", str(tmp_path / "in"),
                          str(tmp_path / "out")], capture_output=True, text=True, env=env, timeout=300)
    text = out.stdout + out.stderr
    assert out.returncode == 0 and "Traceback" not in text and "wrote 1 image to" in text
    assert ("JPEG-LL.dcm: JPEG Lossless (1.2.840.10008.1.2.4.70) needs a decoder that is not installed: "
            "pip install pylibjpeg-libjpeg (or python-gdcm)") in text
    assert "corrupt" not in text


def test_every_compressed_transfer_syntax_names_its_decoder_when_missing(tmp_path, monkeypatch):
    from pydicom.encaps import encapsulate
    from pydicom.pixels.decoders.base import Decoder

    from medseg.io.dicom import decode, read_dataset
    from medseg.io.dicom_codecs import COMPRESSED
    from tests._dicom_factories import ct_slice

    monkeypatch.setattr(Decoder, "is_available", property(lambda self: False))
    import pydicom

    for ts, (name, packages) in COMPRESSED.items():
        path = ct_slice(tmp_path / f"{ts}.dcm", np.zeros((8, 8), np.int16))
        ds = pydicom.dcmread(path)
        ds.file_meta.TransferSyntaxUID = ts
        ds.PixelData = encapsulate([b"\xff\xd8 not really compressed \xff\xd9"])
        ds["PixelData"].VR = "OB"
        ds.save_as(path)
        ds = read_dataset(path)
        with pytest.raises(DataError) as err:
            decode(ds, path)
        message = str(err.value)
        if ts == "1.2.840.10008.1.2.5":  # pydicom's own RLE decoder is never missing; the data is bad
            assert path.name in message
            continue
        assert message.startswith(f"{path}: {name} ({ts}) needs a decoder that is not installed: pip install "
                                  f"{packages[0]}"), message
        assert "corrupt" not in message


# --------------------------------------------------------------------------------- 07 file modes
@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_case07_written_files_follow_the_umask(tmp_path, umask):
    from medseg.io.files import write_bytes_atomic, write_text_atomic
    from medseg.io.images import write_png

    old = os.umask(umask)
    try:
        write_png(tmp_path / "m.png", np.zeros((4, 4), np.uint8))
        write_text_atomic(tmp_path / "r.json", "{}")
        write_bytes_atomic(tmp_path / "b.bin", b"x")
    finally:
        os.umask(old)
    for name in ("m.png", "r.json", "b.bin"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o666 & ~umask


# -------------------------------------------------------------------------- 08 two files, one output
def test_case08_two_labelme_files_for_one_image_are_merged_and_said(tmp_path):
    root = build("08-labelme-two-files-one-image", tmp_path / "case")
    result = convert_labels(root / "labelme", root / "images", tmp_path / "m")
    assert [p.name for p in result.written] == ["photo1.png"] and all(p.exists() for p in result.written)
    mask = read_mask(result.written[0])
    assert mask[10, 10] == 1 and mask[30, 50] == 1  # both polygons
    (note,) = [n for n in result.notes if "photo1.json" in n]
    assert "photo1 (copy).json" in note and "merged" in note


def test_two_dicom_files_with_one_output_name_are_not_overwritten(tmp_path):
    from tests._dicom_factories import ct_slice

    ct_slice(tmp_path / "in" / "scan.dcm", np.full((8, 8), 1000, np.int16))
    second = ct_slice(tmp_path / "in" / "tmp.dcm", np.full((8, 8), 2000, np.int16))
    second.rename(tmp_path / "in" / "scan")  # extension-less DICOM: the same frame name "scan"
    result = convert_dicom(tmp_path / "in", tmp_path / "out")
    assert [p.name for p in result.written] == ["scan.png"]
    (failed,) = result.failed
    assert "scan.dcm" in failed[1] and str(tmp_path / "in" / "scan") in failed[1]


def test_predicting_two_dicom_files_with_one_output_name_reports_the_second(tmp_path):
    from medseg.inference.dicom_prediction import predict_dicom
    from tests._dicom_factories import FakePredictor, ct_slice

    ct_slice(tmp_path / "in" / "scan.dcm", np.full((8, 8), 1000, np.int16))
    ct_slice(tmp_path / "in" / "tmp.dcm", np.full((8, 8), 2000, np.int16)).rename(tmp_path / "in" / "scan")
    result = predict_dicom(FakePredictor(), tmp_path / "in", tmp_path / "out", progress=False)
    assert [p.name for p in result.written] == ["scan.png"]
    ((path, message),) = result.failed
    assert "would both be written as scan.png" in message and path.parent == tmp_path / "in"


def test_labelme_merge_keeps_the_file_list_honest(tmp_path):
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(tmp_path / "x.png")
    doc = {"imagePath": "x.png", "imageHeight": 20, "imageWidth": 20,
           "shapes": [{"label": "a", "points": [[1, 1], [5, 1], [5, 5]], "shape_type": "polygon"}]}
    (tmp_path / "l").mkdir()
    for name in ("x.json", "x_v2.json", "x_v3.json"):
        (tmp_path / "l" / name).write_text(json.dumps(doc))
    result = convert_labels(tmp_path / "l", tmp_path, tmp_path / "out")
    assert len(result.written) == len(set(result.written)) == 1
