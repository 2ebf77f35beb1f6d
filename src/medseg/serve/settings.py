"""Settings of ``medseg serve`` (command-line options; the token never comes from the command line)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class ServeSettings:
    """Limits and switches of the HTTP service.

    ``max_upload_mb``: largest accepted file (MiB; 413 above). ``max_megapixels``: largest image,
    width x height x frames from the header (413 above, before decoding). ``max_queue``: jobs waiting
    for a worker (503 with ``Retry-After`` above). ``max_batch`` > 1 turns micro-batching on.
    """

    token: str | None = None
    workers: int = 1
    max_queue: int = 16
    max_upload_mb: float = 32.0
    max_megapixels: float = 40.0
    max_batch: int = 1
    batch_wait_ms: float = 5.0
    max_files: int = 16  # files in one /v1/segment/batch request
    retry_after_s: int = 1
    model_path: str = ""

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)

    @property
    def max_pixels(self) -> int:
        return int(self.max_megapixels * 1_000_000)
