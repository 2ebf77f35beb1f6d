"""Reading DICOM: every shared file, Hounsfield units, windowing, colour, enhanced objects, series, errors."""

from __future__ import annotations

import logging

import numpy as np
import pydicom
import pytest

from medseg.errors import ConfigError, DataError
from medseg.io.dicom import read_dicom_values
from medseg.io.dicom_series import scan_dicom, series_tag
from medseg.io.formats import read_image
from medseg.io.windowing import Window, apply_window, parse_window
from tests._dicom_factories import (
    PATIENT_ID,
    PATIENT_NAME,
    ct_series,
    ct_slice,
    enhanced_ct,
    secondary_capture,
    structured_report,
)

SEG = "is a DICOM Segmentation (SEG), not an image"
# Every file in ../shared/data/dicom: (rows, columns, frames, modality-value range or None for colour),
# or the start of the error message for files that must be refused. What each file taught us is in
# the comments (and in the issue note).
EXPECTED: dict[str, tuple | str] = {
    # 4 slices, instance numbers 18/180/181/182 and a 200 mm gap: sorted by position, not name
    "ct2_series_16px/17106": (16, 16, 1, (-981, 77)),
    "ct2_series_16px/17136": (16, 16, 1, (77, 1360)),
    "ct2_series_16px/17166": (16, 16, 1, (991, 1489)),
    "ct2_series_16px/17196": (16, 16, 1, (498, 1399)),
    # Enhanced MR stripped of its functional groups: no geometry, no window -> automatic window
    "multiframe/emri_small.dcm": (64, 64, 10, (0, 425)),
    "multiframe/emri_small_RLE.dcm": (64, 64, 10, (0, 425)),
    "multiframe/emri_small_big_endian.dcm": (64, 64, 10, (0, 425)),  # decoded as >u2: made native
    "multiframe/emri_small_jpeg_2k_lossless.dcm": (64, 64, 10, (0, 425)),
    "multiframe/emri_small_jpeg_ls_lossless.dcm": (64, 64, 10, (0, 425)),
    "multiframe/examples_ybr_color.dcm": (240, 320, 30, None),  # YBR_FULL_422 JPEG -> RGB
    "seg/highdicom/ct_image.dcm": (128, 128, 1, (-896, 1167)),  # the same instance as CT_small.dcm
    **{f"seg/highdicom/seg_image_ct_{n}.dcm": SEG for n in
       ("binary", "binary_fractional", "binary_overlap", "binary_single_frame", "true_fractional")},
    **{f"seg/pydicom_dcmqi/liver{n}.dcm": SEG for n in
       ("", "_1frame", "_deflate", "_expb", "_j2k", "_nonbyte_aligned", "_nonbyte_aligned_deflate",
        "_nonbyte_aligned_j2k", "_nonbyte_aligned_rle", "_rle")},
    # 14-bit signed CT; J2KI is lossy (UNCI is its decompressed copy), J2KR declares 16 bits stored
    "single/693_J2KI.dcm": (512, 512, 1, (-3995, 1812)),
    "single/693_J2KR.dcm": (512, 512, 1, (-3024, 1468)),
    "single/693_UNCI.dcm": (512, 512, 1, (-3995, 1812)),
    "single/693_UNCR.dcm": (512, 512, 1, (-3024, 1468)),
    "single/CT_small.dcm": (128, 128, 1, (-896, 1167)),  # no window in the file -> automatic
    "single/JPEG-LL.dcm": (1024, 256, 1, (0, 278)),
    "single/JPEG2000.dcm": (1024, 256, 1, (-30, 245)),
    "single/JPEG2000_UNC.dcm": (1024, 256, 1, (-30, 245)),
    "single/JPGExtended.dcm": (1024, 256, 1, (0, 264)),  # 12-bit JPEG extended (process 4)
    "single/MR2_J2KI.dcm": (1024, 1024, 1, (0, 2264.47)),  # MR with a rescale slope of 3.77
    "single/MR2_J2KR.dcm": (1024, 1024, 1, (0, 2245.6)),
    "single/MR2_UNCI.dcm": (1024, 1024, 1, (0, 2264.47)),
    "single/MR2_UNCR.dcm": (1024, 1024, 1, (0, 2245.6)),
    "single/MR_small.dcm": (64, 64, 1, (127, 2145)),
    "single/MR_small_RLE.dcm": (64, 64, 1, (127, 2145)),
    "single/MR_small_bigendian.dcm": (64, 64, 1, (127, 2145)),
    "single/MR_small_implicit.dcm": (64, 64, 1, (127, 2145)),
    "single/MR_small_jp2klossless.dcm": (64, 64, 1, (127, 2145)),
    "single/MR_small_jpeg_ls_lossless.dcm": (64, 64, 1, (127, 2145)),
    "single/RG3_J2KI.dcm": (1760, 1760, 1, (0, 1023)),  # MONOCHROME1 CR: inverted
    "single/RG3_J2KR.dcm": (1760, 1760, 1, (0, 1023)),
    "single/US1_J2KR.dcm": (480, 640, 1, None),  # YBR_RCT in JPEG 2000 -> RGB
    "single/US1_UNCR.dcm": (480, 640, 1, None),
    # a sequence encoded as UN, invalid (hash) UIDs, no Frame of Reference: decodes fine (JPEG lossless)
    "single/bad_sequence.dcm": (512, 512, 1, (-1011, 1243)),
}


