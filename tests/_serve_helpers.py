"""Plain helpers for the ``medseg serve`` tests (no fixtures here)."""

from __future__ import annotations

import socket
import struct
import threading
import time
import zlib
from pathlib import Path

TOKEN = "test-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def wait_ready(get, timeout: float = 120.0) -> None:
    """Poll ``get('/readyz')`` (a TestClient's or an httpx client's get) until it answers 200."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if get("/readyz").status_code == 200:
            return
        time.sleep(0.1)
    raise AssertionError("the service did not become ready")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose IHDR declares ``width`` x ``height`` and whose data is one tiny (wrong) IDAT chunk."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + \
        chunk(b"IEND", b"")


class UvicornThread:
    """A real uvicorn server for ``app`` on a free loopback port, in a thread of this process."""

    def __init__(self, app) -> None:
        import uvicorn

        self.port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning",
                                                   access_log=False))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> UvicornThread:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline:
                raise AssertionError("uvicorn did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(60)


def write_inputs(folder: Path, seed: int = 3) -> dict[str, Path]:
    """A few images of different kinds and odd sizes: {name: path}."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for name, size, fmt in (("odd.jpg", (77, 131), "JPEG"), ("wide.png", (60, 150), "PNG"),
                            ("scan.tif", (90, 70), "TIFF"), ("old.bmp", (64, 64), "BMP")):
        yy, xx = np.mgrid[: size[0], : size[1]]
        blob = ((yy - size[0] / 2) ** 2 + (xx - size[1] / 2) ** 2) < (min(size) / 3) ** 2
        arr = rng.integers(120, 220, (*size, 3), dtype=np.uint8)
        arr[blob] = (arr[blob] * 0.4).astype(np.uint8)
        path = folder / name
        Image.fromarray(arr).save(path, format=fmt)
        out[name] = path
    return out
