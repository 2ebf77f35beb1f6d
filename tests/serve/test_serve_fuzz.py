"""Abuse: a few hundred seeded malformed uploads give 4xx, never 500, and the service keeps serving.

Cases (seed 2026): zero bytes; random bytes; valid PNG/JPEG/TIFF/BMP/DICOM files truncated at random
points; wrong magic (a file's first bytes replaced by another format's signature or by junk); huge
declared dimensions in each format's header; DICOM without pixel data (removed, emptied, a report);
random byte flips in valid files (these may still decode: 200 is allowed only for them); malformed
multipart bodies. The counts per case and status are printed (``pytest -s``).
"""

from __future__ import annotations

import io
import struct
from collections import Counter

import numpy as np
import pydicom
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from medseg.inference.predictor import Predictor
from medseg.serve.app import create_app
from medseg.serve.settings import ServeSettings
from tests._dicom_factories import ct_slice, structured_report
from tests._serve_helpers import AUTH, TOKEN, png_header_only, wait_ready, write_inputs

pytestmark = pytest.mark.slow
SEED = 2026


def tiff_header_only(width: int, height: int) -> bytes:
    """A little-endian TIFF whose IFD declares ``width`` x ``height`` RGB and points at 16 bytes of strip."""
    entries = [(256, 4, 1, width), (257, 4, 1, height), (258, 3, 1, 8), (259, 3, 1, 1), (262, 3, 1, 2),
               (273, 4, 1, 8 + 2 + 12 * 9 + 4), (277, 3, 1, 3), (278, 4, 1, height), (279, 4, 1, 16)]
    ifd = struct.pack("<H", len(entries)) + b"".join(struct.pack("<HHII", *e) for e in entries) + b"\0\0\0\0"
    return b"II*\x00" + struct.pack("<I", 8) + ifd + bytes(16)


def bmp_header_only(width: int, height: int) -> bytes:
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, 0, 2835, 2835, 0, 0)
    return b"BM" + struct.pack("<IHHI", 14 + 40 + 16, 0, 0, 14 + 40) + info + bytes(16)


def jpeg_with_size(jpeg: bytes, width: int, height: int) -> bytes:
    i = jpeg.index(b"\xff\xc0")  # baseline SOF0: length(2) precision(1) height(2) width(2)
    return jpeg[: i + 5] + struct.pack(">HH", min(height, 65535), min(width, 65535)) + jpeg[i + 9:]


def dicom_variants(tmp_path) -> dict[str, bytes]:
    src = ct_slice(tmp_path / "ct.dcm", np.full((32, 32), 1000, np.int16))
    out = {"valid": src.read_bytes()}
    ds = pydicom.dcmread(src)
    del ds.PixelData
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    out["no_pixel_data"] = buf.getvalue()
    ds = pydicom.dcmread(src)
    ds.PixelData = b""
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    out["empty_pixel_data"] = buf.getvalue()
    ds = pydicom.dcmread(src)
    ds.Rows, ds.Columns, ds.NumberOfFrames = 65535, 65535, 100
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    out["huge"] = buf.getvalue()
    ds = pydicom.dcmread(src)
    del ds.Rows
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    out["no_rows"] = buf.getvalue()
    out["report"] = structured_report(tmp_path / "sr.dcm").read_bytes()
    return out