@pytest.fixture(scope="module")
def dicom_dir(shared_data):
    folder = shared_data / "dicom"
    if not folder.is_dir():
        pytest.skip(f"no DICOM data in {folder}")
    return folder


def test_the_expectations_cover_every_shared_file(dicom_dir):
    on_disk = {p.relative_to(dicom_dir).as_posix() for p in dicom_dir.rglob("*") if p.is_file()
               and not p.name.startswith(".") and p.name != "README.md"}
    assert on_disk == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_shared_file_decodes_or_fails_clearly(dicom_dir, name):
    path, expected = dicom_dir / name, EXPECTED[name]
    if isinstance(expected, str):
        with pytest.raises(DataError, match=expected.replace("(", r"\(").replace(")", r"\)")) as err:
            read_image(path)
        assert str(path) in str(err.value)
        return
    rows, cols, frames, value_range = expected
    last = read_image(path, frame=frames if frames > 1 else None)
    assert last.shape == (rows, cols, 3) and last.dtype == np.uint8
    assert len(scan_dicom(path).frames) == frames
    if value_range is None:
        assert last.max() > last.min(), "a decoded colour frame must not be constant"
        return
    values = read_dicom_values(path)
    assert values.min() == pytest.approx(value_range[0], abs=0.01)
    assert values.max() == pytest.approx(value_range[1], abs=0.01)


def test_hounsfield_units_of_ct_small_match_pydicom(dicom_dir):
    from pydicom.pixels import apply_modality_lut

    ds = pydicom.dcmread(dicom_dir / "single/CT_small.dcm")
    reference = apply_modality_lut(ds.pixel_array, ds)
    hu = read_dicom_values(dicom_dir / "single/CT_small.dcm")
    known = {(0, 0): -849, (64, 64): 904, (10, 100): 203, (127, 127): -115, (50, 30): -48}
    for (y, x), value in known.items():
        assert hu[y, x] == value == reference[y, x]
    np.testing.assert_array_equal(hu, reference)


@pytest.mark.parametrize("group", [("single/MR_small", ["_RLE", "_bigendian", "_implicit", "_jp2klossless",
                                                        "_jpeg_ls_lossless"]),
                                   ("multiframe/emri_small", ["_RLE", "_big_endian", "_jpeg_2k_lossless",
                                                              "_jpeg_ls_lossless"]),
                                   ("single/693", ["_UNCR", "_J2KR"]), ("single/MR2", ["_UNCR", "_J2KR"]),
                                   ("single/US1", ["_UNCR", "_J2KR"])])
def test_lossless_encodings_decode_to_identical_pixels(dicom_dir, group):
    stem, variants = group
    first = dicom_dir / f"{stem}{variants[0] if stem.endswith(('693', 'MR2', 'US1')) else ''}.dcm"
    frames = len(scan_dicom(first).frames)
    for variant in variants:
        other = dicom_dir / f"{stem}{variant}.dcm"
        for frame in ([None] if frames == 1 else [1, frames]):
            np.testing.assert_array_equal(read_image(other, frame=frame), read_image(first, frame=frame))


def test_monochrome1_is_inverted_and_ybr_becomes_rgb(dicom_dir):
    cr = read_image(dicom_dir / "single/RG3_J2KR.dcm")
    assert cr[0, 0, 0] > 200  # air (stored 0) is white in MONOCHROME1, shown inverted: bright
    us = read_image(dicom_dir / "multiframe/examples_ybr_color.dcm", frame=15)
    assert (np.abs(us[..., 0].astype(int) - us[..., 2]) > 20).any()  # real colour, not grey


# ------------------------------------------------------------------------------------ windowing
def test_window_specs_are_parsed_and_bad_ones_refused():
    assert parse_window(None) is None and parse_window("file") is None and parse_window("auto") == "auto"
    assert parse_window("Soft-Tissue") == "soft_tissue" and parse_window("-600,1500") == (-600.0, 1500.0)
    for bad in ("lungs", "40", "40,0", "a,b"):
        with pytest.raises(ConfigError, match="window"):
            parse_window(bad)


