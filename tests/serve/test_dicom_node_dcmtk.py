"""``medseg dicom-listen`` end to end with dcmtk (echoscu, storescu, storescp) and dciodvfy.

A real CT series from ../shared/data/dicom (synthetic when absent) goes in with storescu; a storescp
destination receives the SEG, which passes dciodvfy and reads back to the mask of
``medseg predict --format dicom-seg``. Loopback only, free ports, bounded waits, processes always ended.
"""

from __future__ import annotations

import shutil
import signal
import subprocess

import numpy as np
import pydicom
import pytest
from pydicom.uid import generate_uid
from typer.testing import CliRunner

from medseg.cli import app
from medseg.io.dicom_series import scan_dicom
from medseg.io.labels import read_seg
from tests._dicom_factories import PATIENT_ID, PATIENT_NAME, ct_series
from tests._dicom_net import DCMTK, HOST, dicom_node, echo, free_port, storescp, wait_for
from tests.conftest import SHARED_DATA

pytestmark = pytest.mark.skipif(not DCMTK, reason="dcmtk (echoscu, storescu, storescp) is not installed")


@pytest.fixture
def ct_source(tmp_path):
    """A real 4-slice CT series when ../shared/data is there, else a synthetic one."""
    real = SHARED_DATA / "dicom" / "ct2_series_16px"
    if real.is_dir():
        return real
    ct_series(tmp_path / "ct", n=4)
    return tmp_path / "ct"


def storescu(port: int, files, *, calling: str = "STORESCU") -> subprocess.CompletedProcess:
    return subprocess.run(["storescu", "-to", "10", "-aet", calling, "-aec", "MEDSEG", HOST, str(port),
                           *map(str, files)], capture_output=True, text=True, timeout=120)


def identifiers(files) -> set[str]:
    out = {PATIENT_NAME, PATIENT_ID}
    for f in files:
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        out |= {str(ds.get(k)) for k in ("PatientName", "PatientID", "AccessionNumber") if ds.get(k)}
    return {i for i in out if len(i) >= 4}  # a one-digit accession number would match anything


def frames_of_seg(seg_path, series):
    seg = read_seg(seg_path)
    return np.stack([seg.for_frame(f) for f in series.frames])


def dciodvfy_errors(path) -> list[str]:
    if not shutil.which("dciodvfy"):
        return []
    out = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=60)
    return [line for line in (out.stdout + out.stderr).splitlines() if line.startswith("Error")]


