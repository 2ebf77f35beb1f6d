"""Label maps from annotation tools: DICOM SEG, NRRD/NIfTI volumes, LabelMe JSON; convert labels; datasets."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk
from PIL import Image
from typer.testing import CliRunner

from medseg.cli import app
from medseg.data.check import check_pairs
from medseg.data.layouts import find_pairs
from medseg.data.readers import read_pair_image, read_pair_mask
from medseg.errors import DataError
from medseg.io.dicom_series import scan_dicom
from medseg.io.images import read_mask, write_png
from medseg.io.labels import read_labelme, read_seg, volume_labels
from tests._dicom_factories import ct_series

LIVER = ("", "_1frame", "_deflate", "_expb", "_j2k", "_rle")
LIVER_510 = ("_nonbyte_aligned", "_nonbyte_aligned_deflate", "_nonbyte_aligned_j2k", "_nonbyte_aligned_rle")


@pytest.fixture(scope="module")
def dicom_dir(shared_data):
    return shared_data / "dicom"


# ------------------------------------------------------------------------------------------ real SEGs
@pytest.mark.parametrize("name", ["binary", "binary_fractional", "true_fractional", "binary_overlap"])
def test_highdicom_segs_map_onto_their_referenced_slices(dicom_dir, name):
    import highdicom as hd

    path = dicom_dir / f"seg/highdicom/seg_image_ct_{name}.dcm"
    (series,) = scan_dicom(dicom_dir / "ct2_series_16px").series
    seg = read_seg(path)
    ours = np.stack([seg.for_frame(f) for f in series.frames])
    ref = hd.seg.segread(path)
    uids = [f.sop_instance_uid for f in series.frames]
    theirs = ref.get_pixels_by_source_instance(uids, ignore_spatial_locations=True)
    if name == "true_fractional":
        theirs = theirs >= 0.5
    expected = (theirs > 0) * np.arange(1, theirs.shape[-1] + 1)
    np.testing.assert_array_equal(ours, expected.max(axis=-1))
    if name != "binary_overlap":
        assert ours[0].max() == 0 and ours[1:].max() > 0  # the first slice is referenced but has no frame
    assert [s.label for s in seg.segments][:1] == ["first segment"]
    assert (seg.overlap_pixels > 0) == (name == "binary_overlap")


def test_single_frame_seg_maps_onto_ct_small(dicom_dir):
    seg = read_seg(dicom_dir / "seg/highdicom/seg_image_ct_binary_single_frame.dcm")
    (frame,) = scan_dicom(dicom_dir / "single/CT_small.dcm").frames
    assert seg.for_frame(frame).sum() == 1832


def test_dcmqi_liver_seg_in_every_encoding_gives_the_same_masks(dicom_dir):
    import highdicom as hd

    folder = dicom_dir / "seg/pydicom_dcmqi"
    for group in (LIVER, LIVER_510):
        reference = read_seg(folder / f"liver{group[0]}.dcm")
        assert sorted(int(m.sum()) for m in reference.by_source.values()) in ([35220, 35645, 36233], [36233])
        for variant in group[1:]:
            seg = read_seg(folder / f"liver{variant}.dcm")
            assert seg.segments[0].label == "Liver" and len(seg.referenced) == 3
            for key, mask in seg.by_source.items():
                np.testing.assert_array_equal(mask, reference.by_source[key], err_msg=variant)
    assert len(read_seg(folder / "liver_1frame.dcm").by_source) == 1  # NumberOfFrames says 1, groups say 3
    ref = hd.seg.segread(folder / "liver.dcm")  # an independent decoder agrees
    uids = [u for u, _ in read_seg(folder / "liver.dcm").by_source]
    theirs = ref.get_pixels_by_source_instance(uids, ignore_spatial_locations=True)[..., 0]
    ours = np.stack([read_seg(folder / "liver_rle.dcm").by_source[(u, None)] for u in uids])
    np.testing.assert_array_equal(ours, theirs)


# ------------------------------------------------------------------------------------------ volumes
def _series_volume(tmp_path, n=4, size=16):
    ct_series(tmp_path / "images" / "case1", n=n, size=size)
    (series,) = scan_dicom(tmp_path / "images").series
    labels = np.zeros((n, size, size), np.uint8)
    for i in range(n):
        labels[i, 2 + i : 8 + i, 3:9] = 1 + i % 2  # a different shape per slice, two label values
    g = series.frames[0].geometry
    vol = sitk.GetImageFromArray(labels)
    vol.SetOrigin(g.position)
    vol.SetSpacing((g.spacing[1], g.spacing[0], 2.5))
    return series, labels, vol


def test_label_volumes_match_slices_by_geometry_in_any_orientation(tmp_path):
    series, labels, vol = _series_volume(tmp_path)
    flipped = sitk.Flip(sitk.PermuteAxes(vol, [1, 0, 2]), [True, False, True])  # same voxels, other axes
    for name, image in (("plain.nii.gz", vol), ("flipped.nrrd", flipped)):
        sitk.WriteImage(image, str(tmp_path / name))
        got = np.stack([volume_labels(tmp_path / name, f) for f in series.frames])
        np.testing.assert_array_equal(got, labels, err_msg=name)
    shifted = sitk.Image(vol)
    shifted.SetOrigin(tuple(np.add(vol.GetOrigin(), (0, 0, 1.25))))  # half a slice off
    sitk.WriteImage(shifted, str(tmp_path / "shifted.nii"))
    with pytest.raises(DataError, match="between two slices"):
        volume_labels(tmp_path / "shifted.nii", series.frames[1])
    far = sitk.Image(vol)
    far.SetOrigin(tuple(np.add(vol.GetOrigin(), (0, 0, 500))))
    sitk.WriteImage(far, str(tmp_path / "far.nii"))
    assert volume_labels(tmp_path / "far.nii", series.frames[0]) is None


# ------------------------------------------------------------------------------------------ LabelMe
def _labelme(path, shapes, size=(20, 30)):
    doc = {"version": "5.4.1", "imagePath": "photo.png", "imageHeight": size[0], "imageWidth": size[1],
           "shapes": [{"label": lab, "points": pts, "shape_type": kind} for lab, kind, pts in shapes]}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc))
    return path


def test_labelme_shapes_are_drawn_with_class_values(tmp_path):
    path = _labelme(tmp_path / "photo.json", [
        ("lesion", "polygon", [[2, 2], [10, 2], [10, 10], [2, 10]]),
        ("vessel", "rectangle", [[15, 5], [20, 8]]),
        ("lesion", "circle", [[25, 15], [25, 17]]),
        ("_background_", "polygon", [[0, 0], [29, 0], [29, 19]])])
    labels, names = read_labelme(path, {"lesion": 1, "vessel": 2})
    assert names == ["lesion", "vessel"] and labels.shape == (20, 30)
    assert labels[5, 5] == 1 and labels[6, 17] == 2 and labels[15, 25] == 1 and labels[0, 28] == 0
    binary, _ = read_labelme(path)
    assert set(np.unique(binary)) == {0, 1}


def test_convert_labels_labelme_and_seg(tmp_path, dicom_dir):
    write_png(tmp_path / "photos" / "photo.png", np.zeros((20, 30, 3), np.uint8))
    _labelme(tmp_path / "ann" / "photo.json", [("lesion", "polygon", [[2, 2], [10, 2], [10, 10]])])
    result = CliRunner().invoke(app, ["convert", "labels", str(tmp_path / "ann"), "--reference",
                                      str(tmp_path / "photos"), "--out", str(tmp_path / "masks")])
    assert result.exit_code == 0, result.output
    assert read_mask(tmp_path / "masks" / "photo.png").sum() > 10
    result = CliRunner().invoke(app, ["convert", "labels", str(dicom_dir / "seg/highdicom/seg_image_ct_binary.dcm"),
                                      "--reference", str(dicom_dir / "ct2_series_16px"), "--out",
                                      str(tmp_path / "segmasks")])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "segmasks").iterdir()) == ["17106.png", "17136.png", "17166.png",
                                                                          "17196.png"]
    assert read_mask(tmp_path / "segmasks" / "17106.png").sum() == 0
    assert read_mask(tmp_path / "segmasks" / "17166.png").sum() == 256


# ------------------------------------------------------------------------------------------ datasets
def test_dicom_datasets_with_png_seg_or_volume_labels_check_clean(tmp_path):
    from medseg.io.dicom import read_dataset
    from medseg.io.dicom_seg import write_seg

    series, labels, vol = _series_volume(tmp_path)
    binary = (labels > 0).astype(np.uint8)
    # 1) PNG masks named after the slices (what convert labels writes)
    for frame, lab in zip(series.frames, binary, strict=True):
        write_png(tmp_path / "masks" / "case1" / f"{frame.name}.png", lab * 255)
    # 2) a label volume named after the series folder, 3) a SEG (any name)
    (tmp_path / "labels").mkdir()
    sitk.WriteImage(vol, str(tmp_path / "labels" / "case1.nii.gz"))
    sources = [read_dataset(p, pixels=False) for p in series.files]
    write_seg(sources, binary, tmp_path / "segs" / "anything.dcm", segment_names=["lesion"], algorithm="test",
              version="1")
    for masks_dir in ("masks", "labels", "segs"):
        index = find_pairs(images=tmp_path / "images", masks=tmp_path / masks_dir)
        report = check_pairs(index)
        assert report.ok and len(report.good) == 4, (masks_dir, report.summary_lines())
        assert index.pairs[0].case_id.startswith("case1__slice_")
        by_frame = {f.path: i for i, f in enumerate(series.frames)}
        for pair in index.pairs:
            np.testing.assert_array_equal(read_pair_mask(pair), binary[by_frame[pair.image]], err_msg=masks_dir)
            assert read_pair_image(pair, "soft_tissue").shape == (16, 16, 3)


def test_multiframe_pairs_and_missing_masks_are_reported(tmp_path, dicom_dir):
    import shutil

    (tmp_path / "images").mkdir()
    shutil.copy(dicom_dir / "multiframe/emri_small.dcm", tmp_path / "images" / "mr.dcm")
    for f in (1, 2, 10):
        write_png(tmp_path / "masks" / f"mr_f{f:03d}.png", np.eye(64, dtype=np.uint8) * 255)
    report = check_pairs(find_pairs(tmp_path))
    assert [(p.case_id, p.frame) for p in report.good] == [("mr_f001", 1), ("mr_f002", 2), ("mr_f010", 10)]
    missing = [p for p in report.problems if p.kind == "missing-mask"]
    assert len(missing) == 7 and "frame 3" in " ".join(p.message for p in missing)


def test_labelme_masks_in_an_ordinary_dataset(tmp_path):
    for name in ("a", "b"):
        write_png(tmp_path / "images" / f"{name}.png", np.zeros((20, 30, 3), np.uint8))
        _labelme(tmp_path / "masks" / f"{name}.json", [("lesion", "polygon", [[2, 2], [10, 2], [10, 10]])])
    (tmp_path / "masks" / "notes.json").write_text('{"about": "not an annotation"}')
    report = check_pairs(find_pairs(tmp_path))
    assert report.ok and len(report.good) == 2 and report.mask_kinds == {"binary-0-1": 2}
    assert read_pair_mask(report.good[0]).sum() > 10


def test_convert_labels_from_a_label_volume_keeps_label_values(tmp_path):
    series, labels, vol = _series_volume(tmp_path)
    sitk.WriteImage(vol, str(tmp_path / "seg.nrrd"))
    result = CliRunner().invoke(app, ["convert", "labels", str(tmp_path / "seg.nrrd"), "--reference",
                                      str(tmp_path / "images"), "--out", str(tmp_path / "masks")])
    assert result.exit_code == 0, result.output
    for frame, lab in zip(series.frames, labels, strict=True):
        png = np.asarray(Image.open(tmp_path / "masks" / "case1" / f"{frame.name}.png"))
        np.testing.assert_array_equal(png, lab)
    assert json.loads((tmp_path / "masks" / "classes.json").read_text()) == {"1": "label 1", "2": "label 2"}
