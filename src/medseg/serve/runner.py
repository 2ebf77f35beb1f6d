"""Start ``medseg serve``: check the settings, set up request-id logging, run uvicorn.

uvicorn's own access log is off (it would log client addresses and query strings); the app logs one
line per request with its id, route template, status and duration. On SIGTERM/SIGINT uvicorn stops
accepting connections, lets in-flight requests finish (up to ``GRACE_S`` seconds), then the pool
finishes its queue and stops.
"""

from __future__ import annotations

import ipaddress
import logging
import sys
from pathlib import Path

from medseg.errors import MedsegError
from medseg.serve.security import TOKEN_ENV, install_request_id_logging, load_token
from medseg.serve.settings import ServeSettings

log = logging.getLogger("medseg.serve")
GRACE_S = 30
LOG_FORMAT = "%(asctime)s %(levelname)s [%(request_id)s] %(name)s: %(message)s"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def setup_logging(level: int = logging.INFO) -> None:
    """Every log line names its request id (``-`` outside requests)."""
    install_request_id_logging()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers = []
        logging.getLogger(name).propagate = True


def serve(model: str | Path, *, host: str = "127.0.0.1", port: int = 8000, token_file: Path | None = None,
          workers: int = 1, max_queue: int = 16, max_upload_mb: float = 32.0, max_megapixels: float = 40.0,
          max_batch: int = 1, batch_wait_ms: float = 5.0, log_level: int = logging.INFO) -> None:
    """Serve ``model`` (run folder, checkpoint or .onnx) until SIGTERM/SIGINT; MedsegError on bad settings."""
    import uvicorn

    from medseg.inference.predictor import Predictor
    from medseg.serve.app import create_app

    model = Path(model)
    if not model.exists():
        raise MedsegError(f"model {model} does not exist; give a run folder, a checkpoint or an .onnx file")
    token = load_token(token_file)
    if token is None and not is_loopback(host):
        raise MedsegError(f"refusing to listen on {host} without a bearer token; give --token-file FILE or set "
                          f"${TOKEN_ENV}")
    for name, value in (("--workers", workers), ("--max-queue", max_queue), ("--micro-batch", max_batch)):
        if value < 1:
            raise MedsegError(f"{name} must be at least 1, not {value}")
    settings = ServeSettings(token=token, workers=workers, max_queue=max_queue, max_upload_mb=max_upload_mb,
                             max_megapixels=max_megapixels, max_batch=max_batch, batch_wait_ms=batch_wait_ms,
                             model_path=str(model))
    setup_logging(log_level)
    if token is None:
        log.warning("no bearer token (--token-file or $%s): any local user can call the API", TOKEN_ENV)
    app = create_app(lambda: Predictor.load(model), settings)
    log.info("medseg serve on http://%s:%d (viewer at /, API docs at /docs)", host, port)
    uvicorn.run(app, host=host, port=port, log_config=None, access_log=False, server_header=False,
                timeout_graceful_shutdown=GRACE_S, log_level=logging.getLevelName(log_level).lower())
