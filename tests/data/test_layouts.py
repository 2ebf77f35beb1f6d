"""medseg.data.layouts: every supported layout is found, unmatched files become problems."""

from __future__ import annotations

import pytest

from medseg.data.layouts import find_pairs
from medseg.data.pairs import Pair
from medseg.errors import DataError
from tests._factories import disc, isic_folder, rgb, save


def ids(index) -> list[str]:
    return [p.case_id for p in index.pairs]


def test_isic_images_masks_with_segmentation_suffix(tmp_path):
    isic_folder(tmp_path, ["ISIC_0000002", "ISIC_0000000", "ISIC_0000001"])
    (tmp_path / "images" / "ATTRIBUTION.txt").write_text("x")
    (tmp_path / "images" / "Thumbs.db").write_bytes(b"x")
    (tmp_path / "images" / ".hidden.jpg").write_bytes(b"x")
    (tmp_path / "masks" / "._ISIC_0000000_segmentation.png").write_bytes(b"x")
    (tmp_path / "masks" / "LICENSE").write_text("x")
    (tmp_path / "images" / "sub").mkdir()
    index = find_pairs(tmp_path)
    assert ids(index) == ["ISIC_0000000", "ISIC_0000001", "ISIC_0000002"]
    assert index.problems == []
    assert index.root == tmp_path
    assert "_segmentation" in index.layout and "images/ + masks/" in index.layout
    first = index.pairs[0]
    assert first == Pair("ISIC_0000000", tmp_path / "images" / "ISIC_0000000.jpg",
                         tmp_path / "masks" / "ISIC_0000000_segmentation.png", None)


@pytest.mark.parametrize(("images", "masks", "suffix", "ext"), [
    ("images", "masks", "", ".png"),
    ("image", "mask", "_mask", ".tif"),
    ("imgs", "labels", "_label", ".bmp"),
    ("img", "gt", "_gt", ".png"),
    ("Images", "Masks", "_Segmentation", ".jpeg"),
    ("images", "labels", "_seg", ".png"),
])
def test_folder_pairs_and_mask_suffixes(tmp_path, images, masks, suffix, ext):
    isic_folder(tmp_path, ["b", "a"], image_ext=ext, mask_suffix=suffix, images=images, masks=masks)
    index = find_pairs(tmp_path)
    assert ids(index) == ["a", "b"] and index.problems == []
    assert index.pairs[0].mask.name == f"a{suffix}.png"
    assert (f"'{suffix}'" in index.layout) if suffix else ("same names" in index.layout)


def test_drive_names_match_by_dropping_image_suffix(tmp_path):
    for n in (21, 22):
        save(tmp_path / "images" / f"{n}_training.tif", rgb(n))
        save(tmp_path / "masks" / f"{n}_manual1.gif", disc())
        save(tmp_path / "fov_masks" / f"{n}_training_mask.gif", disc())
    index = find_pairs(tmp_path)
    assert ids(index) == ["21_training", "22_training"] and index.problems == []
    assert index.pairs[0].mask == tmp_path / "masks" / "21_manual1.gif"
    assert "'_manual1'" in index.layout and "'_training'" in index.layout


def test_explicit_folders_anywhere(tmp_path):
    isic_folder(tmp_path, ["x1", "x2"], images="photos", masks="truth", mask_suffix="_mask")
    index = find_pairs(images=tmp_path / "photos", masks=tmp_path / "truth")
    assert ids(index) == ["x1", "x2"] and index.root is None
    with pytest.raises(DataError, match="no image/mask pairs found"):
        find_pairs(tmp_path)  # "photos"/"truth" are not guessed


def test_official_isic_folder_names_are_detected(tmp_path):
    isic_folder(tmp_path, ["ISIC_1", "ISIC_2"], images="ISIC2018_Task1-2_Training_Input",
                masks="ISIC2018_Task1_Training_GroundTruth")
    (tmp_path / "ISIC2018_Task1-2_Training_Input" / "ATTRIBUTION.txt").write_text("x")
    (tmp_path / "ISIC2018_Task1-2_Training_Input" / "LICENSE.txt").write_text("x")
    index = find_pairs(tmp_path)
    assert ids(index) == ["ISIC_1", "ISIC_2"] and index.problems == []
    assert "Training_Input" in index.layout
    same = find_pairs(images=tmp_path / "ISIC2018_Task1-2_Training_Input",
                      masks=tmp_path / "ISIC2018_Task1_Training_GroundTruth")
    assert same.pairs == index.pairs


