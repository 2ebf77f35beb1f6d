"""Bounded memory: large images predict within 2 GB (measured in a subprocess with ru_maxrss), the
sliding-window pass holds only the image and its output, and images declaring more pixels than the
limit are refused from their header, before decoding."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medseg.errors import DataError
from medseg.io.formats import read_image
from medseg.io.images import read_mask
from tests._paths import ROOT

_MEASURE = """
import json, resource, subprocess, sys
p = subprocess.run(sys.argv[1:], capture_output=True, text=True)
print(json.dumps({"rc": p.returncode, "out": p.stdout[-2000:] + p.stderr[-2000:],
                  "maxrss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))
"""


def _peak(*argv: str) -> dict:
    """Run ``medseg ARGV`` in a fresh process and return its exit code, output and peak RSS (MB)."""
    cli = [sys.executable, "-c", "from medseg.cli import main; main()", *argv]
    env = {"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin", "NO_ALBUMENTATIONS_UPDATE": "1",
           "HOME": str(Path.home())}
    out = subprocess.run([sys.executable, "-c", _MEASURE, *cli], capture_output=True, text=True, env=env,
                         timeout=1200)
    return json.loads(out.stdout)


def test_large_photo_and_huge_tiff_predict_within_2_gb(tmp_path, tiny_run):
    photo = tmp_path / "photo.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (3000, 4000, 3), dtype=np.uint8)).save(photo)
    ramp = np.linspace(0, 255, 10000, dtype=np.float32)
    grey = ((ramp[:, None] + ramp[None, :]) / 2).astype(np.uint8)
    tiff = tmp_path / "scan.tif"
    Image.fromarray(np.stack([grey, grey[::-1], grey[:, ::-1]], axis=2)).save(tiff, compression="tiff_deflate")
    del grey
    # the tiny run was trained on 96 px images; a run trained on photos of about 2500 px (train_side)
    # predicts a 10000x10000 scan by sliding windows at a quarter of its size, at full size in the output
    for image, size in ((photo, (4000, 3000)), (tiff, (10000, 10000))):
        result = _peak("predict", str(tiny_run), str(image), "--out", str(tmp_path / "out"), "--overlay",
                       "--set", "infer.train_side=2500")
        assert result["rc"] == 0, result["out"]
        print(f"{image.name}: peak RSS {result['maxrss_mb']:.0f} MB")
        assert result["maxrss_mb"] < 2048, result
        with Image.open(tmp_path / "out" / f"{image.stem}.png") as mask:
            assert mask.size == size
        with Image.open(tmp_path / "out" / f"{image.stem}_overlay.png") as overlay:
            assert overlay.size == size


def test_sliding_windows_keep_only_the_image_and_its_output(tmp_path):
    import tracemalloc

    from medseg.config import build_config
    from medseg.inference.predictor import Predictor
    from tests.inference.test_tta_sliding import RedBackend, smooth_image

    img = smooth_image(2000, 3000)
    p = Predictor(RedBackend(), build_config(overrides=["data.image_size=128", "infer.mode=sliding",
                                                         "infer.batch_size=8"]))
    tracemalloc.start()
    proba = p.predict_proba(img)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    np.testing.assert_allclose(proba, img[..., 0] / 255, atol=1e-4)
    assert peak < proba.nbytes * 1.5 + 16 * 2**20, peak / 2**20  # the output map, windows, no full-size copies


def _png_header_only(path: Path, width: int, height: int) -> Path:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))
    return path


def test_images_beyond_the_pixel_limit_are_refused_from_their_header(tmp_path, monkeypatch):
    bomb = _png_header_only(tmp_path / "bomb.png", 60000, 60000)  # 3.6 gigapixels declared, 100 bytes on disk
    for reader in (read_image, read_mask):
        with pytest.raises(DataError, match=r"bomb\.png is 60000x60000 pixels .*limit of 150 megapixels"):
            reader(bomb)
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(tmp_path / "small.png")
    monkeypatch.setenv("MEDSEG_MAX_PIXELS", "1000")
    with pytest.raises(DataError, match="small.png is 40x40 pixels"):
        read_image(tmp_path / "small.png")
    monkeypatch.setenv("MEDSEG_MAX_PIXELS", "2000")
    assert read_image(tmp_path / "small.png").shape == (40, 40, 3)
    monkeypatch.setenv("MEDSEG_MAX_PIXELS", "lots")
    with pytest.raises(DataError, match="MEDSEG_MAX_PIXELS"):
        read_image(tmp_path / "small.png")


def test_dicom_beyond_the_pixel_limit_is_refused(tmp_path, monkeypatch):
    from medseg.io.dicom import read_dicom
    from tests._dicom_factories import ct_slice

    path = ct_slice(tmp_path / "ct.dcm", np.zeros((64, 64), np.int16))
    monkeypatch.setenv("MEDSEG_MAX_PIXELS", "4000")
    with pytest.raises(DataError, match=r"ct\.dcm declares 64x64 pixels per frame"):
        read_dicom(path)


def test_predict_folder_with_a_bomb_reports_it_and_does_the_rest(tmp_path):
    from medseg.config import build_config
    from medseg.inference.predictor import Predictor
    from tests.inference.test_tta_sliding import RedBackend, smooth_image

    src = tmp_path / "in"
    src.mkdir()
    _png_header_only(src / "a_bomb.png", 50000, 50000)
    for name in ("b", "c"):
        Image.fromarray(smooth_image(40, 50)).save(src / f"{name}.png")
    result = Predictor(RedBackend(), build_config(overrides=["data.image_size=32"])).predict_folder(
        src, tmp_path / "out", progress=False)
    assert sorted(p.name for p in result.written) == ["b.png", "c.png"]
    ((path, message),) = result.failed
    assert path.name == "a_bomb.png" and "limit" in message
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["b.png", "c.png"]
    json.dumps(message)  # one plain sentence
