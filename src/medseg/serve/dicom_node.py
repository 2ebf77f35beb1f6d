"""``medseg dicom-listen``: a DICOM Storage SCP that answers each received series with a DICOM SEG.

Flow (conformance statement: ``docs/dicom-node-conformance.md``)::

    C-STORE -> spool (disk, atomic) --release + idle--> run -> Predictor -> SEG(s) -> --out and/or outbox
                                                                                     -> C-STORE --forward

- The C-STORE handler only checks the instance and writes it to the spool (:mod:`.spool`); it answers
  0xA700 when disk space is low, 0xA900 when the data set does not match its request or is no
  image, 0xC000 when it cannot be parsed.
- A series is complete when the associations that sent it were released and nothing arrived for
  ``idle_seconds``; instances of aborted associations are dropped.
- One worker thread segments complete runs (:mod:`.series_seg`); one thread forwards (:mod:`.forwarder`).
- Logs name series by a hash of their UID and peers by AE title and address: never patient data.
"""

from __future__ import annotations

import logging
import shutil
import signal
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from medseg.errors import MedsegError
from medseg.io.dicom_codecs import COMPRESSED, decoder_available
from medseg.io.dicom_series import series_tag
from medseg.io.files import atomic_path
from medseg.serve.forwarder import Destination, Forwarder, Outbox
from medseg.serve.spool import CANNOT_UNDERSTAND, DATA_SET_MISMATCH, SUCCESS, Spool

log = logging.getLogger(__name__)

VERIFICATION = "1.2.840.10008.1.1"
#: Storage SOP classes accepted (PS3.4 B.5): 2-D images, single and multi-frame.
IMAGE_STORAGE = {
    "1.2.840.10008.5.1.4.1.1.2": "CT Image",
    "1.2.840.10008.5.1.4.1.1.2.1": "Enhanced CT Image",
    "1.2.840.10008.5.1.4.1.1.4": "MR Image",
    "1.2.840.10008.5.1.4.1.1.4.1": "Enhanced MR Image",
    "1.2.840.10008.5.1.4.1.1.1": "Computed Radiography Image",
    "1.2.840.10008.5.1.4.1.1.1.1": "Digital X-Ray Image - For Presentation",
    "1.2.840.10008.5.1.4.1.1.1.1.1": "Digital X-Ray Image - For Processing",
    "1.2.840.10008.5.1.4.1.1.1.2": "Digital Mammography X-Ray Image - For Presentation",
    "1.2.840.10008.5.1.4.1.1.1.2.1": "Digital Mammography X-Ray Image - For Processing",
    "1.2.840.10008.5.1.4.1.1.6.1": "Ultrasound Image",
    "1.2.840.10008.5.1.4.1.1.3.1": "Ultrasound Multi-frame Image",
    "1.2.840.10008.5.1.4.1.1.7": "Secondary Capture Image",
    "1.2.840.10008.5.1.4.1.1.7.1": "Multi-frame Single Bit Secondary Capture Image",
    "1.2.840.10008.5.1.4.1.1.7.2": "Multi-frame Grayscale Byte Secondary Capture Image",
    "1.2.840.10008.5.1.4.1.1.7.3": "Multi-frame Grayscale Word Secondary Capture Image",
    "1.2.840.10008.5.1.4.1.1.7.4": "Multi-frame True Color Secondary Capture Image",
    "1.2.840.10008.5.1.4.1.1.77.1.1": "VL Endoscopic Image",
    "1.2.840.10008.5.1.4.1.1.77.1.4": "VL Photographic Image",
    "1.2.840.10008.5.1.4.1.1.77.1.7": "Dermoscopic Photography Image",
}
#: Native (uncompressed) transfer syntaxes: always accepted (PS3.5 A.1-A.5).
UNCOMPRESSED = ("1.2.840.10008.1.2.1", "1.2.840.10008.1.2", "1.2.840.10008.1.2.1.99", "1.2.840.10008.1.2.2")


def transfer_syntaxes() -> tuple[list[str], list[str]]:
    """(accepted transfer syntax UIDs, compressed ones refused because no decoder is installed): the
    compressed syntaxes of :data:`medseg.io.dicom_codecs.COMPRESSED` are accepted when pydicom decodes them."""
    accepted, missing = list(UNCOMPRESSED), []
    for uid in COMPRESSED:
        (accepted if decoder_available(uid) else missing).append(uid)
    return accepted, missing


