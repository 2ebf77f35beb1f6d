"""The DICOM node's parts in process: spool (duplicates, abort, idle, restart), C-STORE status codes,
forwarding with retries then the dead-letter folder, one SEG per image without a Frame of Reference."""

from __future__ import annotations

import shutil
import subprocess
import time

import numpy as np
import pydicom
import pytest
from pydicom.dataset import FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from medseg.errors import MedsegError
from medseg.io.labels import read_seg
from medseg.serve.dicom_node import DicomNode, NodeSettings, transfer_syntaxes
from medseg.serve.forwarder import Destination, Outbox
from medseg.serve.series_seg import segment_run
from medseg.serve.spool import CANNOT_UNDERSTAND, DATA_SET_MISMATCH, OUT_OF_RESOURCES, SUCCESS, Spool
from tests._dicom_factories import FakePredictor, ct_series, secondary_capture
from tests._dicom_net import HOST, free_port, wait_for
from tests.conftest import SHARED_DATA


def _bytes(path) -> bytes:
    return path.read_bytes()


def _uids(path) -> tuple[str, str]:
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    return ds.SeriesInstanceUID, ds.SOPInstanceUID


def test_spool_ignores_duplicates_drops_aborts_and_waits_for_release_and_idle(tmp_path):
    files = ct_series(tmp_path / "ct", n=3)
    spool = Spool(tmp_path / "spool", min_free_bytes=0)
    for f in files:
        assert spool.store("a1", *_uids(f), _bytes(f)) == (SUCCESS, True)
    assert spool.store("a1", *_uids(files[0]), _bytes(files[0])) == (SUCCESS, False)  # duplicate
    other = ct_series(tmp_path / "other", n=2, seed=3)
    for f in other:
        spool.store("a2", *_uids(f), _bytes(f))
    assert spool.abort("a2") == 2 and not (tmp_path / "spool" / "assoc" / "a2").exists()
    assert spool.take_due(0, now=time.time() + 100) == []  # association a1 not released yet
    assert spool.release("a1") == 3
    assert spool.take_due(10) == []  # not idle long enough
    (run,) = spool.take_due(10, now=time.time() + 11)
    assert len(list(run.glob("*.dcm"))) == 3 and spool.ready_runs() == [run]
    # an answered instance sent again is ignored; a new one starts a new run
    assert spool.store("a3", *_uids(files[1]), _bytes(files[1])) == (SUCCESS, False)
    late = pydicom.dcmread(files[1])
    late.SOPInstanceUID = generate_uid()
    late.save_as(tmp_path / "late.dcm")
    assert spool.store("a3", *_uids(tmp_path / "late.dcm"), _bytes(tmp_path / "late.dcm"))[1]
    spool.release("a3")
    (run2,) = spool.take_due(0, now=time.time() + 1)
    assert run2 != run and len(list(run2.glob("*.dcm"))) == 1


def test_spool_after_a_crash_keeps_released_runs_and_drops_open_associations(tmp_path):
    files = ct_series(tmp_path / "ct", n=3)
    spool = Spool(tmp_path / "spool", min_free_bytes=0)
    spool.store("released", *_uids(files[0]), _bytes(files[0]))
    spool.release("released")
    spool.store("open", *_uids(files[1]), _bytes(files[1]))
    (tmp_path / "spool" / "partial" / "half.tmp").write_bytes(b"half")
    del spool  # as after kill -9: nothing was cleaned up
    again = Spool(tmp_path / "spool", min_free_bytes=0)
    assert not list((tmp_path / "spool" / "assoc").iterdir()) and not list((tmp_path / "spool" / "partial").iterdir())
    assert again.waiting() == 1
    (run,) = again.take_due(5, now=time.time() + 10)
    assert len(list(run.glob("*.dcm"))) == 1
    assert again.store("x", *_uids(files[0]), _bytes(files[0])) == (SUCCESS, False)  # answered is remembered


@pytest.fixture
def node(tmp_path):
    settings = NodeSettings(port=free_port(), spool=tmp_path / "spool", out=tmp_path / "out", idle_seconds=3600,
                            min_free_mb=0)
    node = DicomNode(FakePredictor(), settings)
    node.start()
    yield node
    node.stop()


def _associate(port):
    from pynetdicom import AE

    ae = AE(ae_title="TESTSCU")
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    assoc = ae.associate(HOST, port, ae_title="MEDSEG")
    assert assoc.is_established
    return assoc


def test_store_status_codes(node, tmp_path, monkeypatch):
    from pynetdicom import _config

    monkeypatch.setattr(_config, "STORE_SEND_CHUNKED_DATASET", True)  # send a file's bytes as they are
    (good,) = ct_series(tmp_path / "ct", n=1)
    no_pixels = pydicom.dcmread(good)
    del no_pixels.PixelData
    no_pixels.SOPInstanceUID = no_pixels.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    meta = FileMetaDataset()  # valid file meta, then a data set with an unknown VR: cannot be parsed
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = CTImageStorage, generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    broken = tmp_path / "broken.dcm"
    pydicom.dcmwrite(broken, _with_meta(meta), enforce_file_format=True)
    broken.write_bytes(broken.read_bytes() + b"\x08\x00\x16\x00ZZ\x04\x00abcd")
    assoc = _associate(node.settings.port)
    try:
        assert assoc.send_c_store(pydicom.dcmread(good)).Status == SUCCESS
        assert assoc.send_c_store(no_pixels).Status == DATA_SET_MISMATCH
        assert assoc.send_c_store(broken).Status == CANNOT_UNDERSTAND
        node.spool.min_free_bytes = 2**62  # "disk low"
        other = pydicom.dcmread(good)
        other.SOPInstanceUID = other.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        assert assoc.send_c_store(other).Status == OUT_OF_RESOURCES
    finally:
        assoc.release()
    wait_for(lambda: list((node.settings.spool / "collecting").rglob("*.dcm")), 30, "the good instance spooled")
    assert len(list(node.settings.spool.rglob("*.dcm"))) == 1