def test_several_input_groundtruth_folders_are_ambiguous(tmp_path):
    for part in ("Training", "Validation"):
        isic_folder(tmp_path, ["ISIC_1"], images=f"ISIC2018_Task1-2_{part}_Input",
                    masks=f"ISIC2018_Task1_{part}_GroundTruth")
    with pytest.raises(DataError, match="several input/ground-truth folders.*--images"):
        find_pairs(tmp_path)


def test_flat_folder_with_suffixed_masks(tmp_path):
    for i, case in enumerate(["c1", "c2"]):
        save(tmp_path / f"{case}.jpg", rgb(i))
        save(tmp_path / f"{case}_mask.png", disc())
    index = find_pairs(tmp_path)
    assert ids(index) == ["c1", "c2"] and index.pairs[1].mask.name == "c2_mask.png"
    assert index.problems == [] and "one folder" in index.layout


def test_unmatched_files_become_fatal_problems_naming_them(tmp_path):
    isic_folder(tmp_path, ["ISIC_1", "ISIC_2"])
    save(tmp_path / "images" / "ISIC_3.jpg", rgb(3))
    save(tmp_path / "masks" / "ISIC_4_segmentation.png", disc())
    save(tmp_path / "masks" / "stray.png", disc())
    index = find_pairs(tmp_path)
    assert ids(index) == ["ISIC_1", "ISIC_2"]
    found = {(p.kind, p.path.name) for p in index.problems}
    assert found == {("missing-mask", "ISIC_3.jpg"), ("missing-image", "ISIC_4_segmentation.png"),
                     ("missing-image", "stray.png")}
    assert all(p.fatal and p.path.name in p.message for p in index.problems)
    missing = next(p for p in index.problems if p.kind == "missing-mask")
    assert "ISIC_3_segmentation" in missing.message


def test_duplicate_images_and_masks(tmp_path):
    isic_folder(tmp_path, ["a", "b", "c"])
    save(tmp_path / "images" / "a.png", rgb(9))  # a.jpg and a.png
    save(tmp_path / "masks" / "b_segmentation.gif", disc())  # two masks for b
    index = find_pairs(tmp_path)
    assert ids(index) == ["c"]
    dup = sorted((p.kind, p.path.name) for p in index.problems)
    assert dup == [("duplicate", "a.jpg"), ("duplicate", "a.png"), ("duplicate", "b.jpg")]
    assert "b_segmentation.gif" in index.problems[-1].message


