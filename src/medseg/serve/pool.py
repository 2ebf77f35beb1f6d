"""The model never runs on the event loop: a bounded queue in front of a few worker threads.

``submit`` puts a job on a queue of at most ``max_queue`` jobs and returns at once; when the queue is
full it raises :class:`Overloaded` (the app answers 503 with ``Retry-After``), so memory stays bounded
(at most ``max_queue`` uploads wait) and health probes stay fast under any load. Each worker takes a
job, decodes the upload, runs the Predictor and encodes the answer; the event loop only awaits a future.

Micro-batching (``max_batch`` > 1, off by default): a worker that takes a job waits up to
``batch_wait_ms`` for more and runs the images of all of them in one model call. Masks can then differ
from ``medseg predict``'s in the last bits of a probability (batched kernels), which is why it is
opt-in; ``bench/serve_load.py`` measures whether it raises throughput on a given machine.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medseg.errors import MedsegError
from medseg.inference.tta import qc_score
from medseg.serve.security import REQUEST_ID, UploadError
from medseg.serve.uploads import Upload, decode_upload

log = logging.getLogger("medseg.serve")


class Overloaded(Exception):
    """The queue is full; answer 503 and let the client retry."""


class NotReady(Exception):
    """The model is still loading or warming up."""


@dataclass
class Job:
    """One upload to segment. ``finish(job, probabilities, workdir)`` builds the answer in the worker."""

    data: bytes
    kind: str
    finish: Callable[[Job, list[np.ndarray], Path], Any]
    tta: bool = False
    frame: int | None = None  # 0-based frame to segment; None: every frame
    request_id: str = "-"
    loop: asyncio.AbstractEventLoop | None = None
    future: asyncio.Future | None = None
    upload: Upload | None = None
    predictor: Any = None
    timing: dict[str, float] = field(default_factory=dict)
    enqueued: float = field(default_factory=time.perf_counter)
    qc: list[float] | None = None  # failure-flag score per frame, when TTA ran (medseg.evaluation.qc)

    def images(self) -> list[np.ndarray]:
        frames = self.upload.frames
        return frames if self.frame is None else [frames[self.frame]]


def _settle(future: asyncio.Future, result: Any, error: BaseException | None) -> None:
    if future.done():  # the client went away
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


class InferencePool:
    """Worker threads around one Predictor (and a TTA twin sharing its network)."""

    def __init__(self, load: Callable[[], Any], *, workers: int = 1, max_queue: int = 16, max_batch: int = 1,
                 batch_wait_ms: float = 5.0, metrics=None) -> None:
        if workers < 1 or max_queue < 1 or max_batch < 1:
            raise ValueError("workers, max_queue and max_batch must be at least 1")
        self._load = load
        self.workers, self.max_queue, self.max_batch = workers, max_queue, max_batch
        self.batch_wait = batch_wait_ms / 1000.0
        self.metrics = metrics
        self.queue: queue.Queue[Job] = queue.Queue(maxsize=max_queue)
        self.ready = threading.Event()
        self.failed: str | None = None
        self.predictors: dict[bool, Any] = {}
        self.default_tta = False
        self._threads: list[threading.Thread] = []
        self._stopping = threading.Event()
        if metrics is not None:
            metrics.queue_depth.set_function(self.queue.qsize)

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """Load and warm the model in the background (``ready`` is set after), then start the workers."""
        starter = threading.Thread(target=self._start, name="medseg-load", daemon=True)
        starter.start()
        self._threads.append(starter)

    def _start(self) -> None:
        try:
            predictor = self._load()
            self.default_tta = bool(predictor.config.infer.tta)
            # {tta: predictor}: the run's predictor and its twin with TTA switched the other way
            tta = self.default_tta
            self.predictors = {tta: predictor, not tta: predictor.with_overrides([f"infer.tta={not tta}".lower()])}
            size = predictor.size
            predictor.predict_batch([np.zeros((size, size, 3), np.uint8)])  # warm-up (allocations, kernels)
        except Exception as err:  # noqa: BLE001 - reported by /readyz and the log
            self.failed = f"{type(err).__name__}: {err}"
            log.error("model could not be loaded: %s", self.failed)
            return
        for i in range(self.workers):
            t = threading.Thread(target=self._work, name=f"medseg-worker-{i}", daemon=True)
            t.start()
            self._threads.append(t)
        self.ready.set()
        if self.metrics is not None:
            self.metrics.ready.set(1)
        log.info("model ready: %s; %d worker(s), queue %d, micro-batch %d", predictor.describe(), self.workers,
                 self.max_queue, self.max_batch)

    def close(self, timeout: float = 60.0) -> None:
        """Finish every queued job, then stop the workers (graceful shutdown)."""
        self._stopping.set()
        deadline = time.monotonic() + timeout
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))

    # ------------------------------------------------------------------ submitting
    def submit(self, job: Job) -> asyncio.Future:
        """Queue ``job``; a future for its answer. Overloaded when the queue is full, NotReady before warm-up."""
        if not self.ready.is_set() or self._stopping.is_set():
            raise NotReady(self.failed or "the model is loading")
        job.loop = asyncio.get_running_loop()
        job.future = job.loop.create_future()
        try:
            self.queue.put_nowait(job)
        except queue.Full:
            if self.metrics is not None:
                self.metrics.rejected.inc()
            raise Overloaded from None
        return job.future

    # ------------------------------------------------------------------ workers
    def _take(self) -> list[Job]:
        try:
            first = self.queue.get(timeout=0.1)
        except queue.Empty:
            return []
        jobs = [first]
        if self.max_batch > 1:
            deadline = time.perf_counter() + self.batch_wait
            while len(jobs) < self.max_batch:
                remaining = deadline - time.perf_counter()
                try:
                    jobs.append(self.queue.get(timeout=remaining) if remaining > 0 else self.queue.get_nowait())
                except queue.Empty:
                    break
        return jobs

    def _work(self) -> None:
        while True:
            jobs = self._take()
            if not jobs:
                if self._stopping.is_set():
                    return
                continue
            with tempfile.TemporaryDirectory(prefix="medseg-serve-") as tmp:
                self._run(jobs, Path(tmp))

    def _fail(self, job: Job, error: BaseException) -> None:
        job.loop.call_soon_threadsafe(_settle, job.future, None, error)

    def _run(self, jobs: list[Job], workdir: Path) -> None:
        ready: list[Job] = []
        for job in jobs:
            REQUEST_ID.set(job.request_id)
            job.timing["queue_ms"] = (time.perf_counter() - job.enqueued) * 1000
            t0 = time.perf_counter()
            job.predictor = self.predictors[job.tta]
            try:
                job.upload = decode_upload(job.data, job.kind, workdir, window=job.predictor.config.data.window)
                if job.frame is not None and not 0 <= job.frame < len(job.upload.frames):
                    raise UploadError(422, f"frame {job.frame + 1} does not exist; the upload has "
                                           f"{len(job.upload.frames)} frame(s)")
            except UploadError as err:
                self._fail(job, err)
                continue
            job.data = b""
            job.timing["decode_ms"] = (time.perf_counter() - t0) * 1000
            ready.append(job)
        for tta in (False, True):
            group = [j for j in ready if j.tta == tta]
            if group:
                self._predict(group, workdir)

    def _predict(self, group: list[Job], workdir: Path) -> None:
        predictor = group[0].predictor
        images = [img for job in group for img in job.images()]
        step = max(1, predictor.config.infer.batch_size)  # as medseg predict batches a series
        t0 = time.perf_counter()
        # with TTA, the members' disagreement also gives the per-image failure flag, as `predict --tta`
        want_std = group[0].tta and predictor.plan.members(predictor.backend.flips) > 1
        try:
            probas, scores = [], []
            for i in range(0, len(images), step):
                for p, std in predictor.predict_batch(images[i:i + step], uncertainty=want_std):
                    probas.append(p)
                    scores.append(qc_score(p, std, predictor.threshold) if want_std else None)
                if self.metrics is not None:
                    self.metrics.batch_size.observe(len(images[i:i + step]))
        except Exception as err:  # noqa: BLE001 - a model failure answers 500 for these jobs only
            log.exception("model call failed for %d job(s)", len(group))
            for job in group:
                self._fail(job, err)
            return
        seconds = time.perf_counter() - t0
        if self.metrics is not None:
            self.metrics.inference.observe(seconds)
        start = 0
        for job in group:
            REQUEST_ID.set(job.request_id)
            n = len(job.images())
            job.timing["inference_ms"] = seconds * 1000
            job.qc = scores[start:start + n] if want_std else None
            try:
                result = job.finish(job, probas[start:start + n], workdir)
            except UploadError as err:
                self._fail(job, err)
            except MedsegError as err:  # the upload cannot have this answer (e.g. no SEG for this instance)
                self._fail(job, UploadError(422, str(err).replace(str(workdir), "")))
            except Exception as err:  # noqa: BLE001 - reported to that request only, as 500
                log.exception("answer could not be built")
                self._fail(job, err)
            else:
                job.loop.call_soon_threadsafe(_settle, job.future, result, None)
            start += n