def cases(tmp_path) -> list[tuple[str, bytes, bool]]:
    """(case name, upload, 200 allowed) in a seeded order."""
    rng = np.random.default_rng(SEED)
    valid = {p.suffix.lstrip("."): p.read_bytes() for p in write_inputs(tmp_path / "valid", seed=SEED).values()}
    dicom = dicom_variants(tmp_path)
    valid["dcm"] = dicom["valid"]
    out: list[tuple[str, bytes, bool]] = [("zero-byte", b"", False)]
    for _ in range(80):
        out.append(("random-bytes", rng.integers(0, 256, int(rng.integers(1, 5000)), dtype=np.uint8).tobytes(), False))
    for kind, data in valid.items():
        # cuts inside the header or data; BMP/TIFF/DICOM raw pixels end the file, so any cut loses pixels
        for cut in rng.integers(1, len(data) - 8, 24):
            out.append((f"truncated-{kind}", data[: int(cut)], kind == "jpg"))  # JPEG decoders pad short scans
    signatures = [b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"II*\x00", b"BM", b"GIF89a", b"%PDF-1.4", b"PK\x03\x04"]
    for kind, data in valid.items():
        for _ in range(6):
            sig = signatures[int(rng.integers(len(signatures)))]
            out.append((f"wrong-magic-{kind}", sig + data[len(sig) + int(rng.integers(0, 8)):], False))
    jpeg = valid["jpg"]
    for w, h in ((100_000, 100_000), (65_535, 65_535), (20_000, 5_000), (7_000, 7_000)):
        out += [("huge-png", png_header_only(w, h), False), ("huge-tiff", tiff_header_only(w, h), False),
                ("huge-bmp", bmp_header_only(w, h), False), ("huge-jpeg", jpeg_with_size(jpeg, w, h), False)]
    out.append(("huge-dicom", dicom["huge"], False))
    for name in ("no_pixel_data", "empty_pixel_data", "no_rows", "report"):
        out += [(f"dicom-{name}", dicom[name], False)] * 3
    for kind, data in valid.items():
        for _ in range(12):
            arr = np.frombuffer(data, np.uint8).copy()
            idx = rng.integers(0, len(arr), int(rng.integers(1, 40)))
            arr[idx] = rng.integers(0, 256, len(idx), dtype=np.uint8)
            out.append((f"byte-flips-{kind}", arr.tobytes(), True))
    return out


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data", "ignore::PIL.Image.DecompressionBombWarning")
def test_malformed_uploads_get_4xx_never_500_and_the_service_keeps_serving(tiny_run, tmp_path):
    predictor = Predictor.load(tiny_run)
    settings = ServeSettings(token=TOKEN, model_path=str(tiny_run), max_queue=64, max_megapixels=40)
    uploads = cases(tmp_path)
    assert len(uploads) >= 300
    good = write_inputs(tmp_path / "good", seed=1)["odd.jpg"].read_bytes()
    counts: Counter[tuple[str, int]] = Counter()
    with TestClient(create_app(predictor, settings)) as client:
        wait_ready(client.get)
        before = client.post("/v1/segment", content=good, headers=AUTH)
        assert before.status_code == 200
        for i, (name, data, may_decode) in enumerate(uploads):
            if i % 2:
                r = client.post("/v1/segment", content=data, headers=AUTH)
            else:
                r = client.post("/v1/segment?format=json", files={"file": ("x.png", data, "image/png")}, headers=AUTH)
            group = name.rsplit("-", 1)[0] if name.startswith(("truncated-", "wrong-magic-", "byte-flips-")) else name
            counts[(group, r.status_code)] += 1
            assert r.status_code != 500, (name, r.text)
            assert 400 <= r.status_code < 500 or (may_decode and r.status_code == 200), (name, r.status_code, r.text)
            assert "request_id" in r.json() if r.status_code >= 400 else True
            if name.startswith("huge"):
                assert r.status_code == 413, (name, r.text)
        boundary = "xyz"
        for body in (b"--xyz\r\nContent-Disposition: form-data; name=\"file\"\r\n\r\nabc",  # never closed
                     b"--xyz--\r\n", b"garbage without boundaries",
                     b"--xyz\r\nContent-Disposition: form-data; name=\"other\"\r\n\r\nabc\r\n--xyz--\r\n"):
            r = client.post("/v1/segment", content=body, headers={**AUTH, "Content-Type":
                                                                  f"multipart/form-data; boundary={boundary}"})
            counts[("bad-multipart", r.status_code)] += 1
            assert 400 <= r.status_code < 500, r.text
        # still serving, and still the same mask
        assert client.get("/livez").status_code == 200 and client.get("/readyz").status_code == 200
        after = client.post("/v1/segment", content=good, headers=AUTH)
        assert after.status_code == 200 and after.content == before.content
        assert np.array(Image.open(io.BytesIO(after.content))).shape == (77, 131)
    total = sum(counts.values())
    by_status = Counter()
    for (_, status), n in counts.items():
        by_status[status] += n
    print(f"\nfuzz: {total} malformed uploads, by status {dict(sorted(by_status.items()))}")
    for (name, status), n in sorted(counts.items()):
        print(f"  {name:24s} {status}  x{n}")
    assert by_status[500] == 0
