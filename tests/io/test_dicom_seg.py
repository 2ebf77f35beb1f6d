"""DICOM SEG and NIfTI output: exact round trip, study kept, dciodvfy clean, correct affine, CLI."""

from __future__ import annotations

import gzip
import shutil
import struct
import subprocess

import numpy as np
import pydicom
import pytest
from typer.testing import CliRunner

from medseg.cli import app
from medseg.inference.dicom_prediction import predict_dicom
from medseg.io.dicom_series import scan_dicom
from medseg.io.formats import read_image
from medseg.io.labels import read_seg
from tests._dicom_factories import PATIENT_NAME, FakePredictor, ct_series, enhanced_ct


def expected_labels(frames, predictor):
    images = [read_image(f.path, frame=f.frame) for f in frames]
    return np.stack([(predictor.to_mask(p) > 0) if predictor.config.model.classes == 1 else predictor.to_mask(p)
                     for p in predictor.predict_proba_batch(images)]).astype(np.uint8)


def _seg_for(tmp_path, predictor, source):
    result = predict_dicom(predictor, source, tmp_path / "out", fmt="dicom-seg", progress=False)
    assert not result.failed, result.failed
    (path,) = result.written
    return path


def test_seg_reads_back_to_exactly_the_prediction_and_keeps_the_study(tmp_path):
    import highdicom as hd

    ct_series(tmp_path / "ct", n=4)
    (series,) = scan_dicom(tmp_path / "ct").series
    predictor = FakePredictor()
    path = _seg_for(tmp_path, predictor, tmp_path / "ct")
    assert path.name.startswith("series7_") and path.name.endswith(".seg.dcm")
    want = expected_labels(series.frames, predictor)
    assert want.any() and not want.all()
    seg = read_seg(path)
    np.testing.assert_array_equal(np.stack([seg.for_frame(f) for f in series.frames]), want)
    theirs = hd.seg.segread(path).get_pixels_by_source_instance([f.sop_instance_uid for f in series.frames])
    np.testing.assert_array_equal(theirs[..., 0], want)
    ds, src = pydicom.dcmread(path), pydicom.dcmread(series.files[0])
    for key in ("PatientName", "PatientID", "PatientBirthDate", "StudyInstanceUID", "StudyID",
                "AccessionNumber", "FrameOfReferenceUID"):
        assert ds[key].value == src[key].value, key
    assert ds.SeriesInstanceUID != src.SeriesInstanceUID and ds.Modality == "SEG"
    (segment,) = ds.SegmentSequence
    assert segment.SegmentLabel == "foreground" and "RecommendedDisplayCIELabValue" in segment
    algo = segment.SegmentationAlgorithmIdentificationSequence[0]
    assert algo.AlgorithmName == "medseg unet-resnet34" and algo.AlgorithmVersion


def test_multiclass_gives_one_segment_per_class_and_empty_predictions_work(tmp_path):
    ct_series(tmp_path / "ct", n=3)
    (series,) = scan_dicom(tmp_path / "ct").series
    predictor = FakePredictor(classes=4)  # softmax over 4 label values: background + 3 segments
    seg = read_seg(_seg_for(tmp_path / "multi", predictor, tmp_path / "ct"))
    assert [s.label for s in seg.segments] == ["class 1", "class 2", "class 3"]
    got = np.stack([seg.for_frame(f) for f in series.frames])
    np.testing.assert_array_equal(got, expected_labels(series.frames, predictor))
    empty = FakePredictor()
    empty.predict_proba_batch = lambda images: [np.zeros(im.shape[:2], np.float32) for im in images]
    seg = read_seg(_seg_for(tmp_path / "empty", empty, tmp_path / "ct"))
    assert all(seg.for_frame(f).max() == 0 for f in series.frames)


def test_seg_for_an_enhanced_multiframe_source_references_frames(tmp_path):
    frames = np.stack([np.full((8, 8), v, np.int16) for v in (900, 1100, 1300)])
    frames[:, :4] = 0
    enhanced_ct(tmp_path / "ct" / "enh.dcm", frames, slopes=[1] * 3, intercepts=[-1024] * 3, z=[4, 0, 8])
    (series,) = scan_dicom(tmp_path / "ct").series
    predictor = FakePredictor()
    seg = read_seg(_seg_for(tmp_path, predictor, tmp_path / "ct"))
    assert {n for _, n in seg.by_source} <= {1, 2, 3}
    got = np.stack([seg.for_frame(f) for f in series.frames])
    np.testing.assert_array_equal(got, expected_labels(series.frames, predictor))


@pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dciodvfy (Debian dicom3tools) is not installed")
def test_dciodvfy_finds_no_errors_in_our_seg(tmp_path):
    ct_series(tmp_path / "ct", n=3)
    enhanced_ct(tmp_path / "enh" / "enh.dcm", np.full((2, 8, 8), 1100, np.int16), slopes=[1, 1],
                intercepts=[-1024, -1024], z=[0, 1])
    for source in ("ct", "enh"):
        path = _seg_for(tmp_path / f"out_{source}", FakePredictor(classes=4), tmp_path / source)
        out = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=60)
        errors = [line for line in (out.stdout + out.stderr).splitlines() if line.startswith("Error")]
        assert not errors, errors


