"""A DICOM dataset (series + a SEG per series) goes through data check, train and evaluate as it is."""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

import medseg
from medseg.cli import app
from medseg.io.dicom import read_dataset, read_dicom_values
from medseg.io.dicom_seg import write_seg
from medseg.io.dicom_series import scan_dicom
from tests._dicom_factories import PATIENT_ID, PATIENT_NAME, ct_series
from tests.conftest import TINY  # noqa: I001

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def dicom_dataset(tmp_path_factory):
    """3 series x 4 slices of 48 px CT; the bright square (HU 300+) is the lesion, in a SEG per series."""
    root = tmp_path_factory.mktemp("dicomdata")
    for case in range(3):
        ct_series(root / "images" / f"case{case}", n=4, size=48, seed=case)
        (series,) = scan_dicom(root / "images" / f"case{case}").series
        labels = np.stack([(read_dicom_values(f.path) >= 300).astype(np.uint8) for f in series.frames])
        write_seg([read_dataset(p, pixels=False) for p in series.files], labels, root / "labels" / f"seg{case}.dcm",
                  segment_names=["lesion"], algorithm="ground truth", version="1")
    return root


def test_data_check_train_and_evaluate_on_dicom_with_seg_labels(dicom_dataset, tmp_path):
    result = CliRunner().invoke(app, ["data", "check", str(dicom_dataset)])
    assert result.exit_code == 0, result.output
    assert "found 12 pairs" in result.output and "DICOM SEG" in result.output
    run = medseg.train(dicom_dataset, tmp_path / "run", config="default", progress=False,
                       overrides=[*TINY, "data.window=soft_tissue", "data.val_fraction=0.25"])
    report = (run / "data_report.txt").read_text()
    summary = medseg.evaluate(run, dicom_dataset, split="val", out=tmp_path / "ev", progress=False)
    assert summary["n_images"] == 3 and 0 <= summary["dice"] <= 1
    per_image = (tmp_path / "ev" / "per_image.csv").read_text()
    assert "case" in per_image
    for text in (result.output, report, per_image):
        assert PATIENT_NAME not in text and PATIENT_ID not in text
