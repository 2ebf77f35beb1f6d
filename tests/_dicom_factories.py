"""Plain helpers that write tiny synthetic DICOM files with pydicom (no fixtures here).

Every file carries the patient name ``DOE^JOHN`` and ID ``PID-SECRET-123`` so that tests can check
these never leak into messages, logs or outputs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    CTImageStorage,
    EnhancedCTImageStorage,
    ExplicitVRLittleEndian,
    SecondaryCaptureImageStorage,
    generate_uid,
)

from medseg.config import Config

PATIENT_NAME = "DOE^JOHN"
PATIENT_ID = "PID-SECRET-123"
BASIC_TEXT_SR = "1.2.840.10008.5.1.4.1.1.88.11"


def _base(sop_class: str, *, study: str, series: str, sop: str | None = None, modality: str = "CT") -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPInstanceUID = sop or generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.PatientName = PATIENT_NAME
    ds.PatientID = PATIENT_ID
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "M"
    ds.AccessionNumber = "ACC-SECRET-9"
    ds.StudyInstanceUID = study
    ds.SeriesInstanceUID = series
    ds.StudyDate, ds.StudyTime, ds.StudyID = "20240101", "120000", "1"
    ds.ReferringPhysicianName = ""
    ds.Modality = modality
    ds.SeriesNumber = 7
    ds.Manufacturer = "synthetic"
    return ds


def _pixels(ds: Dataset, arr: np.ndarray, *, bits_stored: int | None = None) -> None:
    arr = np.asarray(arr)
    ds.SamplesPerPixel = 3 if arr.ndim == 3 and arr.shape[-1] == 3 and ds.PhotometricInterpretation in (
        "RGB", "YBR_FULL") else 1
    ds.Rows, ds.Columns = arr.shape[-3:-1] if ds.SamplesPerPixel == 3 else arr.shape[-2:]
    if ds.SamplesPerPixel == 3:
        ds.PlanarConfiguration = 0
    ds.BitsAllocated = arr.dtype.itemsize * 8
    ds.BitsStored = bits_stored or ds.BitsAllocated
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 1 if arr.dtype.kind == "i" else 0
    ds.PixelData = np.ascontiguousarray(arr.astype(arr.dtype.newbyteorder("<"))).tobytes()


def ct_slice(path: Path, pixels: np.ndarray, *, z: float = 0.0, instance: int = 1, study: str | None = None,
             series: str | None = None, frame_of_reference: str | None = None, slope: float = 1.0,
             intercept: float = -1024.0, window: tuple[float, float] | None = None,
             photometric: str = "MONOCHROME2", spacing: float = 0.5, bits_stored: int | None = None,
             modality: str = "CT") -> Path:
    """A single-frame CT slice (int16/uint16 stored values) at height ``z`` with axial orientation."""
    ds = _base(CTImageStorage, study=study or generate_uid(), series=series or generate_uid(), modality=modality)
    ds.FrameOfReferenceUID = frame_of_reference or generate_uid()
    ds.InstanceNumber = instance
    ds.ImagePositionPatient = [-10.0, -20.0, float(z)]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.PixelSpacing = [spacing, spacing]
    ds.SliceThickness = 1.0
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.PhotometricInterpretation = photometric
    if slope is not None:
        ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
    _pixels(ds, pixels, bits_stored=bits_stored)
    return save(ds, path)


def ct_series(folder: Path, n: int = 4, size: int = 16, *, spacing_z: float = 2.5, shuffle_numbers: bool = True,
              seed: int = 0) -> list[Path]:
    """``n`` slices of one series in ``folder``; instance numbers deliberately disagree with position."""
    rng = np.random.default_rng(seed)
    study, series, frame_of_reference = generate_uid(), generate_uid(), generate_uid()
    numbers = list(range(n, 0, -1)) if shuffle_numbers else list(range(1, n + 1))
    paths = []
    for i in range(n):
        hu = rng.integers(-1000, 1000, (size, size)).astype(np.int16)
        hu[size // 4 : 3 * size // 4, size // 4 : 3 * size // 4] = 300 + 10 * i  # a bright square
        paths.append(ct_slice(folder / f"slice_{chr(ord('a') + (i * 7) % n)}.dcm", (hu + 1024).astype(np.int16),
                              z=10.0 + spacing_z * i, instance=numbers[i], study=study, series=series,
                              frame_of_reference=frame_of_reference))
    return paths


def enhanced_ct(path: Path, frames: np.ndarray, *, slopes: list[float], intercepts: list[float],
                z: list[float], window: tuple[float, float] | None = (40.0, 400.0)) -> Path:
    """An Enhanced CT with per-frame positions and rescale, shared orientation and pixel measures."""
    ds = _base(EnhancedCTImageStorage, study=generate_uid(), series=generate_uid())
    ds.FrameOfReferenceUID = generate_uid()
    ds.InstanceNumber = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.NumberOfFrames = len(frames)
    shared = Dataset()
    ori, meas = Dataset(), Dataset()
    ori.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    meas.PixelSpacing, meas.SliceThickness = [0.7, 0.7], 1.0
    shared.PlaneOrientationSequence, shared.PixelMeasuresSequence = Sequence([ori]), Sequence([meas])
    if window is not None:
        voi = Dataset()
        voi.WindowCenter, voi.WindowWidth = window
        shared.FrameVOILUTSequence = Sequence([voi])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    per_frame = []
    for i in range(len(frames)):
        item, pos, trans = Dataset(), Dataset(), Dataset()
        pos.ImagePositionPatient = [0.0, 0.0, float(z[i])]
        trans.RescaleSlope, trans.RescaleIntercept, trans.RescaleType = slopes[i], intercepts[i], "HU"
        item.PlanePositionSequence, item.PixelValueTransformationSequence = Sequence([pos]), Sequence([trans])
        per_frame.append(item)
    ds.PerFrameFunctionalGroupsSequence = Sequence(per_frame)
    _pixels(ds, frames)
    return save(ds, path)


def secondary_capture(path: Path, pixels: np.ndarray, photometric: str, **tags) -> Path:
    """A Secondary Capture image without geometry (RGB, palette, MONOCHROME1 ...)."""
    ds = _base(SecondaryCaptureImageStorage, study=generate_uid(), series=generate_uid(), modality="OT")
    ds.PhotometricInterpretation = photometric
    ds.ConversionType = "WSD"
    ds.InstanceNumber = 1
    for key, value in tags.items():
        setattr(ds, key, value)
    _pixels(ds, pixels, bits_stored=tags.get("BitsStored"))
    if "BitsStored" in tags:
        ds.BitsStored, ds.HighBit = tags["BitsStored"], tags["BitsStored"] - 1
    return save(ds, path)


def structured_report(path: Path) -> Path:
    ds = _base(BASIC_TEXT_SR, study=generate_uid(), series=generate_uid(), modality="SR")
    ds.ValueType = "CONTAINER"
    return save(ds, path)


def save(ds: Dataset, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


class FakePredictor:
    """Thresholds the windowed image itself: predictions anyone can recompute, in milliseconds."""

    def __init__(self, classes: int = 1) -> None:
        self.config = Config(model={"classes": classes, "encoder_weights": "none"})

    def predict_proba_batch(self, images):
        return [im[..., 0].astype(np.float32) / 255 for im in images]

    def to_mask(self, proba):
        if self.config.model.classes == 1:
            return np.where(proba > 0.5, 255, 0).astype(np.uint8)
        return np.digitize(proba, [0.3, 0.6, 0.9]).astype(np.uint8)  # classes 0..3 by brightness
