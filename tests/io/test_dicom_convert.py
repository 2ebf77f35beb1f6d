"""``medseg convert dicom``: one PNG per frame, traceable names, geometry sidecars, no patient data."""

from __future__ import annotations

import json

import numpy as np
import pydicom
from PIL import Image
from typer.testing import CliRunner

from medseg.cli import app
from medseg.convert import anonymous_uid, convert_dicom
from medseg.io.dicom import read_dicom_values
from tests._dicom_factories import PATIENT_ID, PATIENT_NAME, ct_series, ct_slice, enhanced_ct, structured_report


def test_every_frame_is_written_with_a_sidecar_and_traceable_names(tmp_path):
    ct_series(tmp_path / "src" / "case1", n=3)
    enhanced_ct(tmp_path / "src" / "enh.dcm", np.full((2, 8, 8), 1100, np.int16), slopes=[1, 1],
                intercepts=[-1024, -1024], z=[0, 1])
    structured_report(tmp_path / "src" / "report.dcm")
    result = convert_dicom(tmp_path / "src", tmp_path / "out")
    names = sorted(p.relative_to(tmp_path / "out").as_posix() for p in result.written)
    assert names == ["case1/slice_a.png", "case1/slice_b.png", "case1/slice_c.png", "enh_f001.png", "enh_f002.png"]
    assert [p.name for p, _ in result.failed] == ["report.dcm"]
    meta = json.loads((tmp_path / "out" / "case1" / "slice_a.json").read_text())
    ds = pydicom.dcmread(tmp_path / "src" / "case1" / "slice_a.dcm")
    assert meta["source"] == "case1/slice_a.dcm" and meta["frame"] is None
    assert meta["sop_instance_uid"] == ds.SOPInstanceUID and meta["series_instance_uid"] == ds.SeriesInstanceUID
    assert meta["pixel_spacing"] == [0.5, 0.5] and meta["image_position_patient"] == [-10.0, -20.0, 10.0]
    assert meta["image_orientation_patient"] == [1, 0, 0, 0, 1, 0] and meta["window"]["source"] == "auto"
    enh = json.loads((tmp_path / "out" / "enh_f002.json").read_text())
    assert enh["frame"] == 2 and enh["image_position_patient"] == [0.0, 0.0, 1.0] and enh["window"]["center"] == 40


def test_window_option_and_no_division_by_the_image_maximum(tmp_path):
    hu = np.full((8, 8), -1000, np.int16)
    hu[:, 4:] = 40  # soft tissue at the window centre, air elsewhere
    ct_slice(tmp_path / "a.dcm", hu + 1024)
    convert_dicom(tmp_path / "a.dcm", tmp_path / "out", window="soft_tissue")
    png = np.asarray(Image.open(tmp_path / "out" / "a.png"))
    assert png.ndim == 2 and png[0, 0] == 0 and png[0, 7] == 128  # not 255: no min/max stretching


def test_16_bit_output_round_trips_to_hounsfield_units(tmp_path):
    (path, *_) = ct_series(tmp_path / "src", n=1)
    result = convert_dicom(path, tmp_path / "out", bits=16)
    png = np.asarray(Image.open(result.written[0])).astype(np.int64)
    meta = json.loads(result.written[0].with_suffix(".json").read_text())
    hu = (png - meta["png_offset"]) * meta["rescale_slope"] + meta["rescale_intercept"]
    np.testing.assert_array_equal(hu, read_dicom_values(path))


def test_no_identifiers_in_outputs_and_anonymize_replaces_uids(tmp_path):
    ct_series(tmp_path / "src", n=2)
    runner = CliRunner()
    plain = runner.invoke(app, ["convert", "dicom", str(tmp_path / "src"), str(tmp_path / "plain")])
    anon = runner.invoke(app, ["convert", "dicom", str(tmp_path / "src"), str(tmp_path / "anon"), "--anonymize",
                               "--window", "lung"])
    assert plain.exit_code == 0 and anon.exit_code == 0, plain.output + anon.output
    ds = pydicom.dcmread(tmp_path / "src" / "slice_a.dcm")
    for folder in ("plain", "anon"):
        for f in (tmp_path / folder).iterdir():
            data = f.read_bytes()
            for secret in (PATIENT_NAME, "DOE", PATIENT_ID, "19700101", "ACC-SECRET"):
                assert secret.encode() not in data, (f, secret)
    text = " ".join(f.read_text() for f in (tmp_path / "anon").glob("*.json"))
    assert ds.SOPInstanceUID not in text and ds.StudyInstanceUID not in text
    assert anonymous_uid(ds.SOPInstanceUID) in text and len(anonymous_uid(ds.SOPInstanceUID)) <= 64
    assert "preset:lung" in text
    assert PATIENT_NAME not in plain.output + anon.output
