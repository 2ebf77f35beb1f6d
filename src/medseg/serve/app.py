"""The FastAPI application of ``medseg serve``.

| route | auth | what |
|---|---|---|
| ``GET /`` | no | the viewer page (asks for the token) |
| ``GET /livez`` | no | 200 while the process serves HTTP |
| ``GET /readyz`` | no | 200 once the model is loaded and warmed, else 503 |
| ``GET /docs``, ``/openapi.json`` | no | OpenAPI (documentation only; no data, no model) |
| ``GET /v1/model`` | bearer | name, id, classes, input size, version, metrics, export kind |
| ``POST /v1/segment`` | bearer | one file -> mask PNG (default), json, overlay, probability, dicom-seg, viewer |
| ``POST /v1/segment/batch`` | bearer | several files -> one JSON entry each, errors per file |
| ``GET /metrics`` | bearer | Prometheus |

Every response carries ``X-Request-ID`` (the client's when it is plain, else a new one) and every log
line of a request names it. Error bodies are ``{"error": ..., "request_id": ...}`` and never quote the
upload's content, name or DICOM tags.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from contextlib import asynccontextmanager
from functools import partial
from importlib import resources
from typing import Any

from fastapi import FastAPI, Request, Security
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.security import HTTPBearer
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.routing import Match

from medseg._version import __version__
from medseg.serve.answers import build_answer
from medseg.serve.metrics import ServeMetrics
from medseg.serve.model_info import describe_model
from medseg.serve.outputs import ACCEPT, MEDIA_TYPES
from medseg.serve.pool import InferencePool, Job, NotReady, Overloaded
from medseg.serve.security import (
    REQUEST_ID,
    UploadError,
    check_pixels,
    install_request_id_logging,
    request_id,
    sniff,
    token_matches,
)
from medseg.serve.settings import ServeSettings

log = logging.getLogger("medseg.serve")
PUBLIC = frozenset({"/", "/livez", "/readyz", "/docs", "/docs/oauth2-redirect", "/openapi.json", "/viewer.js"})
MULTIPART_OVERHEAD = 64 * 1024
_bearer = HTTPBearer(auto_error=False, description="the token of --token-file or $MEDSEG_TOKEN")
_UPLOAD_BODY = {"requestBody": {"required": True, "content": {
    "multipart/form-data": {"schema": {"type": "object", "properties": {
        "file": {"type": "string", "format": "binary"}}}},
    "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}}
_BATCH_BODY = {"requestBody": {"required": True, "content": {
    "multipart/form-data": {"schema": {"type": "object", "properties": {
        "file": {"type": "array", "items": {"type": "string", "format": "binary"}}}}}}}}


def error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message, "request_id": REQUEST_ID.get()}, status_code=status, headers=headers)


def static_text(name: str) -> str:
    return (resources.files("medseg.serve") / "static" / name).read_text(encoding="utf-8")


# --------------------------------------------------------------------------------------------- uploads
async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it passes ``limit`` bytes (declared or streamed)."""
    too_large = UploadError(413, f"the upload is larger than the {limit // 1024} KiB this service accepts "
                                 "(--max-upload-mb)")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


async def read_files(request: Request, settings: ServeSettings, max_files: int) -> list[bytes]:
    """The uploaded files: multipart fields ``file`` (or ``files``), or the raw body as one file."""
    per_file = settings.max_upload_bytes
    body = await read_body(request, per_file + MULTIPART_OVERHEAD)  # a batch shares one upload's budget
    if not request.headers.get("content-type", "").lower().startswith("multipart/form-data"):
        if len(body) > per_file:
            raise UploadError(413, f"the upload is larger than {settings.max_upload_mb:g} MiB (--max-upload-mb)")
        return [body]

    async def stream():
        yield body

    try:
        form = await MultiPartParser(request.headers, stream(), max_files=max_files, max_fields=max_files + 8).parse()
    except MultiPartException as err:
        raise UploadError(400, f"the multipart body cannot be read ({err.message})") from None
    try:
        files = [v for k, v in form.multi_items() if k in ("file", "files") and isinstance(v, UploadFile)]
        if not files:
            raise UploadError(400, "no file in the form; send it as the multipart field 'file'")
        out = []
        for f in files:
            data = await f.read()
            if len(data) > per_file:
                raise UploadError(413, f"a file is larger than {settings.max_upload_mb:g} MiB (--max-upload-mb)")
            out.append(data)
        return out
    finally:
        await form.close()


def choose_format(fmt: str | None, accept: str | None) -> str:
    """``?format=`` when given, else the first known media type in ``Accept``, else png."""
    if fmt:
        if fmt not in MEDIA_TYPES:
            raise UploadError(400, f"format must be one of {', '.join(MEDIA_TYPES)}, not {fmt[:20]!r}")
        return fmt
    accept = (accept or "").lower()
    for media, name in ACCEPT:
        if media in accept:
            return name
    return "png"


