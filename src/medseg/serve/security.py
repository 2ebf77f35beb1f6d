"""Security helpers for the HTTP service: the bearer token, content sniffing and size checks.

- The token comes from a file (``--token-file``) or the ``MEDSEG_TOKEN`` environment variable, never
  from the command line (where ``ps`` and shell histories show it). It is compared in constant time
  (:func:`hmac.compare_digest`), as RFC 6750 bearer tokens should be.
- An upload's kind is decided from its first bytes (file signatures: PNG, JPEG, TIFF, BMP, and the
  DICOM Part 10 preamble + ``DICM`` marker of PS3.10 section 7.1), never from its name or content type.
- The pixel count is read from the header (PIL opens lazily; pydicom stops before Pixel Data), so a
  decompression bomb is refused before a single pixel is decoded.
"""

from __future__ import annotations

import contextvars
import hmac
import logging
import os
import re
import stat
import uuid
from io import BytesIO
from pathlib import Path

from medseg.errors import MedsegError

log = logging.getLogger(__name__)

TOKEN_ENV = "MEDSEG_TOKEN"

#: (signature, kind) pairs checked at offset 0; DICOM is checked separately at offset 128.
SIGNATURES = (
    (b"\x89PNG\r\n\x1a\n", "png"),
    (b"\xff\xd8\xff", "jpeg"),
    (b"II*\x00", "tiff"), (b"MM\x00*", "tiff"), (b"II+\x00", "tiff"), (b"MM\x00+", "tiff"),  # BigTIFF too
    (b"BM", "bmp"),
)
SUFFIX = {"png": ".png", "jpeg": ".jpg", "tiff": ".tif", "bmp": ".bmp", "dicom": ".dcm"}
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
#: The id of the request being handled (set by the app's middleware and by the worker for each job).
REQUEST_ID: contextvars.ContextVar[str] = contextvars.ContextVar("medseg_request_id", default="-")
_factory_installed = False


class UploadError(MedsegError):
    """An upload the service refuses; ``status`` is the HTTP status to answer (413, 415, 422)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def load_token(token_file: str | Path | None) -> str | None:
    """The bearer token from ``token_file`` (first line, stripped), else ``$MEDSEG_TOKEN``, else None.

    Raises MedsegError when the file is missing or empty. Warns when the file is readable by others.
    """
    if token_file is not None:
        path = Path(token_file)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as err:
            raise MedsegError(f"token file {path} cannot be read ({err.strerror or err})") from None
        token = text.strip().splitlines()[0].strip() if text.strip() else ""
        if not token:
            raise MedsegError(f"token file {path} is empty; write the token on its first line")
        if path.stat().st_mode & (stat.S_IRGRP | stat.S_IROTH):
            log.warning("token file %s is readable by other users; chmod 600 it", path)
        return token
    token = os.environ.get(TOKEN_ENV, "").strip()
    return token or None


def token_matches(header: str | None, token: str) -> bool:
    """True when ``header`` is ``Bearer <token>``; the comparison takes the same time for any wrong token."""
    if not header:
        return False
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(given.strip().encode("utf-8"), token.encode("utf-8"))


def request_id(given: str | None) -> str:
    """The client's ``X-Request-ID`` when it is short and plain (letters, digits, ``._-``), else a new one."""
    return given if given and _REQUEST_ID.match(given) else uuid.uuid4().hex


def install_request_id_logging() -> None:
    """Give every log record a ``request_id`` attribute (the current request's, ``-`` outside requests)."""
    global _factory_installed
    if _factory_installed:
        return
    previous = logging.getLogRecordFactory()

    def factory(*args, **kwargs):
        record = previous(*args, **kwargs)
        record.request_id = REQUEST_ID.get()
        return record

    logging.setLogRecordFactory(factory)
    _factory_installed = True


def sniff(data: bytes) -> str:
    """The upload's kind (png, jpeg, tiff, bmp, dicom) from its first bytes; UploadError 415 otherwise."""
    if not data:
        raise UploadError(415, "the upload is empty; send a PNG, JPEG, TIFF, BMP or DICOM file")
    if len(data) >= 132 and data[128:132] == b"DICM":
        return "dicom"
    for signature, kind in SIGNATURES:
        if data.startswith(signature):
            return kind
    raise UploadError(415, "the upload is not a PNG, JPEG, TIFF, BMP or DICOM (Part 10) file "
                           "(its content was checked, not its name or content type)")


def declared_pixels(data: bytes, kind: str) -> tuple[int, int, int]:
    """(width, height, frames) from the header alone; UploadError 422 when the header cannot be read.

    Images: the first frame (what is segmented). DICOM: Columns, Rows and Number of Frames.
    """
    if kind == "dicom":
        return _dicom_header(data)
    from PIL import Image

    try:
        with Image.open(BytesIO(data)) as im:
            width, height = im.size
    except Image.DecompressionBombError:
        raise UploadError(413, "the image declares more pixels than the decoder allows") from None
    except Exception:  # noqa: BLE001 - PIL raises many types for a damaged header
        raise UploadError(422, f"the {kind.upper()} header cannot be read; the file may be truncated or "
                               "corrupt") from None
    return int(width), int(height), 1


def _dicom_header(data: bytes) -> tuple[int, int, int]:
    import pydicom

    try:
        ds = pydicom.dcmread(BytesIO(data), stop_before_pixels=True)
        rows, cols = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
        frames = int(ds.get("NumberOfFrames", 1) or 1)
    except Exception:  # noqa: BLE001 - pydicom raises many types for a damaged header
        raise UploadError(422, "the DICOM header cannot be read; the file may be truncated or corrupt") from None
    if rows <= 0 or cols <= 0:
        raise UploadError(422, "the DICOM file holds no image (no Rows/Columns); send an image instance, "
                               "not a SEG, SR or other non-image object")
    return cols, rows, max(frames, 1)


def check_pixels(data: bytes, kind: str, max_pixels: int) -> tuple[int, int, int]:
    """(width, height, frames) from the header; UploadError 413 when width x height x frames > max_pixels."""
    width, height, frames = declared_pixels(data, kind)
    if width * height * frames > max_pixels:
        raise UploadError(413, f"the image declares {width}x{height} pixels x {frames} frame(s), more than the "
                               f"{max_pixels} pixels this service accepts (--max-megapixels)")
    return width, height, frames