def _nifti(path):
    raw = gzip.decompress(path.read_bytes())
    dim = struct.unpack_from("<8h", raw, 40)
    datatype, offset = struct.unpack_from("<h", raw, 70)[0], int(struct.unpack_from("<f", raw, 108)[0])
    sform_code = struct.unpack_from("<h", raw, 254)[0]
    affine = np.array(struct.unpack_from("<12f", raw, 280), np.float64).reshape(3, 4)
    assert datatype == 2  # uint8
    nx, ny, nz = dim[1:4]
    return np.frombuffer(raw, np.uint8, nx * ny * nz, offset).reshape(nz, ny, nx), affine, sform_code


def test_nifti_affine_puts_every_voxel_where_its_dicom_pixel_is(tmp_path):
    ct_series(tmp_path / "ct", n=4, spacing_z=2.5)
    (series,) = scan_dicom(tmp_path / "ct").series
    predictor = FakePredictor()
    result = predict_dicom(predictor, tmp_path / "ct", tmp_path / "out", fmt="nifti", progress=False)
    data, affine, sform_code = _nifti(result.written[0])
    assert sform_code > 0
    np.testing.assert_array_equal(data, expected_labels(series.frames, predictor))
    lps_to_ras = np.diag([-1, -1, 1])
    for k, frame in enumerate(series.frames):
        g = frame.geometry
        for i, j in ((0, 0), (5, 3), (15, 15)):  # i: column, j: row
            lps = np.asarray(g.position) + i * g.spacing[1] * np.asarray(g.orientation[:3]) + \
                j * g.spacing[0] * np.asarray(g.orientation[3:])
            np.testing.assert_allclose(affine @ [i, j, k, 1], lps_to_ras @ lps, atol=1e-4)


def test_cli_predict_writes_seg_nifti_and_png_for_dicom(tiny_run, tmp_path):
    ct_series(tmp_path / "ct" / "case1", n=2, size=40)
    runner = CliRunner()
    for fmt, pattern in (("dicom-seg", "*.seg.dcm"), ("nifti", "*.nii.gz"), ("png", "case1/*.png")):
        result = runner.invoke(app, ["predict", str(tiny_run), str(tmp_path / "ct"), "--format", fmt, "--out",
                                     str(tmp_path / fmt)])
        assert result.exit_code == 0, result.output
        assert len(list((tmp_path / fmt).glob(pattern))) == (2 if fmt == "png" else 1), fmt
        assert PATIENT_NAME not in result.output
    seg = read_seg(next((tmp_path / "dicom-seg").glob("*.seg.dcm")))
    assert seg.segments[0].label == "foreground"


SEG_SOURCES = {  # shared file -> None (a SEG is written) or the reason it cannot be
    "ct2_series_16px": None, "single/CT_small.dcm": None, "single/MR_small_jpeg_ls_lossless.dcm": None,
    "single/MR2_J2KR.dcm": None, "single/RG3_J2KR.dcm": None, "single/US1_J2KR.dcm": None,
    "single/JPEG-LL.dcm": None, "single/JPGExtended.dcm": None,
    "single/693_J2KR.dcm": "no Frame Of Reference UID", "single/bad_sequence.dcm": "no Frame Of Reference UID",
    "multiframe/emri_small_RLE.dcm": "no Frame of Reference UID",
}


@pytest.mark.parametrize("name", sorted(SEG_SOURCES))
def test_seg_for_shared_sources_is_valid_and_exact_or_refused_clearly(shared_data, tmp_path, name):
    source = shared_data / "dicom" / name
    predictor = FakePredictor()
    result = predict_dicom(predictor, source, tmp_path, fmt="dicom-seg", progress=False)
    if SEG_SOURCES[name]:
        ((path, message),) = result.failed
        assert SEG_SOURCES[name] in message and str(source) in message and not result.written
        return
    (seg_path,) = result.written
    (series,) = scan_dicom(source).series
    seg = read_seg(seg_path)
    np.testing.assert_array_equal(np.stack([seg.for_frame(f) for f in series.frames]),
                                  expected_labels(series.frames, predictor))
    if shutil.which("dciodvfy"):
        out = subprocess.run(["dciodvfy", str(seg_path)], capture_output=True, text=True, timeout=60)
        assert not [line for line in (out.stdout + out.stderr).splitlines() if line.startswith("Error")]


def test_an_undecodable_slice_is_reported_and_the_series_goes_on(tmp_path):
    paths = ct_series(tmp_path / "ct", n=3)
    paths[1].write_bytes(paths[1].read_bytes()[:-100])
    result = predict_dicom(FakePredictor(), tmp_path / "ct", tmp_path / "out", fmt="dicom-seg", progress=False)
    ((bad, message),) = result.failed
    assert bad == paths[1] and str(paths[1]) in message and "truncated" in message
    seg = read_seg(result.written[0])
    assert len(seg.referenced) == 2 and result.n_frames == 2