# ----------------------------------------------------------------------------------------------- app
def create_app(load: Callable[[], Any] | Any, settings: ServeSettings | None = None) -> FastAPI:
    """The application around ``load()`` (a callable returning a Predictor, or a Predictor itself).

    The model is loaded and warmed in the background when the app starts: ``/livez`` answers at once,
    ``/readyz`` and ``/v1/*`` answer 503 until it is ready.
    """
    settings = settings or ServeSettings()
    install_request_id_logging()
    get_predictor = load if callable(load) and not hasattr(load, "predict_batch") else (lambda: load)
    state: dict[str, Any] = {"model": None}

    def loader():
        """Load the model and describe it (file hash included) before the service reports ready."""
        predictor = get_predictor()
        state["model"] = describe_model(predictor, settings.model_path or predictor.source)
        return predictor

    metrics = ServeMetrics()
    pool = InferencePool(loader, workers=settings.workers, max_queue=settings.max_queue,
                         max_batch=settings.max_batch, batch_wait_ms=settings.batch_wait_ms, metrics=metrics)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        pool.start()
        yield
        await asyncio.to_thread(pool.close)  # queued jobs finish first
        log.info("stopped")

    app = FastAPI(title="medseg", version=__version__, lifespan=lifespan,
                  description="Segment medical images with a trained medseg model. Bearer token on /v1/* and "
                              "/metrics. Viewer at /.")
    app.state.pool, app.state.metrics, app.state.settings = pool, metrics, settings

    # ------------------------------------------------------------------ middleware
    def route_template(request: Request) -> str:
        """The matched route's path template (a bounded set of metric labels), ``other`` for unknown paths."""
        for route in app.router.routes:
            match, _ = route.matches(request.scope)
            if match == Match.FULL:
                return getattr(route, "path", "other")
        return "other"

    @app.middleware("http")
    async def guard(request: Request, call_next):
        rid = request_id(request.headers.get("x-request-id"))
        REQUEST_ID.set(rid)
        started = time.perf_counter()
        template = route_template(request)
        metrics.in_flight.inc()
        try:
            if settings.token and template not in PUBLIC and not token_matches(request.headers.get("authorization"),
                                                                                settings.token):
                response = error(401, "missing or wrong bearer token", {"WWW-Authenticate": "Bearer"})
            else:
                response = await call_next(request)
        except Exception as err:  # noqa: BLE001 - answered as 500 with the request id, logged with traceback
            log.error("internal error: %s", type(err).__name__, exc_info=err)
            response = error(500, "internal error; the request id is in the server log")
        finally:
            metrics.in_flight.dec()
        seconds = time.perf_counter() - started
        metrics.requests.labels(request.method, template, str(response.status_code)).inc()
        metrics.latency.labels(template).observe(seconds)
        response.headers["X-Request-ID"] = rid
        response.headers["X-Content-Type-Options"] = "nosniff"
        if template not in ("/livez", "/readyz"):
            log.info("%s %s %d %.1f ms", request.method, template, response.status_code, seconds * 1000)
        return response

    @app.exception_handler(UploadError)
    async def upload_error(request: Request, err: UploadError):
        return error(err.status, str(err))

    @app.exception_handler(Exception)
    async def internal_error(request: Request, err: Exception):
        log.error("internal error: %s", type(err).__name__, exc_info=err)
        return error(500, "internal error; the request id is in the server log")

    # ------------------------------------------------------------------ public routes
    @app.get("/", include_in_schema=False)
    async def viewer() -> HTMLResponse:
        return HTMLResponse(static_text("index.html"), headers={
            "Content-Security-Policy": "default-src 'self'; img-src 'self' data: blob:; "
                                       "style-src 'self' 'unsafe-inline'; frame-ancestors 'none'",
            "Cache-Control": "no-cache"})

    @app.get("/viewer.js", include_in_schema=False)
    async def viewer_js() -> Response:
        return Response(static_text("viewer.js"), media_type="text/javascript", headers={"Cache-Control": "no-cache"})

    @app.get("/livez", tags=["health"])
    async def livez() -> dict[str, str]:
        """200 while the process answers HTTP (liveness)."""
        return {"status": "alive"}

    @app.get("/readyz", tags=["health"])
    async def readyz():
        """200 once the model is loaded and warmed (readiness); 503 before, or when loading failed."""
        if pool.ready.is_set():
            return {"status": "ready", "queue": pool.queue.qsize(), "max_queue": settings.max_queue}
        if pool.failed:
            return error(503, "the model could not be loaded; see the server log")
        return error(503, "the model is loading", {"Retry-After": str(settings.retry_after_s)})

    # ------------------------------------------------------------------ protected routes
    def not_ready() -> JSONResponse:
        return error(503, "the model is not ready", {"Retry-After": str(settings.retry_after_s)})

    @app.get("/v1/model", tags=["model"], dependencies=[Security(_bearer)])
    async def model():
        """The loaded model: name, id, classes (names, colours), input size, version, metrics, export kind."""
        return not_ready() if not pool.ready.is_set() else state["model"]

    @app.get("/metrics", tags=["health"], dependencies=[Security(_bearer)])
    async def prometheus() -> Response:
        """Prometheus metrics (text exposition format)."""
        return Response(metrics.render(), media_type=metrics.content_type)

    async def run_job(data: bytes, *, fmt: str, tta: bool | None, frame: int | None, mask_in_json: bool = False):
        kind = sniff(data)
        check_pixels(data, kind, settings.max_pixels)
        if fmt == "dicom-seg" and kind != "dicom":
            raise UploadError(406, "a DICOM SEG can only answer a DICOM upload; ask for png or json")
        if frame is not None and frame < 1:
            raise UploadError(400, "frame is 1-based")
        if not pool.ready.is_set():
            raise NotReady
        job = Job(data, kind, partial(build_answer, fmt=fmt, model_id=state["model"]["id"], mask_in_json=mask_in_json),
                  tta=pool.default_tta if tta is None else tta,
                  frame=None if fmt == "dicom-seg" else (frame or 1) - 1, request_id=REQUEST_ID.get())
        started = time.perf_counter()
        answer = await pool.submit(job)
        total = round((time.perf_counter() - started) * 1000, 1)
        return answer, {k: round(v, 1) for k, v in job.timing.items()} | {"total_ms": total}

    @app.post("/v1/segment", tags=["segment"], dependencies=[Security(_bearer)], openapi_extra=_UPLOAD_BODY,
              responses={200: {"content": {m: {} for m in set(MEDIA_TYPES.values())}}})
    async def segment(request: Request, format: str | None = None, tta: bool | None = None,
                      frame: int | None = None):
        """Segment one image (PNG, JPEG, TIFF, BMP) or DICOM file, sent as the form field ``file`` or the body.

        ``format`` (else ``Accept``): ``png`` mask at the input's size (default), ``json`` (per-class area,
        bbox, COCO RLE, polygons), ``overlay`` PNG, ``probability`` PNG (8-bit), ``dicom-seg`` (DICOM
        input), ``viewer`` (json + mask, probabilities and image, base64). ``tta``: test-time
        augmentation (default: the run's). ``frame``: 1-based frame of a multi-frame DICOM.
        """
        fmt = choose_format(format, request.headers.get("accept"))
        (data,) = await read_files(request, settings, 1)
        try:
            answer, timing = await run_job(data, fmt=fmt, tta=tta, frame=frame)
        except Overloaded:
            return error(503, "the queue is full; retry later", {"Retry-After": str(settings.retry_after_s)})
        except NotReady:
            return not_ready()
        if answer.payload is not None:
            return JSONResponse(answer.payload | {"timing_ms": timing, "request_id": REQUEST_ID.get()})
        headers = {"Server-Timing": ", ".join(f"{k.removesuffix('_ms')};dur={v}" for k, v in timing.items())}
        if fmt == "dicom-seg":
            headers["Content-Disposition"] = 'attachment; filename="segmentation.dcm"'
        return Response(answer.body, media_type=answer.media_type, headers=headers)

    @app.post("/v1/segment/batch", tags=["segment"], dependencies=[Security(_bearer)], openapi_extra=_BATCH_BODY)
    async def segment_batch(request: Request, tta: bool | None = None, masks: bool = False):
        """Several files (form fields ``file``), at most ``max_files``: one JSON entry each, in order.

        Each entry is the ``json`` answer of ``/v1/segment`` (with ``mask_png``, base64, when
        ``masks=true``) or ``{"status": 4xx/5xx, "error": ...}``; one bad file does not stop the others.
        """
        files = await read_files(request, settings, settings.max_files)

        async def one(i: int, data: bytes) -> dict[str, Any]:
            try:
                answer, timing = await run_job(data, fmt="json", tta=tta, frame=None, mask_in_json=masks)
            except UploadError as err:
                return {"index": i, "status": err.status, "error": str(err)}
            except Overloaded:
                return {"index": i, "status": 503, "error": "the queue is full; retry later"}
            except NotReady:
                return {"index": i, "status": 503, "error": "the model is not ready"}
            except Exception as err:  # noqa: BLE001 - one file's failure is reported in its entry
                log.error("internal error on batch file %d: %s", i, type(err).__name__, exc_info=err)
                return {"index": i, "status": 500, "error": "internal error"}
            return {"index": i, "status": 200, **answer.payload, "timing_ms": timing}

        results = await asyncio.gather(*(one(i, d) for i, d in enumerate(files)))
        return JSONResponse({"request_id": REQUEST_ID.get(), "results": results})

    return app

