"""DICOM SEG from imperfect source headers (field case 06 and a matrix of defects): one SEG per series,
valid values copied, invalid ones repaired or emptied, nothing invented, no patient data in the log,
dciodvfy clean."""

from __future__ import annotations

import logging
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataelem import RawDataElement
from pydicom.tag import Tag

from medseg.inference.dicom_prediction import predict_dicom
from medseg.io.dicom_repair import repair_header
from medseg.io.labels import read_seg
from tests._dicom_factories import PATIENT_ID, PATIENT_NAME, FakePredictor, ct_series
from tests._paths import SHARED

FIELD = SHARED / "field-cases"


def _raw(tag: int, vr: str, value: bytes):
    return lambda ds: ds.__setitem__(tag, RawDataElement(Tag(tag), vr, len(value), value, 0, False, True))


def _drop(*keywords):
    return lambda ds: [delattr(ds, k) for k in keywords if k in ds]


#: defect -> how to make it; each keeps the series a viewer would open
DEFECTS = {
    "empty charset": lambda ds: setattr(ds, "SpecificCharacterSet", ""),
    "unknown charset": lambda ds: setattr(ds, "SpecificCharacterSet", "ISO_IR_100"),
    "unknown charset, non-ASCII name": lambda ds: (setattr(ds, "SpecificCharacterSet", "LATIN1"),
                                                   setattr(ds, "PatientName", "Müller^Jörg")),
    "date with dashes": lambda ds: setattr(ds, "StudyDate", "2021-03-04"),
    "impossible birth date": lambda ds: setattr(ds, "PatientBirthDate", "19991345"),
    "time with colons": lambda ds: setattr(ds, "StudyTime", "10:22:05"),
    "impossible time": lambda ds: setattr(ds, "StudyTime", "2599"),
    "ISO date-time": lambda ds: setattr(ds, "AcquisitionDateTime", "2021-03-04T10:22:05"),
    "sex X": lambda ds: setattr(ds, "PatientSex", "X"),
    "sex lower case": lambda ds: setattr(ds, "PatientSex", "f"),
    "no patient attributes": _drop("PatientName", "PatientID", "PatientBirthDate", "PatientSex"),
    "no study attributes": _drop("StudyDate", "StudyTime", "ReferringPhysicianName", "StudyID", "AccessionNumber"),
    "over-long patient ID": lambda ds: setattr(ds, "PatientID", "X" * 80),
    "over-long accession number": lambda ds: setattr(ds, "AccessionNumber", "A" * 30),
    "over-long description": lambda ds: setattr(ds, "StudyDescription", "D" * 100),
    "control characters": lambda ds: setattr(ds, "StudyDescription", "head\x01ct"),
    "age in words": lambda ds: setattr(ds, "PatientAge", "45 years"),
    "weight with unit": _raw(0x00101030, "DS", b"70kg"),
}


def _dciodvfy_errors(path: Path) -> list[str]:
    if shutil.which("dciodvfy") is None:
        return []
    out = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=60)
    return [line for line in (out.stdout + out.stderr).splitlines() if line.startswith("Error")]


def _series_with(defects, src_files: list[Path], folder: Path) -> Path:
    folder.mkdir(parents=True)
    for f in src_files:
        ds = pydicom.dcmread(f)
        for d in defects:
            DEFECTS[d](ds)
        ds.save_as(folder / f"{f.stem}.dcm")
    return folder


def _check_seg(folder: Path, out: Path, caplog) -> tuple[Path, str]:
    predictor = FakePredictor()
    with caplog.at_level(logging.INFO):
        result = predict_dicom(predictor, folder, out / "seg", fmt="dicom-seg", progress=False)
    assert not result.failed, result.failed
    (seg,) = result.written
    assert _dciodvfy_errors(seg) == []
    png = predict_dicom(predictor, folder, out / "png", fmt="png", progress=False)
    sources = {pydicom.dcmread(f).SOPInstanceUID: f for f in folder.iterdir()}
    labels = read_seg(seg)
    assert {k for k, _ in labels.referenced} == set(sources)
    for p in png.written:
        uid = pydicom.dcmread(folder / f"{p.stem}.dcm").SOPInstanceUID
        want = np.asarray(__import__("PIL.Image").Image.open(p)) > 0
        got = labels.by_source.get((uid, None), np.zeros_like(want, np.uint8)) > 0
        np.testing.assert_array_equal(got, want)
    return seg, caplog.text