def test_series_in_seg_out_to_a_storescp_destination(tiny_run, ct_source, tmp_path):
    node_port, dest_port = free_port(), free_port()
    received, out, log = tmp_path / "received", tmp_path / "out", tmp_path / "node.log"
    files = sorted(p for p in ct_source.iterdir() if p.is_file())
    with storescp(dest_port, received, tmp_path / "storescp.log"), \
            dicom_node(tiny_run, node_port, tmp_path / "spool", log, "--allow-calling", "STORESCU",
                       "--allow-calling", "ECHOSCU", "--forward", f"DEST@{HOST}:{dest_port}", "--out", str(out),
                       "--idle-seconds", "1") as node:
        assert echo(node_port).returncode == 0
        refused = echo(node_port, calling="INTRUDER")
        assert refused.returncode != 0 and "Calling AE Title Not Recognized" in refused.stdout + refused.stderr
        assert echo(node_port, called="SOMEONE_ELSE").returncode != 0  # called AE title checked
        sent = storescu(node_port, files)
        assert sent.returncode == 0, sent.stderr
        (seg_path,) = wait_for(lambda: sorted(received.glob("SG*")), 180, "the SEG at the destination", node, log)

        # the SEG: valid, same study, new series, every source image referenced, the mask of `medseg predict`
        assert not dciodvfy_errors(seg_path)
        seg, first = pydicom.dcmread(seg_path), pydicom.dcmread(files[0])
        assert seg.Modality == "SEG" and seg.StudyInstanceUID == first.StudyInstanceUID
        assert seg.SeriesInstanceUID != first.SeriesInstanceUID
        referenced = {r.ReferencedSOPInstanceUID for r in seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence}
        assert referenced == {pydicom.dcmread(f).SOPInstanceUID for f in files}
        result = CliRunner().invoke(app, ["predict", str(tiny_run), str(ct_source), "--format", "dicom-seg",
                                          "--out", str(tmp_path / "predict")])
        assert result.exit_code == 0, result.output
        (series,) = scan_dicom(ct_source).series
        want = frames_of_seg(next((tmp_path / "predict").glob("*.seg.dcm")), series)
        np.testing.assert_array_equal(frames_of_seg(seg_path, series), want)
        (written,) = out.glob("*.seg.dcm")
        np.testing.assert_array_equal(frames_of_seg(written, series), want)

        # the same instances again: duplicates ignored; then one new instance: a new run, a new SEG series
        assert storescu(node_port, files).returncode == 0
        wait_for(lambda: log.read_text().count("duplicate instance") >= len(files), 60, "duplicates logged", node)
        late = pydicom.dcmread(files[0])
        late.SOPInstanceUID = late.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        late.save_as(tmp_path / "late.dcm")
        assert storescu(node_port, [tmp_path / "late.dcm"]).returncode == 0
        segs = wait_for(lambda: len(list(received.glob("SG*"))) >= 2 and sorted(received.glob("SG*")), 180,
                        "the late instance's SEG", node, log)
        assert len(segs) == 2
        (second,) = [s for s in segs if s != seg_path]
        second = pydicom.dcmread(second)
        assert second.SeriesInstanceUID != seg.SeriesInstanceUID
        (ref,) = second.ReferencedSeriesSequence[0].ReferencedInstanceSequence
        assert ref.ReferencedSOPInstanceUID == late.SOPInstanceUID
    text = log.read_text()
    assert "rejected" in text
    leaks = [i for i in identifiers(files) if i in text]
    assert not leaks, f"patient identifiers in the log: {leaks}"
    assert not list((tmp_path / "spool").rglob("*.dcm"))  # everything answered, nothing left behind


def test_aborted_association_leaves_nothing_and_kill_9_keeps_the_spool(tiny_run, ct_source, tmp_path):
    from pynetdicom import AE

    port, spool, out, log = free_port(), tmp_path / "spool", tmp_path / "out", tmp_path / "node.log"
    files = sorted(p for p in ct_source.iterdir() if p.is_file())
    aborted = ct_series(tmp_path / "aborted", n=3, seed=5)
    with dicom_node(tiny_run, port, spool, log, "--out", str(out), "--idle-seconds", "600") as node:
        ae = AE(ae_title="ABORTER")
        ae.add_requested_context("1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.1.2.1")
        assoc = ae.associate(HOST, port, ae_title="MEDSEG")
        assert assoc.is_established
        for f in aborted:
            assert assoc.send_c_store(pydicom.dcmread(f)).Status == 0
        assoc.abort()
        wait_for(lambda: "dropped" in log.read_text(), 60, "the aborted association's instances dropped", node)
        assert not list(spool.rglob("*.dcm"))
        assert storescu(port, files).returncode == 0
        wait_for(lambda: len(list((spool / "collecting").rglob("*.dcm"))) == len(files), 60, "a spooled series")
        node.send_signal(signal.SIGKILL)  # no clean-up, no answer yet
        node.wait(timeout=30)
    assert not list(out.glob("*.dcm"))
    with dicom_node(tiny_run, free_port(), spool, log, "--out", str(out), "--idle-seconds", "1") as node:
        (seg_path,) = wait_for(lambda: sorted(out.glob("*.seg.dcm")), 180, "the SEG after the restart", node, log)
    seg = pydicom.dcmread(seg_path)
    referenced = {r.ReferencedSOPInstanceUID for r in seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence}
    assert referenced == {pydicom.dcmread(f).SOPInstanceUID for f in files}
    assert not dciodvfy_errors(seg_path)
    assert not list(spool.rglob("*.dcm"))