def _with_meta(meta):
    ds = pydicom.Dataset()
    ds.file_meta = meta
    return ds


def test_released_series_is_segmented_to_out(node, tmp_path):
    files = ct_series(tmp_path / "ct", n=3)
    node.settings.idle_seconds = 0.5
    assoc = _associate(node.settings.port)
    for f in files:
        assert assoc.send_c_store(pydicom.dcmread(f)).Status == SUCCESS
    assoc.release()
    (seg,) = wait_for(lambda: list(node.settings.out.glob("*.seg.dcm")), 60, "the SEG in --out")
    assert len(read_seg(seg).referenced) == 3
    assert not list(node.settings.spool.rglob("*.dcm"))


def test_transfer_syntaxes_accept_uncompressed_and_decodable_compressed():
    accepted, missing = transfer_syntaxes()
    assert {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1"} <= set(accepted)
    assert "1.2.840.10008.1.2.4.50" in accepted  # JPEG baseline: pylibjpeg is a dependency
    assert not set(accepted) & set(missing)


def test_forwarding_retries_then_dead_letter_and_delivers_when_the_destination_answers(tmp_path):
    from pynetdicom import AE, evt

    staged = tmp_path / "seg"
    segment_run(FakePredictor(), ct_series(tmp_path / "ct", n=2)[0].parent, staged)
    outbox = Outbox(tmp_path / "outbox", tmp_path / "dead", calling_ae="MEDSEG", retries=1, retry_delay=0)
    dead_port = free_port()  # nothing listens there
    live_port = free_port()
    staging = outbox.staging("run1")
    for f in staged.glob("*.dcm"):
        shutil.copy(f, staging / f.name)
    outbox.add(staging, "run1", [Destination("NOBODY", HOST, dead_port), Destination("LIVE", HOST, live_port)])
    received = []
    scp = AE(ae_title="LIVE")
    scp.add_supported_context("1.2.840.10008.5.1.4.1.1.66.4", ExplicitVRLittleEndian)
    server = scp.start_server((HOST, live_port), block=False,
                              evt_handlers=[(evt.EVT_C_STORE, lambda e: received.append(e.dataset) or 0)])
    try:
        assert outbox.send_due() == 2  # live: delivered; dead: first failure
        assert len(received) == 1 and received[0].Modality == "SEG"
        assert outbox.send_due(now=time.time() + 10) == 1  # retry 1 of 1 fails: dead letter
    finally:
        server.shutdown()
    (kept,) = (tmp_path / "dead").glob("NOBODY@127.0.0.1_*/run1")
    assert list(kept.glob("*.seg.dcm")) and "NOBODY" in (kept / "reason.txt").read_text()
    assert not outbox.entries()


def test_destination_parse():
    assert Destination.parse("PACS@10.0.0.5:104") == Destination("PACS", "10.0.0.5", 104)
    assert str(Destination.parse("A@host.local:11112")) == "A@host.local:11112"
    for bad in ("PACS", "PACS@host", "@host:104", "PACS@host:0", "WAY_TOO_LONG_AE_TITLE@h:1"):
        with pytest.raises(MedsegError):
            Destination.parse(bad)


def test_settings_need_a_destination():
    with pytest.raises(MedsegError, match="--forward"):
        NodeSettings().check()


def test_one_seg_per_image_without_frame_of_reference(tmp_path):
    study, series = generate_uid(), generate_uid()
    rng = np.random.default_rng(0)
    for i in range(2):
        secondary_capture(tmp_path / "sc" / f"{i}.dcm", rng.integers(0, 255, (12, 12, 3), dtype=np.uint8), "RGB",
                          StudyInstanceUID=study, SeriesInstanceUID=series, InstanceNumber=i + 1)
    real = SHARED_DATA / "dicom" / "single" / "RG3_J2KR.dcm"  # a real CR without Frame of Reference
    if real.is_file():
        shutil.copy(real, tmp_path / "sc" / "cr.dcm")
    written, problems = segment_run(FakePredictor(), tmp_path / "sc", tmp_path / "out", suffix="_r")
    assert not problems
    assert len(written) == (3 if real.is_file() else 2)
    sc = [pydicom.dcmread(p) for p in written if pydicom.dcmread(p).StudyInstanceUID == study]
    assert len(sc) == 2 and len({d.SeriesInstanceUID for d in sc}) == 1 and {d.InstanceNumber for d in sc} == {1, 2}
    refs = {d.ReferencedSeriesSequence[0].ReferencedInstanceSequence[0].ReferencedSOPInstanceUID for d in sc}
    assert len(refs) == 2
    if shutil.which("dciodvfy"):
        for p in written:
            out = subprocess.run(["dciodvfy", str(p)], capture_output=True, text=True, timeout=60)
            assert not [line for line in (out.stdout + out.stderr).splitlines() if line.startswith("Error")], p


def test_cli_help_has_examples_and_refuses_to_run_without_a_destination(tmp_path):
    from typer.testing import CliRunner

    from medseg.cli import app

    runner = CliRunner()
    shown = runner.invoke(app, ["dicom-listen", "--help"])
    assert shown.exit_code == 0 and "Examples" in shown.output and "medseg dicom-listen" in shown.output
    refused = runner.invoke(app, ["dicom-listen", str(tmp_path / "model.pt"), "--port", str(free_port())])
    assert isinstance(refused.exception, MedsegError) and "--forward" in str(refused.exception)