def test_linear_window_follows_the_dicom_formula():
    hu = np.array([-1000, -160, 40, 240, 3000], np.float32)
    out = apply_window(hu, Window(40, 400, "preset:soft_tissue"))
    assert out.tolist() == [0, 0, 128, 255, 255]


def test_presets_manual_auto_and_file_windows_on_a_ct(tmp_path):
    hu = np.linspace(-1000, 1000, 64 * 64).reshape(64, 64).astype(np.int16)
    path = ct_slice(tmp_path / "ct.dcm", hu + 1024, window=(-600, 1500))
    lung = read_image(path, window="lung")[..., 0]
    np.testing.assert_array_equal(read_image(path)[..., 0], lung)  # the file's window is lung
    bone = read_image(path, window="bone")[..., 0]
    manual = read_image(path, window="400,1800")[..., 0]
    np.testing.assert_array_equal(bone, manual)
    assert (lung > bone).mean() > 0.5
    auto = read_image(path, window="auto")[..., 0]
    assert auto.min() == 0 and auto.max() == 255


def test_enhanced_ct_uses_per_frame_rescale_positions_and_shared_window(tmp_path):
    frames = np.full((3, 8, 8), 100, np.int16)
    path = enhanced_ct(tmp_path / "enh.dcm", frames, slopes=[1, 2, 1], intercepts=[-100, -200, 0],
                       z=[5.0, 0.0, 10.0])
    assert [read_dicom_values(path, frame=f)[0, 0] for f in (1, 2, 3)] == [0, 0, 100]
    (series,) = scan_dicom(path).series
    assert [f.frame for f in series.frames] == [2, 1, 3]  # sorted along the normal
    assert series.frames[0].geometry.spacing == (0.7, 0.7)
    assert read_image(path, frame=3)[0, 0, 0] == 166  # HU 100 in the shared 40/400 window


def test_monochrome1_palette_rgb_and_bit_depths(tmp_path):
    ramp8 = np.tile(np.arange(0, 256, 4, dtype=np.uint8), (4, 1))
    m1 = read_image(secondary_capture(tmp_path / "m1.dcm", ramp8, "MONOCHROME1",
                                      WindowCenter=127.5, WindowWidth=256))
    assert m1[0, 0, 0] == 255 and m1[0, -1, 0] < 10
    rgb = np.zeros((4, 6, 3), np.uint8)
    rgb[..., 0] = 200
    assert read_image(secondary_capture(tmp_path / "rgb.dcm", rgb, "RGB"))[0, 0].tolist() == [200, 0, 0]
    lut = np.zeros(256, np.uint16)
    lut[1] = 0xFFFF
    pal = read_image(secondary_capture(
        tmp_path / "pal.dcm", np.array([[0, 1], [1, 0]], np.uint8), "PALETTE COLOR",
        RedPaletteColorLookupTableDescriptor=[256, 0, 16], GreenPaletteColorLookupTableDescriptor=[256, 0, 16],
        BluePaletteColorLookupTableDescriptor=[256, 0, 16], RedPaletteColorLookupTableData=lut.tobytes(),
        GreenPaletteColorLookupTableData=np.zeros(256, np.uint16).tobytes(),
        BluePaletteColorLookupTableData=np.zeros(256, np.uint16).tobytes()))
    assert pal[0, 1].tolist() == [255, 0, 0] and pal[0, 0].tolist() == [0, 0, 0]
    twelve = np.array([[0, 4095], [2048, 1024]], np.uint16)
    values = read_dicom_values(secondary_capture(tmp_path / "u12.dcm", twelve, "MONOCHROME2", BitsStored=12))
    assert values.tolist() == [[0, 4095], [2048, 1024]]
    signed = np.array([[-2000, 0], [1000, 30000]], np.int16)
    assert read_dicom_values(ct_slice(tmp_path / "s16.dcm", signed, slope=None)).tolist() == signed.tolist()


# ------------------------------------------------------------------------------------ series and errors
def test_series_are_sorted_by_position_not_by_instance_number_or_name(tmp_path):
    paths = ct_series(tmp_path / "series", n=5)
    (series,) = scan_dicom(tmp_path).series
    zs = [f.geometry.position[2] for f in series.frames]
    assert zs == sorted(zs) and len(set(zs)) == 5
    assert [f.instance_number for f in series.frames] == [5, 4, 3, 2, 1]
    assert {f.path for f in series.frames} == set(paths)
    assert series.tag == series_tag(series.uid) and len(series.tag) == 10


