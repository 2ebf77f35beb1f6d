"""Label maps from annotation tools, as 2-D masks for the DICOM frames (or images) they annotate.

- **DICOM SEG** (:func:`read_seg`): binary, fractional (foreground at half the maximum) and
  overlapping segments; frames matched to source images by referenced SOP Instance UID (and frame
  number), else by plane position. A referenced slice without a SEG frame is an empty slice.
  Decoded with :func:`medseg.io.dicom.decode`, so 1-bit RLE and deflated frames work too.
- **NRRD / NIfTI / MetaImage** label volumes (ITK-SNAP, 3D Slicer) via SimpleITK: resampled
  (nearest neighbour) onto each DICOM frame's own grid, so any orientation or axis order works; a
  volume cropped to its labelled region (3D Slicer) gives empty masks on the frames of its series
  outside its extent; a frame between two of its slices is refused rather than guessed.
- **LabelMe JSON** (:func:`read_labelme`): polygons, rectangles, circles, lines, drawn at the size the
  JSON records.

Label values: a SEG gives segment numbers (where segments overlap, the higher number wins and
:attr:`SegLabels.overlap_pixels` counts the conflicts); volumes keep their label values; LabelMe gives
1..K by class name.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

from medseg.errors import DataError
from medseg.io.dicom import SEG_SOP_CLASS, DicomFrame, decode, n_frames, read_dataset
from medseg.io.windowing import frame_item

VOLUME_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")
_POSITION_TOLERANCE = 0.05  # mm: a SEG frame and a source frame at the same place
_SLICE_TOLERANCE = 0.1  # fraction of a slice: how far between two volume slices a frame may lie


def is_seg(path: str | Path) -> bool:
    """True for a ``.dcm`` file whose header says DICOM SEG (Segmentation Storage SOP class)."""
    if not Path(path).name.lower().endswith(".dcm"):
        return False
    try:
        return read_dataset(path, pixels=False).get("SOPClassUID") == SEG_SOP_CLASS
    except DataError:
        return False


def is_labelme(path: str | Path) -> bool:
    """True for a JSON file that holds LabelMe ``shapes`` and ``imageHeight`` (read as text, not parsed)."""
    try:
        head = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    return '"shapes"' in head and '"imageHeight"' in head


def _cache_key(path: str | Path) -> tuple[str, float]:
    path = Path(path)
    try:
        return str(path.resolve()), path.stat().st_mtime
    except OSError:
        raise DataError(f"label file {path} does not exist") from None


# --------------------------------------------------------------------------------------------- SEG
@dataclass(frozen=True)
class Segment:
    number: int
    label: str


@dataclass
class SegLabels:
    """The frames of a SEG as label maps keyed by the source frame they annotate."""

    path: Path
    segments: list[Segment]
    shape: tuple[int, int]
    by_source: dict[tuple[str, int | None], np.ndarray] = field(default_factory=dict)
    by_position: list[tuple[tuple[float, float, float], np.ndarray]] = field(default_factory=list)
    referenced: set[tuple[str, int | None]] = field(default_factory=set)  # every referenced source frame
    overlap_pixels: int = 0

    def for_frame(self, frame: DicomFrame) -> np.ndarray | None:
        """The label map of ``frame`` (zeros when referenced but empty); None when the SEG omits it."""
        for key in ((frame.sop_instance_uid, frame.frame), (frame.sop_instance_uid, None)):
            if key in self.by_source:
                return self._checked(self.by_source[key], frame)
        if (frame.sop_instance_uid, frame.frame) in self.referenced or \
                (frame.sop_instance_uid, None) in self.referenced:
            return np.zeros(self.shape, np.uint8)
        pos = frame.geometry.position
        if pos is not None and not self.by_source:
            for where, labels in self.by_position:
                if np.allclose(where, pos, atol=_POSITION_TOLERANCE):
                    return self._checked(labels, frame)
        return None

    def _checked(self, labels: np.ndarray, frame: DicomFrame) -> np.ndarray:
        if labels.shape != (frame.rows, frame.columns):
            raise DataError(f"SEG {self.path} is {labels.shape[1]}x{labels.shape[0]} but the image it references "
                            f"({frame.path.name}) is {frame.columns}x{frame.rows}")
        return labels.copy()  # the cached SEG stays as read


def _source_key(deriv) -> tuple[str, int | None] | None:
    if deriv is not None:
        for src in deriv.get("SourceImageSequence", []):
            if "ReferencedSOPInstanceUID" in src:
                number = src.get("ReferencedFrameNumber")
                if number is not None and not isinstance(number, (int, str)):
                    number = number[0] if len(number) else None
                return str(src.ReferencedSOPInstanceUID), int(number) if number not in (None, "") else None
    return None


def read_seg(path: str | Path) -> SegLabels:
    """Parse a DICOM SEG into label maps per source frame (cached while the file is unchanged)."""
    return _read_seg(*_cache_key(path))


@lru_cache(maxsize=8)
def _read_seg(path_str: str, _mtime: float) -> SegLabels:
    path = Path(path_str)
    ds = read_dataset(path)
    if ds.get("SOPClassUID") != SEG_SOP_CLASS:
        raise DataError(f"{path} is not a DICOM Segmentation (SEG)")
    segments = [Segment(int(s.SegmentNumber), str(s.get("SegmentLabel", f"segment {s.SegmentNumber}")))
                for s in ds.get("SegmentSequence", [])]
    pixels = decode(ds, path)  # (F, H, W)
    per_frame = ds.get("PerFrameFunctionalGroupsSequence", [])
    n = min(n_frames(ds), len(pixels), len(per_frame) or n_frames(ds))
    if n == 0:
        raise DataError(f"SEG {path} has no frames with a segment and source reference (per-frame groups)")
    if str(ds.get("SegmentationType", "BINARY")).upper() == "FRACTIONAL":
        top = float(ds.get("MaximumFractionalValue", 255) or 255)
        masks = pixels[:n] >= top / 2
    else:
        masks = pixels[:n] > 0
    out = SegLabels(path, segments, (int(ds.Rows), int(ds.Columns)))
    for ref_series in ds.get("ReferencedSeriesSequence", []):
        for inst in ref_series.get("ReferencedInstanceSequence", []):
            out.referenced.add((str(inst.ReferencedSOPInstanceUID), None))
    by_pos: dict[tuple[float, ...], np.ndarray] = {}
    for i in range(n):
        try:  # functional groups are per frame, or shared by all frames
            number = int(frame_item(ds, i, "SegmentIdentificationSequence").ReferencedSegmentNumber)
        except (AttributeError, IndexError, KeyError, TypeError, ValueError):
            raise DataError(f"SEG {path} frame {i + 1} does not say which segment it holds") from None
        key = _source_key(frame_item(ds, i, "DerivationImageSequence"))
        pos = frame_item(ds, i, "PlanePositionSequence")
        where = tuple(round(float(v), 3) for v in pos.ImagePositionPatient) if pos is not None else None
        if key is None and where is None:
            raise DataError(f"SEG {path} frame {i + 1} references no source image and has no plane position")
        target, k = (out.by_source, key) if key is not None else (by_pos, where)
        labels = target.setdefault(k, np.zeros(out.shape, np.uint8))
        out.overlap_pixels += int(np.count_nonzero(labels[masks[i]]))
        labels[masks[i]] = np.maximum(labels[masks[i]], number)
        if key is not None:
            out.referenced.add(key)
            if where is not None:
                by_pos.setdefault(where, labels)
    out.by_position = list(by_pos.items())
    return out


# ------------------------------------------------------------------------------------------ volumes
@lru_cache(maxsize=4)
def _read_volume(path_str: str, _mtime: float):
    import SimpleITK as sitk

    try:
        vol = sitk.ReadImage(path_str)
    except RuntimeError as err:
        reason = str(err).strip().splitlines()[-1][:200] if str(err).strip() else "unreadable"
        reason = "".join(ch if ch.isprintable() else "?" for ch in reason)
        raise DataError(f"label volume {path_str} could not be read ({reason})") from None
    if vol.GetNumberOfComponentsPerPixel() != 1:
        raise DataError(f"label volume {path_str} has {vol.GetNumberOfComponentsPerPixel()} values per voxel; "
                        "expected one label map (export a labelmap, not a segmentation with layers)")
    if vol.GetDimension() == 2:
        vol = sitk.JoinSeries(vol)
    return vol


def volume_labels(path: str | Path, frame: DicomFrame) -> np.ndarray | None:
    """The label volume at ``path`` resampled onto ``frame``'s grid (nearest neighbour; pixels outside the
    volume are 0), or None when the frame's rectangle lies wholly outside the volume's extent.

    A volume cropped to its labelled region (3D Slicer) covers only some frames; callers that know the
    volume belongs to the frame's series give the others empty masks (:func:`medseg.io.formats.labels_for_frames`).
    DataError when the frame lies between two slices of the volume (it was made on another series).
    """
    import SimpleITK as sitk

    vol = _read_volume(*_cache_key(path))
    g = frame.geometry
    if g.position is None or g.orientation is None or g.spacing is None:
        raise DataError(f"DICOM file {frame.path} has no position, orientation or pixel spacing, so label volume "
                        f"{path} cannot be matched to it by geometry")
    row, col, normal = np.asarray(g.orientation[:3]), np.asarray(g.orientation[3:]), g.normal
    origin = np.asarray(g.position)
    corners = [origin + row * g.spacing[1] * c + col * g.spacing[0] * r
               for r in (0, frame.rows - 1) for c in (0, frame.columns - 1)]
    at = np.asarray([vol.TransformPhysicalPointToContinuousIndex(p.tolist()) for p in corners])
    size = np.asarray(vol.GetSize())
    if np.any(at.max(axis=0) < -0.5) or np.any(at.min(axis=0) > size - 0.5):
        return None  # the frame's rectangle misses the volume's extent (a cropped volume, another region)
    index = at.mean(axis=0)
    vol_dir = np.asarray(vol.GetDirection()).reshape(3, 3)
    axis = int(np.argmax(np.abs(vol_dir.T @ normal)))  # the volume axis along the frame's normal
    if abs(abs(float(vol_dir[:, axis] @ normal)) - 1) < 1e-3 and \
            abs(index[axis] - round(index[axis])) > _SLICE_TOLERANCE:
        raise DataError(f"DICOM frame {frame.name} lies between two slices of label volume {path} "
                        f"(at slice {index[axis]:.2f}); the volume was not made on this series")
    ref = sitk.Image(frame.columns, frame.rows, 1, vol.GetPixelID())
    ref.SetOrigin(tuple(g.position))
    ref.SetSpacing((g.spacing[1], g.spacing[0], max(g.thickness or 1.0, 1e-3)))
    ref.SetDirection(tuple(np.stack([row, col, normal], axis=1).ravel().tolist()))
    out = sitk.Resample(vol, ref, sitk.Transform(), sitk.sitkNearestNeighbor, 0, vol.GetPixelID())
    labels = sitk.GetArrayFromImage(out)[0]
    if labels.dtype.kind == "f":
        if not np.isfinite(labels).all():
            raise DataError(f"label volume {path} has NaN or infinite values; expected a label map (0 = background)")
        labels = np.rint(labels)
    if labels.min() < 0:
        raise DataError(f"label volume {path} has negative values; expected a label map (0 = background)")
    return labels.astype(np.uint8 if labels.max() < 256 else np.uint16)


# ------------------------------------------------------------------------------------------ LabelMe
_BACKGROUND = {"_background_", "background", "__ignore__"}


def read_labelme(path: str | Path, classes: dict[str, int] | None = None) -> tuple[np.ndarray, list[str]]:
    """(HxW label map, class names in the file) for a LabelMe JSON; ``classes`` maps names to values
    (default: every drawn shape is 1)."""
    import cv2

    path = Path(path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        height, width = int(doc["imageHeight"]), int(doc["imageWidth"])
        shapes = doc.get("shapes") or []
    except FileNotFoundError:
        raise DataError(f"LabelMe file {path} does not exist") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
        raise DataError(f"{path} is not a LabelMe JSON file with imageHeight, imageWidth and shapes ({err})") \
            from None
    from medseg.io.images import max_pixels

    limit = max_pixels()
    if height < 1 or width < 1 or (limit and height * width > limit):
        raise DataError(f"LabelMe file {path} gives an image size of {width}x{height}, which is not a usable image "
                        "size" + (f" (at most {limit / 1e6:g} megapixels)" if limit else ""))
    if not isinstance(shapes, list) or not all(isinstance(s, dict) for s in shapes):
        raise DataError(f"LabelMe file {path} has 'shapes' that are not a list of shapes")
    labels = np.zeros((height, width), np.uint8)
    names: list[str] = []
    for i, shape in enumerate(shapes):
        name = str(shape.get("label", ""))
        if name.lower() in _BACKGROUND:
            continue
        value = (classes or {}).get(name, 1)
        names.append(name)
        kind = shape.get("shape_type") or "polygon"
        try:
            pts = np.asarray(shape["points"], dtype=np.float64).reshape(-1, 2)
        except (KeyError, TypeError, ValueError):
            raise DataError(f"LabelMe file {path} shape {i + 1} ({name!r}) has no valid points") from None
        if kind == "rectangle" and len(pts) == 2:
            (x0, y0), (x1, y1) = pts
            pts = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]])
        poly = np.rint(pts).astype(np.int32)
        if kind == "circle" and len(pts) == 2:
            radius = int(round(float(np.linalg.norm(pts[1] - pts[0]))))
            cv2.circle(labels, tuple(int(v) for v in poly[0]), radius, int(value), thickness=-1)
        elif kind in ("line", "linestrip"):
            cv2.polylines(labels, [poly], False, int(value), thickness=1)
        elif kind == "point":
            continue
        elif len(poly) >= 3:
            cv2.fillPoly(labels, [poly], int(value))
        else:
            raise DataError(f"LabelMe file {path} shape {i + 1} ({name!r}) is a {kind} with {len(poly)} points")
    return labels, sorted(set(names))


def named_label_values(path: str | Path) -> dict[int, str]:
    """The label values a SEG or label volume uses, with their names (segment labels for a SEG)."""
    if is_seg(path):
        return {s.number: s.label for s in read_seg(path).segments}
    import SimpleITK as sitk

    values = np.unique(sitk.GetArrayViewFromImage(_read_volume(*_cache_key(path))))
    return {int(v): f"label {int(v)}" for v in values if v > 0}
