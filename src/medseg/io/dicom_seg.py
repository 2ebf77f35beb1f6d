"""Write predictions as DICOM Segmentation objects (highdicom).

One SEG per series, referencing every source image (single-frame files in slice order, or the frames
of one multi-frame file), one segment per non-zero class with its label, colour and the algorithm
(name, version). Patient, study and frame-of-reference modules are copied from the source, so viewers
file the SEG with its study; invalid source values are repaired, emptied or left out first
(:mod:`medseg.io.dicom_repair`), so an imperfect header does not stop the SEG. Empty frames are left
out, as the standard allows; a slice that is
referenced but has no frame is empty.
"""

from __future__ import annotations

import copy
import logging
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from medseg.errors import DataError, first_line
from medseg.io.dicom_repair import add_type2, repair_header
from medseg.io.files import atomic_path

log = logging.getLogger(__name__)

#: Display colours (RGB) for segments 1, 2, ...
PALETTE = ((255, 64, 64), (64, 200, 64), (64, 128, 255), (255, 200, 0), (200, 64, 255), (0, 200, 200),
           (255, 128, 0), (160, 160, 160))


def write_seg(sources: Sequence, labels: np.ndarray, path: str | Path, *, segment_names: Sequence[str],
              algorithm: str, version: str, parameters: dict[str, str] | None = None,
              series_description: str = "medseg segmentation", series_instance_uid: str | None = None,
              instance_number: int = 1, repairs: list[str] | None = None) -> Path:
    """Write ``labels`` (N x H x W, 0 = background, k = class k) for ``sources`` as a DICOM SEG at ``path``.

    ``sources`` are pydicom datasets: N single-frame images in the order of ``labels``, or one
    multi-frame image with N frames (they are not changed). ``segment_names[k - 1]`` names segment k
    (the foreground classes: ``data.class_names`` without the background).
    ``series_instance_uid`` and ``instance_number`` put several SEGs in one series (default: a new
    series, instance 1).

    Source headers are copied as far as they are valid: invalid values are repaired, emptied (type 2)
    or left out (rules in :mod:`medseg.io.dicom_repair`); absent type 2 patient/study attributes are
    added empty. What changed is logged (attribute names and rules, never values) and appended to
    ``repairs``. DataError when the SEG cannot be made, e.g. when the source has no Study, Series or
    SOP Instance UID (identifiers are never invented).
    """
    import highdicom as hd
    from pydicom.sr.codedict import codes

    labels = np.asarray(labels)
    if labels.ndim != 3 or labels.dtype.kind not in "ub":
        raise ValueError(f"labels must be an N x H x W integer label map, got {labels.shape} {labels.dtype}")
    k = len(segment_names)
    if labels.size and int(labels.max()) > k:
        raise ValueError(f"labels hold class {int(labels.max())} but only {k} segment names were given")
    segments = [
        hd.seg.SegmentDescription(
            segment_number=i + 1, segment_label=str(name)[:64],
            segmented_property_category=codes.SCT.Tissue, segmented_property_type=codes.SCT.Tissue,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=hd.AlgorithmIdentificationSequence(
                name=algorithm[:64], family=codes.cid7162.ArtificialIntelligence, version=version[:64],
                parameters=parameters or None),
            display_color=hd.color.CIELabColor.from_rgb(*PALETTE[i % len(PALETTE)]))
        for i, name in enumerate(segment_names)
    ]
    sources, notes = _repaired(sources)
    first = sources[0]
    try:
        number = int(first.get("SeriesNumber") or 0) + 1000
    except (TypeError, ValueError):
        number = 1000
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # highdicom's warnings quote tag values such as the patient's name
            seg = hd.seg.Segmentation(
                source_images=list(sources), pixel_array=labels.astype(np.uint8),
                segmentation_type=hd.seg.SegmentationTypeValues.BINARY, segment_descriptions=segments,
                series_instance_uid=series_instance_uid or hd.UID(), series_number=number % 2**31,
                sop_instance_uid=hd.UID(), instance_number=instance_number, manufacturer="medseg",
                manufacturer_model_name=algorithm[:64],
                software_versions=version[:64], device_serial_number="0", content_label="MEDSEG",
                content_description=series_description[:64], series_description=series_description[:64],
                omit_empty_frames=bool(labels.any()))
    except (ValueError, TypeError, AttributeError, KeyError) as err:
        raise DataError(f"a DICOM SEG could not be made ({first_line(err)})") from None
    _fix_2d_source(seg, first)
    add_type2(seg)  # already in the sources: nothing new to note
    if notes:
        log.warning("%s: the source header was repaired for the SEG: %s", Path(path).name, "; ".join(notes))
        if repairs is not None:
            repairs.extend(notes)
    with atomic_path(path) as tmp:
        seg.save_as(tmp)
    return Path(path)


_UIDS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID")


def _repaired(sources: Sequence) -> tuple[list, list[str]]:
    """Repaired copies of the source headers and the notes of the first (all share patient and study)."""
    out, notes = [], []
    for i, src in enumerate(sources):
        missing = [k for k in _UIDS if not str(src.get(k, "") or "").strip()]
        if missing:
            raise DataError(f"a DICOM SEG could not be made: source image {i + 1} has no {', '.join(missing)}, "
                            "and identifiers are never invented")
        ds = copy.deepcopy(src)
        changed = repair_header(ds, keep=_UIDS) + add_type2(ds)
        if i == 0:
            notes = changed
        out.append(ds)
    return out, notes


def _fix_2d_source(seg, source) -> None:
    """For sources without plane geometry (2-D projection, secondary capture, ultrasound): the type 2C
    Patient Orientation, and no Pixel Measures when the source has no slice thickness to give them."""
    shared = seg.SharedFunctionalGroupsSequence[0]
    per_frame = seg.get("PerFrameFunctionalGroupsSequence") or []
    if "PlaneOrientationSequence" in shared or any("PlaneOrientationSequence" in f for f in per_frame):
        return
    if "PatientOrientation" not in seg:
        seg.PatientOrientation = source.get("PatientOrientation", "")
    measures = shared.get("PixelMeasuresSequence")
    if measures and not measures[0].get("SliceThickness"):
        del shared.PixelMeasuresSequence