def test_broken_files_give_one_sentence_each_and_the_folder_goes_on(tmp_path):
    good = ct_series(tmp_path, n=2)
    truncated = ct_slice(tmp_path / "truncated.dcm", np.zeros((16, 16), np.int16))
    truncated.write_bytes(truncated.read_bytes()[:-300])
    (tmp_path / "notdicom.dcm").write_text("hello, not a DICOM file\n")
    structured_report(tmp_path / "report.dcm")
    scan = scan_dicom(tmp_path)
    assert len(scan.frames) == 3  # the truncated file's header is fine; its pixels fail when read
    failed = {p.name: msg for p, msg in scan.failed}
    assert set(failed) == {"notdicom.dcm", "report.dcm"}
    assert "is not a DICOM file" in failed["notdicom.dcm"]
    assert "Basic Text SR" in failed["report.dcm"] and "holds no pixel data" in failed["report.dcm"]
    with pytest.raises(DataError, match="truncated.dcm.*could not be decoded.*truncated or corrupt"):
        read_image(truncated)
    with pytest.raises(DataError, match="has 1 frame"):
        read_image(good[0], frame=2)


def test_identifiers_never_reach_messages_or_logs(tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    path = ct_slice(tmp_path / "a.dcm", np.zeros((4, 4), np.int16))
    bad = tmp_path / "b.dcm"
    bad.write_bytes(path.read_bytes()[:-10])
    ds = pydicom.dcmread(path)
    ds.PatientName = "DOE^JOHN^^^" + "x" * 70  # invalid (too long): pydicom would warn, quoting it
    ds.save_as(tmp_path / "c.dcm")
    messages = []
    for p in (bad, tmp_path / "c.dcm"):
        try:
            read_image(p)
        except DataError as err:
            messages.append(str(err))
    messages += [m for _, m in scan_dicom(tmp_path).failed]
    text = " ".join(messages) + caplog.text
    assert messages and PATIENT_NAME not in text and "DOE" not in text and PATIENT_ID not in text


def test_voi_lut_and_deflated_transfer_syntax(tmp_path):
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    lut = Dataset()
    lut.LUTDescriptor = [256, 0, 8]
    lut.add_new("LUTData", "US", list(range(255, -1, -1)))  # an inverting table
    ramp = np.tile(np.arange(0, 256, 16, dtype=np.uint8), (2, 1))
    path = secondary_capture(tmp_path / "voi.dcm", ramp, "MONOCHROME2", VOILUTSequence=Sequence([lut]))
    assert read_image(path)[0, :, 0].tolist() == (255 - ramp[0]).tolist()
    assert read_image(path, window="0,512")[0, 0, 0] == 128  # an explicit window wins over the file's LUT
    ds = pydicom.dcmread(ct_series(tmp_path / "s", n=1)[0])
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    ds.save_as(tmp_path / "deflated.dcm", enforce_file_format=True)
    np.testing.assert_array_equal(read_image(tmp_path / "deflated.dcm"), read_image(tmp_path / "s" / "slice_a.dcm"))


def test_padding_pixels_do_not_stretch_the_automatic_window(tmp_path):
    stored = np.full((8, 8), 1024 + 50, np.int16)
    stored[:, 4:] = 1024 + 150
    stored[0, 0] = -2000  # outside the scanned circle
    path = ct_slice(tmp_path / "pad.dcm", stored)
    ds = pydicom.dcmread(path)
    ds.add_new("PixelPaddingValue", "SS", -2000)
    ds.save_as(path)
    out = read_image(path, window="auto")[..., 0]
    assert out[0, 0] == 0 and out[1, 0] < 10 and out[1, 7] > 245  # the window spans 50..150 HU, not -3024..150


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_shared_file_cut_short_fails_clearly(dicom_dir, name, tmp_path):
    from medseg.io.labels import read_seg

    data = (dicom_dir / name).read_bytes()
    cut = tmp_path / f"cut_{name.replace('/', '_')}"
    cut.write_bytes(data[: int(len(data) * 0.9)])
    reader = read_seg if EXPECTED[name] == SEG else read_image
    with pytest.raises(DataError) as err:
        reader(cut)
    assert str(cut) in str(err.value)


def test_data_window_setting_is_validated():
    from medseg.config import build_config

    assert build_config(overrides=["data.window=lung"]).data.window == "lung"
    assert build_config(overrides=["data.window=-600,1500"]).data.window == "-600,1500"
    assert build_config(overrides=["data.window=file"]).data.window is None
    with pytest.raises(ConfigError, match="data.window.*soft_tissue"):
        build_config(overrides=["data.window=lungs"])
