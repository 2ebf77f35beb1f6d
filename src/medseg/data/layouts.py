"""Find image/mask pairs on disk.

:func:`find_pairs` understands, in this order:

1. a manifest: ``root/manifest.csv`` or ``manifest=`` (or ``root`` itself a ``.csv``), header
   ``image,mask[,split][,roi]`` plus any other columns (kept in ``Pair.attrs``, e.g. a patient id to
   group cross-validation folds), paths relative to the CSV's folder or absolute;
2. two sub-folders of ``root`` named as in :data:`FOLDER_PAIRS` (``images/`` + ``masks/`` ...);
3. two sub-folders of ``root`` whose names contain "input" and "groundtruth" (the official ISIC
   downloads ``ISIC2018_Task1-2_Training_Input`` + ``ISIC2018_Task1_Training_GroundTruth``);
4. images and masks side by side in ``root`` itself (``ISIC_1.jpg`` + ``ISIC_1_segmentation.png``);
5. one sub-folder per class, each laid out as 2 or 4 (BUSI: ``benign/``, ``malignant/``, ``normal/``);
   case ids are ``<class folder>__<stem>``;
6. explicit ``images=`` and ``masks=`` folders (the same folder twice works like 4).

In folders, a mask belongs to an image when its stem is the image's stem plus one of
:data:`~medseg.data.pairs.MASK_SUFFIXES` (``ISIC_1.jpg`` + ``ISIC_1_segmentation.png``, or the same
stem); the suffix the mask folder uses is detected. Further masks of one image, ``<mask stem>_<n>``
(BUSI ``benign (4)_mask_1.png`` beside ``benign (4)_mask.png``), are kept in
:attr:`~medseg.data.pairs.Pair.extra_masks` and merged when read. If that leaves images unmatched, a
trailing image suffix from :data:`IMAGE_NAME_SUFFIXES` may be dropped first (DRIVE: ``21_training.tif``
+ ``21_manual1.gif``).
Only files ending in :func:`~medseg.io.formats.image_suffixes` count; hidden files and everything else
(``LICENSE``, ``ATTRIBUTION.txt``, ``Thumbs.db``, sub-folders) are ignored. Files without a partner go
to ``problems``. A ``split.csv`` (``image_id,split``) beside the data sets ``Pair.split`` unless the
manifest has a split column.

Regions of interest (DRIVE fields of view, ``21_training_mask.gif``): a manifest ``roi`` column, a
sibling folder named as in :data:`ROI_FOLDERS` (``fov_masks/``; the official DRIVE ``mask/`` beside
``1st_manual/``), or ``<image stem>_mask`` files among the labels when the labels have their own
suffix (``_manual1``): such files are never taken for labels.

Masks may also be LabelMe JSON files (``ISIC_1.json``). An images folder holding DICOM files (or
series sub-folders) is matched by :mod:`medseg.data.dicom_layout`: one pair per frame, masks as PNGs
named after the frame, a DICOM SEG, or a NRRD/NIfTI label volume per series.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import replace
from pathlib import Path

from medseg.data.pairs import MASK_SUFFIXES, DataIndex, Pair, Problem
from medseg.data.splits import load_splits, normalise_split, read_csv_table
from medseg.errors import DataError
from medseg.io.formats import image_suffixes, is_image_file, is_mask_file

#: (image folder, mask folder) names looked for inside ``root``, compared case-insensitively.
FOLDER_PAIRS = (("images", "masks"), ("images", "1st_manual"), ("image", "mask"), ("images", "labels"),
                ("imgs", "masks"),
                ("imgs", "labels"), ("img", "gt"), ("images", "gt"), ("img", "mask"))
#: Sub-folders holding region-of-interest masks (DRIVE fields of view), compared case-insensitively;
#: ``mask`` counts only beside a ``1st_manual`` label folder (the official DRIVE layout).
ROI_FOLDERS = ("fov_masks", "fov_mask", "fov", "roi", "rois", "roi_masks")
#: ROI file stem = image stem + one of these (DRIVE: ``21_training.tif`` + ``21_training_mask.gif``).
ROI_SUFFIXES = ("_mask", "_fov", "_roi", "")
#: Dropped from the end of image stems when that matches more masks (DRIVE ``21_training``).
IMAGE_NAME_SUFFIXES = ("", "_training", "_test", "_image", "_img")


def _image_files(folder: Path, masks: bool = False) -> list[Path]:
    """Image files in ``folder``, or with ``masks`` the files a mask format reads (images, LabelMe ...)."""
    wanted = is_mask_file if masks else is_image_file
    return sorted(p for p in folder.iterdir() if not p.name.startswith(".") and p.is_file() and wanted(p))


def _strip(stem: str, suffix: str) -> str | None:
    if not suffix:
        return stem
    return stem[: -len(suffix)] if stem.endswith(suffix) and len(stem) > len(suffix) else None


def _best_rule(images: list[Path], masks: list[Path]) -> tuple[str, str]:
    """The (image suffix, mask suffix) that matches the most images; ties go to the simpler rule."""
    best, best_count = ("", ""), -1
    for img_sfx in IMAGE_NAME_SUFFIXES:
        keys = {k for p in images if (k := _strip(p.stem, img_sfx)) is not None}
        for mask_sfx in MASK_SUFFIXES:
            count = len(keys & {k for p in masks if (k := _strip(p.stem, mask_sfx)) is not None})
            if count > best_count:
                best, best_count = (img_sfx, mask_sfx), count
    return best


_NUMBERED = re.compile(r"(.+)_(\d{1,3})")


def _numbered(stem: str) -> tuple[str, int] | None:
    """``('benign (4)_mask', 1)`` for ``benign (4)_mask_1``: a further mask of one image (BUSI)."""
    m = _NUMBERED.fullmatch(stem)
    return (m.group(1), int(m.group(2))) if m else None


def _roi_for(images: list[Path], files: list[Path]) -> dict[str, Path]:
    """{image stem: ROI file} for files named <image stem><ROI suffix> (first suffix that matches any)."""
    by_stem = {p.stem: p for p in files}
    for suffix in ROI_SUFFIXES:
        found = {img.stem: by_stem[img.stem + suffix] for img in images if img.stem + suffix in by_stem}
        if found:
            return found
    return {}


def _separate_rois(images: list[Path], masks: list[Path]) -> tuple[list[Path], dict[str, Path]]:
    """Field-of-view files mixed with the labels (``21_training_mask.gif`` beside ``21_manual1.gif``).

    Files named <image stem>_mask/_fov/_roi are regions of interest, not labels, when the other files
    still give every image they cover a label; otherwise (``ISIC_1_mask.png`` is the only mask) they
    stay labels. Returns (label files, {image stem: ROI file}).
    """
    stems = {p.stem for p in images}
    candidates = [p for p in masks if any(_strip(p.stem, sfx) in stems for sfx in ROI_SUFFIXES[:-1])]
    if not candidates:
        return masks, {}
    rest = [p for p in masks if p not in set(candidates)]
    covered = {img.stem for img in images if any(img.stem + sfx == c.stem for c in candidates
                                                  for sfx in ROI_SUFFIXES[:-1])}
    img_sfx, mask_sfx = _best_rule(images, rest)
    keys = {k for p in rest if (k := _strip(p.stem, mask_sfx)) is not None}
    if not rest or not all(_strip(s, img_sfx) in keys for s in covered):
        return masks, {}
    return rest, _roi_for(images, candidates)


def _roi_folder(root: Path | None, masks_dir: Path) -> Path | None:
    """A sibling folder of ROI masks (``fov_masks/``; DRIVE's ``mask/`` beside ``1st_manual/``)."""
    if root is None or not root.is_dir():
        return None
    subdirs = {p.name.lower(): p for p in root.iterdir() if p.is_dir() and p.resolve() != masks_dir.resolve()}
    for name in ROI_FOLDERS:
        if name in subdirs:
            return subdirs[name]
    return subdirs["mask"] if masks_dir.name.lower() == "1st_manual" and "mask" in subdirs else None


def _split_flat(files: list[Path]) -> tuple[list[Path], list[Path]]:
    """Images and masks mixed in one folder: masks are the files named <other file's stem><suffix>,
    or <other file's stem><suffix>_<n> (several masks of one image, BUSI)."""
    stems = {p.stem for p in files}
    suffix = max(MASK_SUFFIXES[1:], key=lambda sfx: sum(_strip(p.stem, sfx) in stems for p in files))

    annotated = {_strip(q.stem, suffix) for q in files}  # stems that have a mask: images, not masks

    def is_mask(p: Path) -> bool:
        if _strip(p.stem, suffix) in stems:
            return True
        n = _numbered(p.stem)
        return n is not None and _strip(n[0], suffix) in stems and p.stem not in annotated
    masks = [p for p in files if is_mask(p)]
    return [p for p in files if p not in set(masks)], masks


def _mask_key(p: Path, mask_sfx: str, image_keys: set[str]) -> tuple[str | None, int]:
    """(image key, mask number) of a mask file: number 0 for ``<key><sfx>``, n for ``<key><sfx>_<n>``."""
    key = _strip(p.stem, mask_sfx)
    if key in image_keys:
        return key, 0
    n = _numbered(p.stem) if mask_sfx else None  # same-stem masks: "a_1" is the mask of an image "a_1"
    if n is not None and (base := _strip(n[0], mask_sfx)) in image_keys:
        return base, n[1] + 1
    return key, 0


def _match_folders(images_dir: Path, masks_dir: Path) -> tuple[list[Pair], list[Problem], str]:
    for folder in (images_dir, masks_dir):
        if not folder.is_dir():
            raise DataError(f"data folder {folder} does not exist" if not folder.exists()
                            else f"{folder} is a file; expected a folder of images")
    if images_dir.resolve() == masks_dir.resolve():
        images, masks = _split_flat(_image_files(images_dir))
    else:  # masks may also be LabelMe JSON files (any format of medseg.io.formats with read_labels)
        from medseg.io.dicom_series import has_dicom

        if has_dicom(images_dir):
            from medseg.data.dicom_layout import match_dicom

            return match_dicom(images_dir, masks_dir)
        images = _image_files(images_dir)
        masks = _image_files(masks_dir, masks=True)
    masks, rois = _separate_rois(images, masks)
    img_sfx, mask_sfx = _best_rule(images, masks)
    image_keys = {k for p in images if (k := _strip(p.stem, img_sfx)) is not None}
    by_key: dict[str, list[Path]] = {}
    number: dict[Path, int] = {}
    for p in masks:
        key, number[p] = _mask_key(p, mask_sfx, image_keys)
        by_key.setdefault(key if key is not None else f"\0{p.stem}", []).append(p)
    pairs: list[Pair] = []
    problems: list[Problem] = []
    stems = Counter(p.stem for p in images)
    used: set[str] = set()
    for img in images:
        key = _strip(img.stem, img_sfx)
        found = by_key.get(key, []) if key is not None else []
        if stems[img.stem] > 1:
            problems.append(Problem(img.stem, img, "duplicate", f"image {img} shares its name with another "
                                    f"image in {images_dir}; keep one file per case"))
        elif len(found) > 1 and len({number[p] for p in found}) == len(found):  # <stem>_mask, <stem>_mask_1 ...
            ordered = sorted(found, key=lambda p: number[p])
            pairs.append(Pair(img.stem, img, ordered[0], extra_masks=tuple(ordered[1:]), roi=rois.get(img.stem)))
        elif len(found) > 1:
            names = ", ".join(p.name for p in found)
            problems.append(Problem(img.stem, img, "duplicate", f"image {img} has {len(found)} masks in "
                                    f"{masks_dir} ({names}); keep one"))
        elif not found:
            expected = f"{key}{mask_sfx}.*" if key is not None else f"{img.stem}.*"
            problems.append(Problem(img.stem, img, "missing-mask",
                                    f"image {img} has no mask in {masks_dir} (expected {expected})"))
        else:
            pairs.append(Pair(img.stem, img, found[0], roi=rois.get(img.stem)))
        if key is not None:
            used.add(key)
    problems += [Problem(m.stem, m, "missing-image", f"mask {m} has no image in {images_dir}")
                 for key, files in by_key.items() if key not in used for m in files]
    rule = f"mask suffix '{mask_sfx}'" if mask_sfx else "same names"
    if img_sfx:
        rule += f", image suffix '{img_sfx}'"
    return pairs, problems, rule


def _read_manifest(path: Path) -> tuple[list[Pair], list[Problem], bool]:
    header, rows = read_csv_table(path, "manifest")
    if not rows:
        raise DataError(f"manifest {path} has no rows; expected a header 'image,mask[,split]' and one row "
                        "per pair")
    if not {"image", "mask"} <= set(header):
        raise DataError(f"manifest {path} has columns {', '.join(header)}; expected 'image,mask[,split]'")
    has_split = "split" in header
    base = path.parent
    pairs: list[Pair] = []
    problems: list[Problem] = []
    for line, row in enumerate(rows, start=2):
        where = f"manifest {path.name} row {line}"
        if not row["image"]:
            problems.append(Problem(f"row{line}", path, "missing-image", f"{where} has no image path"))
            continue
        image = base / row["image"]
        case_id = image.stem
        if not row["mask"]:
            problems.append(Problem(case_id, path, "missing-mask", f"{where} has no mask path"))
            continue
        mask = base / row["mask"]
        split = normalise_split(row.get("split", ""), where) if has_split else None
        roi = base / row["roi"] if row.get("roi") else None
        attrs = tuple((k, v) for k, v in row.items() if k not in ("image", "mask", "split", "roi"))
        files = (("missing-image", image), ("missing-mask", mask)) + ((("missing-roi", roi),) if roi else ())
        missing = [(kind, p) for kind, p in files if not p.is_file()]
        for kind, p in missing:
            problems.append(Problem(case_id, p, kind, f"{where}: {kind.split('-')[1]} {p} does not exist"))
        if not missing:
            pairs.append(Pair(case_id, image, mask, split, roi=roi, attrs=attrs))
    return pairs, problems, has_split


def _find_subfolders(root: Path) -> tuple[Path, Path] | None:
    subdirs = {p.name.lower(): p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")}
    for img_name, mask_name in FOLDER_PAIRS:
        if img_name in subdirs and mask_name in subdirs:
            return subdirs[img_name], subdirs[mask_name]
    inputs = sorted(p for n, p in subdirs.items() if "input" in n)
    truths = sorted(p for n, p in subdirs.items() if "groundtruth" in n.replace("_", "").replace("-", ""))
    if len(inputs) == 1 and len(truths) == 1:
        return inputs[0], truths[0]
    if inputs and truths:
        names = ", ".join(p.name for p in inputs + truths)
        raise DataError(f"data folder {root} has several input/ground-truth folders ({names}); "
                        "choose one pair with --images and --masks")
    return None


def _class_folders(root: Path) -> list[tuple[Path, tuple[Path, Path]]]:
    """Sub-folders of ``root`` that each hold a dataset (one folder per class, as BUSI's ``benign/``,
    ``malignant/``, ``normal/``): (class folder, (images folder, masks folder))."""
    out = []
    for sub in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        try:
            folders = _find_subfolders(sub)
        except DataError:
            continue
        if folders is None and _split_flat(_image_files(sub))[1]:
            folders = (sub, sub)
        if folders is not None:
            out.append((sub, folders))
    return out


def _match_classes(classes: list[tuple[Path, tuple[Path, Path]]]) -> tuple[list[Pair], list[Problem], str]:
    """One dataset from class sub-folders; case ids are ``<class folder>__<stem>``."""
    pairs: list[Pair] = []
    problems: list[Problem] = []
    rules = set()
    for sub, folders in classes:
        found, issues, rule = _match_folders(*folders)
        pairs += [replace(p, case_id=f"{sub.name}__{p.case_id}") for p in found]
        problems += [replace(q, case_id=f"{sub.name}__{q.case_id}") for q in issues]
        rules.add(rule)
    names = ", ".join(f"{sub.name}/" for sub, _ in classes)
    return pairs, problems, f"class folders {names} ({'; '.join(sorted(rules))})"


def _no_pairs(root: Path) -> DataError:
    names = ", ".join(f"{a}/ + {b}/" for a, b in FOLDER_PAIRS[:4])
    return DataError(f"no image/mask pairs found in {root}: looked for manifest.csv, sub-folders ({names} "
                     "...), *Input + *GroundTruth folders and <name>_mask-style files side by side; pass "
                     "--images and --masks, or write a manifest.csv with columns image,mask")


def find_pairs(root: str | Path | None = None, *, images: str | Path | None = None,
               masks: str | Path | None = None, manifest: str | Path | None = None) -> DataIndex:
    """Find image/mask pairs under ``root`` (layouts in the module docstring) or in explicit folders.

    Raises DataError when a folder is missing or nothing usable is found; files without a partner
    become fatal problems in the returned index.
    """
    root = Path(root) if root is not None else None
    if (images is None) != (masks is None):
        raise DataError("give both an images folder and a masks folder (--images and --masks), or neither")
    if manifest is None and images is None:
        if root is None:
            raise DataError("no data given: pass a data folder, --images and --masks, or a manifest.csv")
        if root.is_file() and root.suffix.lower() == ".csv":
            manifest = root
        elif not root.exists():
            raise DataError(f"data folder {root} does not exist")
        elif not root.is_dir():
            raise DataError(f"{root} is a file; expected a data folder or a manifest .csv")
        elif (root / "manifest.csv").is_file():
            manifest = root / "manifest.csv"
    has_split = False
    if manifest is not None:
        manifest = Path(manifest)
        if not manifest.is_file():
            raise DataError(f"manifest {manifest} does not exist")
        pairs, problems, has_split = _read_manifest(manifest)
        layout = f"manifest {manifest.name}" + (" with split column" if has_split else "")
        root = root if root is not None and root.is_dir() else manifest.parent
        if not pairs and not problems:
            raise _no_pairs(manifest)
    else:
        if images is not None:
            folders = (Path(images), Path(masks))
        else:
            folders = _find_subfolders(root)
            if folders is None and _split_flat(_image_files(root))[1]:
                folders = (root, root)
            if folders is None:
                classes = _class_folders(root)
                if not classes:
                    raise _no_pairs(root)
        if folders is not None:
            pairs, problems, rule = _match_folders(*folders)
            roi_dir = _roi_folder(folders[1].parent, folders[1])
            if roi_dir is not None and pairs:
                rois = _roi_for([p.image for p in pairs], _image_files(roi_dir))
                pairs = [replace(p, roi=rois.get(p.image.stem, p.roi)) for p in pairs]
                rule += f", regions of interest in {roi_dir.name}/"
            same = folders[0].resolve() == folders[1].resolve()
            where = f"one folder {folders[0].name}/" if same else f"{folders[0].name}/ + {folders[1].name}/"
            layout = f"{where} ({rule})"
            if not pairs and not problems:
                raise DataError(f"no image files found in {folders[0]} and {folders[1]} "
                                f"(looked for {', '.join(sorted(image_suffixes()))})")
        else:
            pairs, problems, layout = _match_classes(classes)
    pairs, problems = _drop_duplicate_ids(pairs, problems)
    split_csv = root / "split.csv" if root is not None else None
    if not has_split and split_csv is not None and split_csv.is_file():
        mapping = load_splits(split_csv)
        pairs = [replace(p, split=mapping.get(p.case_id)) for p in pairs]
        layout += " + split.csv"
    pairs.sort(key=lambda p: (p.case_id, str(p.image)))
    problems.sort(key=lambda q: (q.case_id, str(q.path), q.kind))
    return DataIndex(root, layout, pairs, problems, _ignored_folders(root, pairs))


def _ignored_folders(root: Path | None, pairs: list[Pair]) -> list[Path]:
    """Sub-folders of ``root`` (not hidden) that hold none of the pairs' files (DRIVE's ``fov_masks/``)."""
    if root is None or not root.is_dir():
        return []
    used = {parent.resolve() for p in pairs for f in (p.image, p.mask, p.roi) if f is not None
            for parent in Path(f).parents}
    return sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith(".") and d.resolve() not in used)


def _drop_duplicate_ids(pairs: list[Pair], problems: list[Problem]) -> tuple[list[Pair], list[Problem]]:
    """Cases whose id appears twice (same stem in different folders of a manifest) are ambiguous."""
    counts = Counter(p.case_id for p in pairs)
    if all(n == 1 for n in counts.values()):
        return pairs, problems
    problems = problems + [Problem(p.case_id, p.image, "duplicate", f"image {p.image} has the same case id "
                                   f"'{p.case_id}' as another image; case ids (file stems) must be unique")
                           for p in pairs if counts[p.case_id] > 1]
    return [p for p in pairs if counts[p.case_id] == 1], problems