@dataclass
class NodeSettings:
    """Options of ``medseg dicom-listen`` (see its ``--help``)."""

    ae_title: str = "MEDSEG"
    host: str = "127.0.0.1"
    port: int = 11112
    allow_calling: list[str] = field(default_factory=list)  # empty: any calling AE title
    forward: list[Destination] = field(default_factory=list)
    out: Path | None = None
    idle_seconds: float = 10.0
    spool: Path = Path("dicom-spool")
    dead_letter: Path | None = None  # default: <spool>/dead-letter
    retries: int = 5
    retry_delay: float = 2.0
    min_free_mb: float = 512.0
    max_associations: int = 10

    def check(self) -> None:
        if not self.forward and self.out is None:
            raise MedsegError("dicom-listen needs somewhere to put the SEGs: --forward AE@HOST:PORT and/or --out DIR")
        for ae in [self.ae_title, *self.allow_calling]:
            if not ae.strip() or len(ae) > 16 or "\\" in ae:
                raise MedsegError(f"AE title {ae!r} is invalid: 1 to 16 characters, no backslash")
        if self.idle_seconds < 0 or self.retries < 0 or self.retry_delay < 0:
            raise MedsegError("--idle-seconds, --retries and --retry-delay must not be negative")


class DicomNode:
    """The Storage SCP, its spool, the segmentation worker and the forwarder, in one process."""

    def __init__(self, predictor, settings: NodeSettings) -> None:
        settings.check()
        self.predictor, self.settings = predictor, settings
        self.spool = Spool(settings.spool, min_free_bytes=int(settings.min_free_mb * 2**20))
        self.outbox = Outbox(settings.spool / "outbox", settings.dead_letter or settings.spool / "dead-letter",
                             calling_ae=settings.ae_title, retries=settings.retries,
                             retry_delay=settings.retry_delay)
        self.stopping = threading.Event()
        self._server = None
        self._threads: list[threading.Thread] = []

    # ------------------------------------------------------------------ network
    def _make_ae(self):
        from pydicom.uid import UID
        from pynetdicom import AE

        ae = AE(ae_title=self.settings.ae_title)
        ae.require_called_aet = True
        ae.require_calling_aet = list(self.settings.allow_calling)
        ae.maximum_associations = self.settings.max_associations
        ae.acse_timeout, ae.dimse_timeout, ae.network_timeout = 30, 60, 60
        accepted, missing = transfer_syntaxes()
        for uid in IMAGE_STORAGE:
            ae.add_supported_context(uid, accepted)
        ae.add_supported_context(VERIFICATION, ["1.2.840.10008.1.2", "1.2.840.10008.1.2.1"])
        log.info("transfer syntaxes accepted: %s", ", ".join(UID(u).name for u in accepted))
        if missing:
            log.warning("compressed transfer syntaxes refused (no decoder installed): %s",
                        ", ".join(UID(u).name for u in missing))
        return ae

    def start(self) -> None:
        """Listen (in background threads) and start the worker and the forwarder."""
        from pynetdicom import evt

        logging.getLogger("pynetdicom").setLevel(logging.WARNING)
        ae = self._make_ae()
        handlers = [(evt.EVT_C_STORE, self._on_store), (evt.EVT_RELEASED, self._on_released),
                    (evt.EVT_ABORTED, self._on_lost), (evt.EVT_CONN_CLOSE, self._on_lost),
                    (evt.EVT_REJECTED, self._on_rejected), (evt.EVT_ACCEPTED, self._on_accepted)]
        try:
            self._server = ae.start_server((self.settings.host, self.settings.port), block=False,
                                           evt_handlers=handlers)
        except OSError as err:
            raise MedsegError(f"cannot listen on {self.settings.host}:{self.settings.port} ({err.strerror or err}); "
                              "choose another --port or --host") from None
        worker = threading.Thread(target=self._work, name="medseg-segment", daemon=True)
        self._threads = [worker, Forwarder(self.outbox, self.stopping)]
        for t in self._threads:
            t.start()
        s = self.settings
        log.info("DICOM node %s listening on %s:%d (%d image SOP classes + Verification); calling AEs: %s; "
                 "SEGs to %s; spool %s", s.ae_title, s.host, s.port, len(IMAGE_STORAGE),
                 ", ".join(s.allow_calling) or "any",
                 ", ".join([str(d) for d in s.forward] + ([str(s.out)] if s.out else [])), s.spool)

    def stop(self) -> None:
        """Stop listening (open associations are aborted: their senders retry), then the threads."""
        self.stopping.set()
        if self._server is not None:
            self._server.shutdown()
        for t in self._threads:
            t.join(timeout=60)

    @staticmethod
    def _assoc_id(event) -> str:
        assoc = event.assoc
        if not hasattr(assoc, "_medseg_id"):
            assoc._medseg_id = uuid.uuid4().hex[:12]
        return assoc._medseg_id

    @staticmethod
    def _peer(event) -> str:
        r = event.assoc.requestor
        return f"{r.ae_title}@{r.address}:{r.port}"

    def _on_accepted(self, event) -> None:
        log.info("association %s from %s accepted", self._assoc_id(event), self._peer(event))

    def _on_rejected(self, event) -> None:
        log.warning("association from %s rejected (called AE %s)", self._peer(event), event.assoc.acceptor.ae_title)

    def _on_store(self, event) -> int:
        """Check the instance and write it to the spool; nothing else happens on the network thread."""
        request = event.request
        try:
            ds = event.dataset
            ds.file_meta = event.file_meta
            series_uid, sop_uid = str(ds.get("SeriesInstanceUID") or ""), str(ds.get("SOPInstanceUID") or "")
            sop_class = str(ds.get("SOPClassUID") or "")
            is_image = bool(ds.get("Rows")) and bool(ds.get("Columns")) and "PixelData" in ds
        except Exception:  # pydicom raises many types on a damaged data set
            log.warning("association %s: C-STORE data set could not be parsed (0xC000)", self._assoc_id(event))
            return CANNOT_UNDERSTAND
        if not (series_uid and sop_uid and is_image) or sop_uid != str(request.AffectedSOPInstanceUID) \
                or sop_class != str(request.AffectedSOPClassUID):
            log.warning("association %s: C-STORE data set is not an image matching its request (0xA900)",
                        self._assoc_id(event))
            return DATA_SET_MISMATCH
        status, stored = self.spool.store(self._assoc_id(event), series_uid, sop_uid, event.encoded_dataset())
        if status != SUCCESS:
            log.warning("association %s: disk space low in %s; C-STORE refused (0x%04X)", self._assoc_id(event),
                        self.settings.spool, status)
        elif not stored:
            log.info("association %s: duplicate instance of series %s ignored", self._assoc_id(event),
                     series_tag(series_uid))
        return status

    def _on_released(self, event) -> None:
        n = self.spool.release(self._assoc_id(event))
        log.info("association %s released: %d instance(s) spooled", self._assoc_id(event), n)

    def _on_lost(self, event) -> None:
        n = self.spool.abort(self._assoc_id(event))
        if n:
            log.warning("association %s ended without release: %d instance(s) dropped", self._assoc_id(event), n)

    # ------------------------------------------------------------------ segmentation
    def _work(self) -> None:
        while not self.stopping.is_set():
            try:
                self.spool.take_due(self.settings.idle_seconds)
                for run in self.spool.ready_runs():
                    if self.stopping.is_set():
                        break
                    self.process_run(run)
            except Exception:  # keep serving; the run stays in the spool and is retried
                log.exception("segmentation worker: unexpected error")
                self.stopping.wait(5.0)
            self.stopping.wait(0.5)

    def process_run(self, run: Path) -> list[Path]:
        """Segment one complete run; SEGs to ``--out`` and the outbox; the run leaves the spool."""
        from medseg.serve.series_seg import segment_run

        skey, stamp = run.name.split(".", 1)
        if self.outbox.has(run.name):  # done before a restart, only the clean-up was missing
            self.spool.finish(run)
            return []
        staging = self.outbox.staging(run.name)
        try:
            written, problems = segment_run(self.predictor, run, staging, suffix=f"_{stamp}")
        except (MedsegError, OSError) as err:
            written, problems = [], [str(err)]
        except Exception as err:  # a run that breaks the model must not block the ones after it
            written, problems = [], [f"segmentation failed ({type(err).__name__}: {str(err)[:200]})"]
        for message in problems:
            log.warning("series %s: %s", skey, message)
        if not written:
            shutil.rmtree(staging, ignore_errors=True)
            kept = self.spool.fail(run, "; ".join(problems) or "no image could be segmented")
            log.error("series %s: no SEG could be made; instances kept in %s", skey, kept)
            return []
        if self.settings.out is not None:
            for f in written:
                with atomic_path(self.settings.out / f.name) as tmp:
                    shutil.copyfile(f, tmp)
        if self.settings.forward:
            self.outbox.add(staging, run.name, self.settings.forward)
        else:
            shutil.rmtree(staging, ignore_errors=True)
        n = sum(1 for _ in run.glob("*.dcm"))
        self.spool.finish(run)
        log.info("series %s: %d instance(s) segmented, %d SEG file(s)%s", skey, n, len(written),
                 f" written to {self.settings.out}" if self.settings.out else "")
        return written


def listen(model: str | Path, settings: NodeSettings, *, overrides: list[str] | None = None) -> None:
    """Load the model, run the node until SIGINT or SIGTERM, then stop cleanly."""
    from medseg.inference.predictor import Predictor

    settings.check()
    predictor = Predictor.load(model, overrides=overrides)
    log.info("model %s (%s)", model, predictor.describe())
    node = DicomNode(predictor, settings)
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    node.start()
    try:
        while not done.wait(1.0):
            pass
    finally:
        log.info("stopping: open associations are aborted, the spool is kept for the next start")
        node.stop()
