"""medseg.data.splits: reproducible random splits, given splits respected, split files round-trip."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from medseg.data.pairs import Pair
from medseg.data.splits import SPLITS, apply_splits, assign_splits, load_splits, save_splits
from medseg.errors import ConfigError, DataError


def make_pairs(n: int, split: str | None = None) -> list[Pair]:
    return [Pair(f"case{i:03d}", Path(f"images/case{i:03d}.png"), Path(f"masks/case{i:03d}.png"), split)
            for i in range(n)]


def as_ids(splits) -> dict[str, list[str]]:
    return {name: [p.case_id for p in group] for name, group in splits.items()}


def test_random_split_sizes_and_disjointness():
    splits = assign_splits(make_pairs(100), val_fraction=0.2, test_fraction=0.1, seed=0)
    assert tuple(splits) == SPLITS
    assert [len(splits[s]) for s in SPLITS] == [70, 20, 10]
    all_ids = [i for group in as_ids(splits).values() for i in group]
    assert sorted(all_ids) == [p.case_id for p in make_pairs(100)]
    assert all(p.split == name for name, group in splits.items() for p in group)
    assert all(group == sorted(group, key=lambda p: p.case_id) for group in splits.values())


def test_random_split_is_deterministic_and_ignores_input_order():
    pairs = make_pairs(50)
    shuffled = pairs[:]
    random.Random(1).shuffle(shuffled)
    first = as_ids(assign_splits(pairs, seed=3))
    assert first == as_ids(assign_splits(shuffled, seed=3))
    assert first != as_ids(assign_splits(pairs, seed=4))
    assert first["val"] != [p.case_id for p in pairs[:10]]  # not just the first files


def test_small_sets_get_one_val_pair_and_keep_training_data():
    assert [len(g) for g in assign_splits(make_pairs(2), val_fraction=0.1).values()] == [1, 1, 0]
    assert [len(g) for g in assign_splits(make_pairs(1)).values()] == [1, 0, 0]
    assert [len(g) for g in assign_splits(make_pairs(1), test_fraction=0.5).values()] == [1, 0, 0]
    assert [len(g) for g in assign_splits(make_pairs(10), val_fraction=0.0).values()] == [10, 0, 0]


@pytest.mark.parametrize(("val", "test"), [(1.0, 0.0), (-0.1, 0.0), (0.5, 0.5), (0.2, 1.2)])
def test_bad_fractions(val, test):
    with pytest.raises(ConfigError, match="val_fraction"):
        assign_splits(make_pairs(5), val_fraction=val, test_fraction=test)


def test_given_splits_are_respected():
    pairs = make_pairs(4, "train")
    pairs[1] = Pair(pairs[1].case_id, pairs[1].image, pairs[1].mask, "val")
    pairs[2] = Pair(pairs[2].case_id, pairs[2].image, pairs[2].mask, "Validation")
    pairs[3] = Pair(pairs[3].case_id, pairs[3].image, pairs[3].mask, "test")
    splits = assign_splits(pairs, val_fraction=0.5, seed=9)
    assert as_ids(splits) == {"train": ["case000"], "val": ["case001", "case002"], "test": ["case003"]}
    assert splits["val"][1].split == "val"


def test_partial_or_unknown_given_splits_fail():
    pairs = make_pairs(5, "train")
    pairs[2] = Pair(pairs[2].case_id, pairs[2].image, pairs[2].mask, None)
    with pytest.raises(DataError, match=r"1 of 5 pairs have no split \(case002\)"):
        assign_splits(pairs)
    with pytest.raises(DataError, match="unknown split 'dev'"):
        assign_splits(make_pairs(3, "dev"))
    with pytest.raises(DataError, match="no image/mask pairs"):
        assign_splits([])


def test_save_load_apply_roundtrip(tmp_path):
    pairs = make_pairs(20)
    splits = assign_splits(pairs, val_fraction=0.25, test_fraction=0.1, seed=1)
    path = tmp_path / "run" / "splits.csv"
    save_splits(path, splits)
    assert path.read_text().splitlines()[0] == "image_id,split"
    assert [p.name for p in path.parent.iterdir()] == ["splits.csv"]
    mapping = load_splits(path)
    assert mapping == {p.case_id: name for name, group in splits.items() for p in group}
    applied = apply_splits(pairs, mapping)
    assert as_ids(assign_splits(applied)) == as_ids(splits)


def test_load_splits_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_splits(tmp_path / "none.csv")
    bad = tmp_path / "s.csv"
    bad.write_text("name,fold\na,1\n")
    with pytest.raises(DataError, match="s.csv has columns name, fold; expected 'image_id,split'"):
        load_splits(bad)
    bad.write_text("image_id,split\na,train\na,val\n")
    with pytest.raises(DataError, match="row 3: case a is listed in both train and val"):
        load_splits(bad)
    bad.write_text("image_id,split\na,\n")
    with pytest.raises(DataError, match="row 2: case a has no split"):
        load_splits(bad)
    bad.write_text("case_id,split\na,TRAIN\nb,valid\n")
    assert load_splits(bad) == {"a": "train", "b": "val"}


def test_apply_splits_requires_every_pair():
    with pytest.raises(DataError, match=r"2 of 3 pairs are missing from the split file \(case001, case002\)"):
        apply_splits(make_pairs(3), {"case000": "train"})


def test_save_splits_rejects_unknown_names(tmp_path):
    with pytest.raises(DataError, match="unknown split names holdout"):
        save_splits(tmp_path / "s.csv", {"holdout": make_pairs(1)})
    assert not (tmp_path / "s.csv").exists()
