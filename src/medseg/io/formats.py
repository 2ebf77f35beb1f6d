"""File formats by kind: which files are images and which are masks, and the function that reads each.

One :class:`FileFormat` per kind of file, keyed by file ending (as nnU-Net's reader/writer classes),
in one ordered registry that discovery (:mod:`medseg.data.layouts`, :mod:`medseg.data.dicom_layout`),
the pair readers (:mod:`medseg.data.readers`), prediction and conversion all ask. Built in:

=========  ==========================================  =============================================
name       endings                                     reads
=========  ==========================================  =============================================
image      .jpg .jpeg .png .tif .tiff .bmp .gif        images and mask images (:mod:`medseg.io.images`)
dicom      .dcm .dicom .dic, or the 'DICM' marker      frames of DICOM images (:mod:`medseg.io.dicom`)
labelme    .json holding LabelMe shapes                whole-image label maps (:mod:`medseg.io.labels`)
seg        .dcm with the SEG SOP class                 label maps per DICOM frame (DICOM PS3.3 A.51)
volume     .nii.gz .nii .nrrd .nhdr .mha .mhd          label maps per DICOM frame, resampled
=========  ==========================================  =============================================

To read a new format, :func:`register` a :class:`FileFormat` with its endings and a reader; nothing
else changes. A file whose ending no format claims is tried as an ordinary image (Pillow reads more
formats than medseg lists for discovery), and DICOM files without an ending are found by their marker.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medseg.errors import DataError
from medseg.io import dicom, images, labels


@dataclass(frozen=True)
class FileFormat:
    """How to recognise and read one kind of file.

    ``read_image(path, frame, window)`` gives an HxWx3 uint8 RGB image (``frame``: 1-based frame of a
    multi-frame file; ``window``: a DICOM window, :mod:`medseg.io.windowing`). A mask format has
    ``read_labels(path)``, an HxW integer label map for a mask file of its own (0 = background), or
    ``labels_for_frame(path, frame)``, the HxW label map of one :class:`~medseg.io.dicom.DicomFrame`
    (None when the file does not cover it). ``read_mask(path, subject=)`` replaces the generic value
    analysis of a label map (:func:`medseg.io.images.analyse_mask`) where the format knows better
    (mask images: palettes, 16 bit, JPEG noise). ``accepts(path)`` decides between formats sharing an
    ending from the file's content (a ``.dcm`` that is a SEG); ``discoverable(path)`` filters what
    discovery takes for a mask (a ``.json`` that holds LabelMe shapes). ``sniff(path)`` claims files
    whose ending no format lists (DICOM's marker). ``frames``: the file holds DICOM frames, found by
    :mod:`medseg.data.dicom_layout` rather than by name matching. ``outside_is_background``: frames of
    the series the file covers, outside its extent, get empty masks (cropped label volumes).
    """

    name: str
    suffixes: tuple[str, ...]
    description: str
    read_image: Callable[[Path, int | None, str | None], np.ndarray] | None = None
    image_size: Callable[[Path], tuple[int, int]] | None = None  # (width, height), decoding the file
    read_labels: Callable[[Path], np.ndarray] | None = None
    labels_for_frame: Callable[[Path, dicom.DicomFrame], np.ndarray | None] | None = None
    read_mask: Callable[..., tuple[np.ndarray | None, images.MaskInfo]] | None = None
    accepts: Callable[[Path], bool] | None = None
    discoverable: Callable[[Path], bool] | None = None
    sniff: Callable[[Path], bool] | None = None
    frames: bool = False
    outside_is_background: bool = False

    def matches(self, path: Path) -> bool:
        """True when ``path`` ends in one of :attr:`suffixes` (case-insensitive) and the format accepts it."""
        return path.name.lower().endswith(self.suffixes) and (self.accepts is None or self.accepts(path))

    @property
    def is_mask_format(self) -> bool:
        return self.read_labels is not None or self.labels_for_frame is not None


_FORMATS: list[FileFormat] = []


def register(fmt: FileFormat) -> FileFormat:
    """Add ``fmt``; formats registered later are asked after earlier ones sharing an ending.

    Raises ValueError when a format of that name exists or when it reads nothing.
    """
    if any(f.name == fmt.name for f in _FORMATS):
        raise ValueError(f"file format {fmt.name!r} is registered twice")
    if fmt.read_image is None and not fmt.is_mask_format:
        raise ValueError(f"file format {fmt.name!r} has no reader (read_image, read_labels or labels_for_frame)")
    _FORMATS.append(fmt)
    return fmt


def unregister(name: str) -> None:
    """Remove the format called ``name`` (tests that register their own)."""
    _FORMATS[:] = [f for f in _FORMATS if f.name != name]


def formats() -> list[FileFormat]:
    """The registered formats, in the order they are asked."""
    return list(_FORMATS)


def image_format(path: str | Path) -> FileFormat:
    """The format that reads ``path`` as an image: by ending, else by content (DICOM marker), else
    the ordinary image reader (Pillow)."""
    path = Path(path)
    readers = [f for f in _FORMATS if f.read_image is not None]
    found = next((f for f in readers if f.matches(path)), None)
    found = found or next((f for f in readers if f.sniff is not None and f.sniff(path)), None)
    return found or next(f for f in _FORMATS if f.name == "image")


def mask_format(path: str | Path) -> FileFormat | None:
    """The format that reads ``path`` as a mask, or None when no mask format claims it."""
    path = Path(path)
    return next((f for f in _FORMATS if f.is_mask_format and f.matches(path)), None)


def image_suffixes() -> frozenset[str]:
    """Endings of the image files that discovery matches by name (every image format but DICOM frames)."""
    return frozenset(s for f in _FORMATS if f.read_image is not None and not f.frames for s in f.suffixes)


def is_image_file(path: Path) -> bool:
    """True for a file that discovery takes for an image (its ending is in :func:`image_suffixes`)."""
    return path.name.lower().endswith(tuple(image_suffixes()))


def is_mask_file(path: Path) -> bool:
    """True for a file that discovery takes for a mask named after its image (a format with
    ``read_labels`` claims it and, where the format says, its content fits)."""
    fmt = next((f for f in _FORMATS if f.read_labels is not None and f.matches(path)), None)
    return fmt is not None and (fmt.discoverable is None or fmt.discoverable(path))


def strip_suffix(name: str) -> str:
    """``name`` without the longest registered ending it has (``case7.nii.gz`` -> ``case7``)."""
    lower = name.lower()
    for sfx in sorted({s for f in _FORMATS for s in f.suffixes}, key=len, reverse=True):
        if lower.endswith(sfx):
            return name[: -len(sfx)]
    return name


def mask_format_names() -> str:
    """'an image, a LabelMe JSON, a DICOM SEG or a label volume': the mask formats, for messages."""
    names = [("an " if f.description[0].lower() in "aeiou" else "a ") + f.description
             for f in _FORMATS if f.is_mask_format]
    return ", ".join(names[:-1]) + (" or " if len(names) > 1 else "") + names[-1]


def read_image(path: str | Path, *, frame: int | None = None, window: str | None = None) -> np.ndarray:
    """Read any image file as an HxWx3 uint8 RGB array (:func:`image_format` picks the reader);
    DataError naming the file if it cannot be read.

    ``frame`` (1-based, default the first) picks a frame of a multi-frame DICOM file and grey DICOM
    images are windowed by ``window`` (None: the file's window, else automatic; see
    :mod:`medseg.io.windowing`); other formats ignore both.
    """
    return image_format(path).read_image(Path(path), frame, window)


def _register_builtin() -> None:
    register(FileFormat(
        "image", tuple(sorted(images.IMAGE_SUFFIXES)), "image",
        read_image=lambda path, frame, window: images.read_rgb(path),
        image_size=lambda path: images.open_image(path).size,
        read_labels=lambda path: np.asarray(images.open_image(path)),  # palette PNGs give their indices
        read_mask=images.load_mask))
    register(FileFormat(
        "dicom", tuple(sorted(dicom.DICOM_SUFFIXES)), "DICOM image",
        read_image=lambda path, frame, window: dicom.read_dicom(path, frame=frame, window=window),
        sniff=dicom.is_dicom, frames=True))
    register(FileFormat(
        "labelme", (".json",), "LabelMe JSON", read_labels=lambda path: labels.read_labelme(path)[0],
        discoverable=labels.is_labelme))
    register(FileFormat(
        "seg", (".dcm",), "DICOM SEG", labels_for_frame=lambda path, frame: labels.read_seg(path).for_frame(frame),
        accepts=labels.is_seg))
    register(FileFormat(
        "volume", labels.VOLUME_SUFFIXES, "label volume", labels_for_frame=labels.volume_labels,
        outside_is_background=True))


_register_builtin()


def labels_for_frames(path: str | Path, frames: list[dicom.DicomFrame]) -> list[np.ndarray | None]:
    """HxW label maps for DICOM ``frames`` (usually one series) from a frame-bound mask file (a SEG, a
    label volume); None for a frame the file does not cover.

    When the format says so (label volumes), a file that covers at least one of ``frames`` is in their
    frame of reference and its other frames, outside its (cropped) extent, get empty masks: the region
    outside a label volume is background. DataError when ``path`` is no such file, or as its reader.
    """
    path = Path(path)
    fmt = mask_format(path)
    if fmt is None or fmt.labels_for_frame is None:
        raise DataError(f"{path} is not a label file for DICOM images (expected "
                        f"{' or '.join(f.description for f in _FORMATS if f.labels_for_frame)})")
    out = [fmt.labels_for_frame(path, f) for f in frames]
    if fmt.outside_is_background and any(o is not None for o in out):
        out = [np.zeros((f.rows, f.columns), np.uint8) if o is None else o for o, f in zip(out, frames, strict=True)]
    return out