def test_case06_seg_from_an_empty_character_set(tmp_path, caplog):
    script = FIELD / "06-seg-from-imperfect-headers" / "build.py"
    if not script.is_file():
        pytest.skip("field case 06 not available")
    subprocess.run([sys.executable, str(script), str(tmp_path / "case")], check=True, capture_output=True, timeout=120)
    seg, log = _check_seg(tmp_path / "case" / "series", tmp_path, caplog)
    assert len(list((tmp_path / "case" / "series").iterdir())) == 4
    assert "SpecificCharacterSet" in log


@pytest.mark.parametrize("defect", sorted(DEFECTS))
def test_seg_from_real_series_with_a_defect(tmp_path, caplog, shared_data, defect):
    src = sorted((shared_data / "dicom" / "ct2_series_16px").iterdir())
    original = pydicom.dcmread(src[0])
    folder = _series_with([defect], src, tmp_path / "series")
    seg, log = _check_seg(folder, tmp_path, caplog)
    ds = pydicom.dcmread(seg)
    assert ds.StudyInstanceUID == original.StudyInstanceUID  # identifiers are copied, never made up
    for keyword in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
                    "ReferringPhysicianName", "StudyID", "AccessionNumber"):
        assert keyword in ds  # type 2: present, maybe empty
    for keyword in ("PatientName", "PatientID"):  # the log never quotes patient data
        value = str(original.get(keyword, "") or "")
        if len(value) > 3:
            assert value not in log


def test_all_defects_at_once_on_a_synthetic_series(tmp_path, caplog):
    src = ct_series(tmp_path / "clean", n=3)
    defects = ["empty charset", "date with dashes", "impossible birth date", "time with colons", "ISO date-time",
               "sex lower case", "over-long patient ID", "over-long accession number", "over-long description",
               "age in words", "weight with unit"]
    folder = _series_with(defects, src, tmp_path / "series")
    seg, log = _check_seg(folder, tmp_path, caplog)
    ds = pydicom.dcmread(seg)
    assert ds.PatientSex == "F" and ds.StudyDate == "20210304" and ds.StudyTime == "102205"
    assert ds.PatientID == "" and ds.AccessionNumber == ""  # invalid identifiers emptied, never shortened
    assert ds.PatientBirthDate == "" and "PatientAge" not in ds and "PatientWeight" not in ds
    assert len(ds.StudyDescription) == 64
    assert PATIENT_ID not in log and PATIENT_NAME not in log and "Müller" not in log


def test_missing_study_uid_is_refused_not_invented(tmp_path):
    src = ct_series(tmp_path / "clean", n=2)
    folder = tmp_path / "series"
    folder.mkdir()
    for f in src:
        ds = pydicom.dcmread(f)
        del ds.StudyInstanceUID
        ds.save_as(folder / f.name)
    result = predict_dicom(FakePredictor(), folder, tmp_path / "out", fmt="dicom-seg", progress=False)
    assert not result.written
    assert "StudyInstanceUID" in result.failed[0][1] and "never invented" in result.failed[0][1]


def test_repair_keeps_valid_values_untouched(tmp_path):
    (path,) = ct_series(tmp_path / "ct", n=1)
    ds = pydicom.dcmread(path)
    before = {e.keyword: e.value for e in ds if e.keyword != "PixelData"}
    assert repair_header(ds) == []
    assert {e.keyword: e.value for e in ds if e.keyword != "PixelData"} == before