def write_manifest(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_manifest_with_relative_and_absolute_paths(tmp_path):
    isic_folder(tmp_path / "d", ["k1", "k2", "k3"])
    absolute = tmp_path / "d" / "masks" / "k3_segmentation.png"
    write_manifest(tmp_path / "d" / "manifest.csv",
                   "image,mask\nimages/k2.jpg,masks/k2_segmentation.png\n"
                   f"images/k1.jpg,masks/k1_segmentation.png\n images/k3.jpg , {absolute}\n")
    index = find_pairs(tmp_path / "d")
    assert ids(index) == ["k1", "k2", "k3"] and index.problems == []
    assert index.pairs[2].mask == absolute and all(p.split is None for p in index.pairs)
    assert index.layout == "manifest manifest.csv"
    assert find_pairs(manifest=tmp_path / "d" / "manifest.csv").pairs == index.pairs
    assert find_pairs(tmp_path / "d" / "manifest.csv").pairs == index.pairs


def test_manifest_split_column_and_missing_files(tmp_path):
    isic_folder(tmp_path, ["k1", "k2"])
    write_manifest(tmp_path / "list.csv",
                   "image,mask,split\n"
                   "images/k1.jpg,masks/k1_segmentation.png,train\n"
                   "images/k2.jpg,masks/k2_segmentation.png,Validation\n"
                   "images/gone.jpg,masks/k1_segmentation.png,train\n"
                   "images/k1.jpg,masks/gone_mask.png,val\n"
                   "images/k2.jpg,,val\n")
    index = find_pairs(manifest=tmp_path / "list.csv")
    assert [(p.case_id, p.split) for p in index.pairs] == [("k1", "train"), ("k2", "val")]
    assert "split column" in index.layout
    messages = {p.kind: p.message for p in index.problems if p.kind.startswith("missing")}
    assert "row 4" in messages["missing-image"] and "gone.jpg" in messages["missing-image"]
    assert sorted(p.kind for p in index.problems) == ["missing-image", "missing-mask", "missing-mask"]
    assert any("row 5" in p.message and "gone_mask.png" in p.message for p in index.problems)
    assert any("row 6 has no mask" in p.message for p in index.problems)


@pytest.mark.parametrize(("text", "match"), [
    ("picture,label\na.jpg,a.png\n", "has columns picture, label; expected 'image,mask"),
    ("image,mask\n", "has no rows"),
    ("image,mask,split\nimages/a.jpg,masks/a_segmentation.png,holdout\n", "row 2: unknown split 'holdout'"),
])
def test_bad_manifests(tmp_path, text, match):
    isic_folder(tmp_path, ["a"])
    write_manifest(tmp_path / "manifest.csv", text)
    with pytest.raises(DataError, match=match):
        find_pairs(tmp_path)


def test_split_csv_sets_splits(tmp_path):
    isic_folder(tmp_path, ["ISIC_1", "ISIC_2", "ISIC_3"])
    (tmp_path / "split.csv").write_text("image_id,split\nISIC_1,train\nISIC_2,val\nISIC_9,val\n")
    index = find_pairs(tmp_path)
    got = [(p.case_id, p.split) for p in index.pairs]
    assert got == [("ISIC_1", "train"), ("ISIC_2", "val"), ("ISIC_3", None)]
    assert index.layout.endswith("+ split.csv")
    (tmp_path / "split.csv").write_text("image_id,split\nISIC_1,trian\n")
    with pytest.raises(DataError, match="split.csv row 2: unknown split 'trian'"):
        find_pairs(tmp_path)


def test_manifest_split_column_wins_over_split_csv(tmp_path):
    isic_folder(tmp_path, ["a"])
    write_manifest(tmp_path / "manifest.csv",
                   "image,mask,split\nimages/a.jpg,masks/a_segmentation.png,test\n")
    (tmp_path / "split.csv").write_text("image_id,split\na,train\n")
    assert find_pairs(tmp_path).pairs[0].split == "test"


def test_missing_and_empty_folders(tmp_path):
    with pytest.raises(DataError, match=r"data folder .*nope does not exist"):
        find_pairs(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"no image/mask pairs found in .*empty.*--images and --masks"):
        find_pairs(tmp_path / "empty")
    with pytest.raises(DataError, match="does not exist"):
        find_pairs(images=tmp_path / "empty", masks=tmp_path / "gone")
    with pytest.raises(DataError, match="both"):
        find_pairs(images=tmp_path / "empty")
    with pytest.raises(DataError, match="manifest .*missing.csv does not exist"):
        find_pairs(manifest=tmp_path / "missing.csv")
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    with pytest.raises(DataError, match="no image files found"):
        find_pairs(tmp_path)


def test_order_is_deterministic_and_sorted(tmp_path):
    names = [f"case{i:02d}" for i in (5, 3, 11, 0, 7)]
    isic_folder(tmp_path, names)
    assert ids(find_pairs(tmp_path)) == sorted(names)
    assert find_pairs(tmp_path) == find_pairs(tmp_path)


def test_manifest_rows_with_the_same_case_id_are_duplicates(tmp_path):
    for part in ("a", "b"):
        save(tmp_path / part / "1.png", rgb(1))
        save(tmp_path / part / "1_mask.png", disc())
    save(tmp_path / "a" / "2.png", rgb(2))
    save(tmp_path / "a" / "2_mask.png", disc())
    write_manifest(tmp_path / "manifest.csv",
                   "image,mask\na/1.png,a/1_mask.png\nb/1.png,b/1_mask.png\na/2.png,a/2_mask.png\n")
    index = find_pairs(tmp_path)
    assert ids(index) == ["2"]
    assert sorted(str(p.path.relative_to(tmp_path)) for p in index.problems if p.kind == "duplicate") == [
        "a/1.png", "b/1.png"]
