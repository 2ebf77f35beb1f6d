"""`medseg serve`: the HTTP API on a tiny trained run, compared with `medseg predict` file for file."""

from __future__ import annotations

import base64
import io
import json
import logging
import threading
import time

import numpy as np
import pycocotools.mask as coco_mask
import pydicom
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from typer.testing import CliRunner

from medseg.cli import app as cli
from medseg.inference.predictor import Predictor
from medseg.serve.app import create_app
from medseg.serve.settings import ServeSettings
from tests._dicom_factories import PATIENT_ID, PATIENT_NAME, ct_slice
from tests._serve_helpers import AUTH, TOKEN, png_header_only, wait_ready, write_inputs

pytestmark = pytest.mark.slow
runner = CliRunner()


def medseg_cli(*args: str) -> str:
    result = runner.invoke(cli, [str(a) for a in args], catch_exceptions=False)
    for handler in list(logging.root.handlers):  # the CLI logs to CliRunner's stream, closed by now
        if getattr(getattr(handler, "stream", None), "closed", False):
            logging.root.removeHandler(handler)
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture(scope="module")
def predictor(tiny_run):
    return Predictor.load(tiny_run)


@pytest.fixture(scope="module")
def client(predictor, tiny_run):
    settings = ServeSettings(token=TOKEN, model_path=str(tiny_run), max_upload_mb=2, max_megapixels=1)
    with TestClient(create_app(predictor, settings)) as c:
        wait_ready(c.get)
        yield c


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    return write_inputs(tmp_path_factory.mktemp("serve_inputs") / "in")


@pytest.fixture(scope="module")
def predicted(tiny_run, inputs, tmp_path_factory):
    """`medseg predict --overlay` on the inputs: {name: folder with <stem>.png and <stem>_overlay.png}."""
    out = tmp_path_factory.mktemp("predicted")
    folder = next(iter(inputs.values())).parent
    medseg_cli("predict", tiny_run, folder, "--out", out / "plain", "--overlay")
    medseg_cli("predict", tiny_run, folder, "--out", out / "tta", "--tta")
    return out


def test_health_is_public_everything_else_needs_the_token(client):
    assert client.get("/livez").json() == {"status": "alive"}
    assert client.get("/readyz").status_code == 200
    assert client.get("/").status_code == 200 and "medseg viewer" in client.get("/").text
    assert client.get("/docs").status_code == 200 and "/v1/segment" in client.get("/openapi.json").text
    for method, path in (("get", "/v1/model"), ("get", "/metrics"), ("post", "/v1/segment"),
                         ("post", "/v1/segment/batch"), ("get", "/not-a-route")):
        r = getattr(client, method)(path)
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer", path
        r = getattr(client, method)(path, headers={"Authorization": "Bearer wrong-token"})
        assert r.status_code == 401, path
        r = getattr(client, method)(path, headers={"Authorization": TOKEN})  # no scheme
        assert r.status_code == 401, path
    assert client.get("/v1/model", headers=AUTH).status_code == 200


def test_masks_equal_medseg_predict_byte_for_byte(client, inputs, predicted):
    for name, path in inputs.items():
        data = path.read_bytes()
        expected = (predicted / "plain" / f"{path.stem}.png").read_bytes()
        multipart = client.post("/v1/segment", files={"file": (name, data)}, headers=AUTH)
        raw = client.post("/v1/segment", content=data, headers=AUTH)
        for r in (multipart, raw):
            assert r.status_code == 200, r.text
            assert r.headers["content-type"] == "image/png"
            assert r.content == expected, name
        mask = np.array(Image.open(io.BytesIO(multipart.content)))
        assert mask.shape == Image.open(path).size[::-1] and set(np.unique(mask)) <= {0, 255}


def test_overlay_and_tta_equal_medseg_predict(client, inputs, predicted):
    path = inputs["odd.jpg"]
    r = client.post("/v1/segment?format=overlay", files={"file": path.open("rb")}, headers=AUTH)
    assert r.status_code == 200 and r.content == (predicted / "plain" / "odd_overlay.png").read_bytes()
    r = client.post("/v1/segment?tta=true", files={"file": path.open("rb")}, headers=AUTH)
    assert r.status_code == 200 and r.content == (predicted / "tta" / "odd.png").read_bytes()


def test_tta_json_carries_the_failure_flag_of_predict_tta(client, inputs, predicted):
    import csv

    rows = {r["image"]: float(r["qc_score"]) for r in csv.DictReader((predicted / "tta" / "qc.csv").open())}
    r = client.post("/v1/segment?format=json&tta=true", files={"file": inputs["odd.jpg"].open("rb")}, headers=AUTH)
    qc = r.json()["qc"]
    assert qc["score"] == pytest.approx(rows["odd.jpg"], abs=1e-6) and qc["frame_scores"] == [qc["score"]]
    assert qc["threshold"] is None and qc["likely_failure"] is None  # the tiny run has no calibration
    plain = client.post("/v1/segment?format=json", files={"file": inputs["odd.jpg"].open("rb")}, headers=AUTH)
    assert "qc" not in plain.json()


def test_json_answer_has_areas_boxes_rle_polygons_and_no_pixel_arrays(client, inputs, predicted):
    path = inputs["wide.png"]
    r = client.post("/v1/segment?format=json", files={"file": path.open("rb")},
                    headers={**AUTH, "X-Request-ID": "abc-1"})
    assert r.status_code == 200 and r.headers["x-request-id"] == "abc-1"
    body = r.json()
    model = client.get("/v1/model", headers=AUTH).json()
    assert body["model"] == model["id"] and body["threshold"] == model["threshold"] and body["request_id"] == "abc-1"
    assert body["input"] == {"kind": "png", "width": 150, "height": 60, "frames": 1, "frame": 1}
    assert set(body["timing_ms"]) >= {"queue_ms", "inference_ms", "total_ms"}
    mask = np.array(Image.open(predicted / "plain" / "wide.png")) > 0
    (fg,) = body["classes"]
    assert fg["area_pixels"] == int(mask.sum()) and fg["area_fraction"] == pytest.approx(mask.mean())
    decoded = coco_mask.decode({"size": fg["rle"]["size"], "counts": fg["rle"]["counts"].encode()})
    assert np.array_equal(decoded.astype(bool), mask)  # pycocotools reads our RLE back to the same mask
    if mask.any():
        ys, xs = np.nonzero(mask)
        assert fg["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
        assert fg["polygons"] and all(len(p) % 2 == 0 and len(p) >= 6 for p in fg["polygons"])
        assert coco_mask.area(coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))) == fg["area_pixels"]
    else:
        assert fg["bbox"] is None and fg["polygons"] == []

    def depth(v) -> int:
        return 1 + max((depth(x) for x in v), default=0) if isinstance(v, list) else \
            max((depth(x) for x in v.values()), default=0) if isinstance(v, dict) else 0

    assert depth(body) <= 3  # classes -> polygons -> flat coordinates; no 2-D pixel arrays
    # the Accept header chooses the format as well
    r = client.post("/v1/segment", files={"file": path.open("rb")}, headers={**AUTH, "Accept": "application/json"})
    assert r.headers["content-type"] == "application/json" and r.json()["classes"][0]["rle"] == fg["rle"]


def test_viewer_format_carries_mask_probabilities_and_image(client, inputs, predicted, predictor):
    path = inputs["odd.jpg"]
    body = client.post("/v1/segment?format=viewer", files={"file": path.open("rb")}, headers=AUTH).json()
    assert base64.b64decode(body["mask_png"]) == (predicted / "plain" / "odd.png").read_bytes()
    proba = np.array(Image.open(io.BytesIO(base64.b64decode(body["probability_png"]))))
    expected = np.clip(np.rint(predictor.predict_proba(path) * 255), 0, 255).astype(np.uint8)
    assert proba.shape == (77, 131) and np.abs(proba.astype(int) - expected).max() <= 1
    assert Image.open(io.BytesIO(base64.b64decode(body["image_jpeg"]))).size == (131, 77)


def test_dicom_upload_png_and_seg_equal_medseg_predict(client, tiny_run, tmp_path):
    rng = np.random.default_rng(4)
    pixels = rng.integers(0, 400, (40, 56)).astype(np.int16)
    pixels[10:30, 15:40] += 600
    src = ct_slice(tmp_path / "in" / "ct.dcm", pixels, window=(40, 400))
    medseg_cli("predict", tiny_run, src.parent, "--out", tmp_path / "png")
    medseg_cli("predict", tiny_run, src.parent, "--out", tmp_path / "seg", "--format", "dicom-seg")
    r = client.post("/v1/segment", files={"file": ("scan", src.read_bytes())}, headers=AUTH)
    assert r.status_code == 200 and r.content == (tmp_path / "png" / "ct.png").read_bytes()
    r = client.post("/v1/segment?format=dicom-seg", content=src.read_bytes(), headers=AUTH)
    assert r.status_code == 200 and r.headers["content-type"] == "application/dicom"
    seg = pydicom.dcmread(io.BytesIO(r.content))
    (cli_seg,) = (tmp_path / "seg").glob("*.seg.dcm")
    expected = pydicom.dcmread(cli_seg)
    assert seg.SOPClassUID == expected.SOPClassUID == "1.2.840.10008.5.1.4.1.1.66.4"
    assert seg.StudyInstanceUID == pydicom.dcmread(src).StudyInstanceUID
    assert np.array_equal(seg.pixel_array, expected.pixel_array)
    ref = seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence[0].ReferencedSOPInstanceUID
    assert ref == pydicom.dcmread(src).SOPInstanceUID
    body = client.post("/v1/segment?format=json", content=src.read_bytes(), headers=AUTH).json()
    assert body["classes"][0]["area_mm2"] == pytest.approx(body["classes"][0]["area_pixels"] * 0.25)
    jpeg = io.BytesIO()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(jpeg, format="JPEG")
    r = client.post("/v1/segment?format=dicom-seg", content=jpeg.getvalue(), headers=AUTH)
    assert r.status_code == 406


def test_limits_sniffing_and_no_patient_data_in_errors_or_logs(client, inputs, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    png = inputs["wide.png"].read_bytes()
    # the content decides, not the name or the content type
    r = client.post("/v1/segment", files={"file": ("photo.jpg", png, "text/plain")}, headers=AUTH)
    assert r.status_code == 200
    r = client.post("/v1/segment", files={"file": ("x.png", b"<html>not an image</html>", "image/png")},
                    headers=AUTH)
    assert r.status_code == 415 and "request_id" in r.json()
    assert client.post("/v1/segment", content=b"", headers=AUTH).status_code == 415
    # 413: too many bytes (max 2 MiB here) and too many pixels declared (max 1 MP), before decoding
    assert client.post("/v1/segment", content=b"\x89PNG\r\n\x1a\n" + bytes(3 << 20), headers=AUTH).status_code == 413
    r = client.post("/v1/segment", content=png_header_only(2000, 1000), headers=AUTH)
    assert r.status_code == 413 and "2000x1000" in r.json()["error"]
    assert client.post("/v1/segment", content=png_header_only(64, 64), headers=AUTH).status_code == 422
    # a broken DICOM with a patient's name: the error and the log never quote it
    src = ct_slice(tmp_path / "ct.dcm", np.zeros((16, 16), np.int16))
    data = src.read_bytes()
    r = client.post("/v1/segment", content=data[: len(data) - 100], headers=AUTH)
    assert r.status_code == 422
    assert client.post("/v1/segment?format=bogus", content=png, headers=AUTH).status_code == 400
    assert client.post("/v1/segment?frame=3", content=data, headers=AUTH).status_code == 422
    text = r.text + caplog.text
    for secret in (PATIENT_NAME, PATIENT_ID, "DOE", "19700101", "ACC-SECRET"):
        assert secret not in text
    logged = [rec for rec in caplog.records if rec.name == "medseg.serve" and "/v1/segment" in rec.getMessage()]
    assert logged and all(len(rec.request_id) == 32 for rec in logged)  # every request line carries its id


def test_batch_answers_each_file_and_reports_errors_per_file(client, inputs, predicted):
    files = [("file", ("a", inputs["odd.jpg"].read_bytes())), ("file", ("b", b"random bytes")),
             ("file", ("c", inputs["scan.tif"].read_bytes()))]
    r = client.post("/v1/segment/batch?masks=true", files=files, headers=AUTH)
    assert r.status_code == 200
    results = r.json()["results"]
    assert [e["status"] for e in results] == [200, 415, 200] and [e["index"] for e in results] == [0, 1, 2]
    assert base64.b64decode(results[0]["mask_png"]) == (predicted / "plain" / "odd.png").read_bytes()
    assert base64.b64decode(results[2]["mask_png"]) == (predicted / "plain" / "scan.png").read_bytes()
    assert "error" in results[1] and "classes" not in results[1]


def test_model_endpoint_and_metrics(client, tiny_run, inputs):
    assert client.get("/v1/model").status_code == 401
    assert client.post("/v1/segment", content=inputs["old.bmp"].read_bytes(), headers=AUTH).status_code == 200
    model = client.get("/v1/model", headers=AUTH).json()
    assert model["kind"] == "pytorch" and model["input_size"] == 64 and model["file"] == "best.pt"
    assert [c["name"] for c in model["classes"]] == ["background", "foreground"]
    assert model["metrics"]["epoch"] >= 1 and 0 <= model["metrics"]["val_dice"] <= 1
    assert model["id"].startswith(f"{tiny_run.name}@") and len(model["sha256"]) == 64
    text = client.get("/metrics", headers=AUTH).text
    for series in ('medseg_http_requests_total{method="POST",route="/v1/segment",status="200"}',
                   'medseg_http_requests_total{method="GET",route="/v1/model",status="401"}',
                   "medseg_http_request_duration_seconds_bucket", "medseg_queue_depth", "medseg_requests_in_flight",
                   "medseg_batch_size_bucket", "medseg_model_ready 1.0"):
        assert series in text, series


class GatedPredictor:
    """The real predictor, except that model calls wait for ``gate`` (to fill the queue on purpose)."""

    def __init__(self, predictor) -> None:
        self._p = predictor
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()

    def __getattr__(self, name):
        return getattr(self._p, name)

    def predict_batch(self, images, **kw):
        self.entered.set()
        assert self.gate.wait(60)
        return self._p.predict_batch(images, **kw)


def test_full_queue_answers_503_at_once_and_health_stays_fast(predictor, tiny_run, inputs):
    gated = GatedPredictor(predictor)
    settings = ServeSettings(token=TOKEN, model_path=str(tiny_run), workers=1, max_queue=1)
    data = inputs["old.bmp"].read_bytes()
    with TestClient(create_app(gated, settings)) as c:
        wait_ready(c.get)
        gated.gate.clear()
        gated.entered.clear()
        answers = []
        threads = [threading.Thread(target=lambda: answers.append(c.post("/v1/segment", content=data, headers=AUTH)))
                   for _ in range(2)]
        threads[0].start()
        assert gated.entered.wait(30)  # the worker holds the first upload
        threads[1].start()
        deadline = time.monotonic() + 30
        while c.app.state.pool.queue.qsize() < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        r = c.post("/v1/segment", content=data, headers=AUTH)
        assert r.status_code == 503 and r.headers["retry-after"] == "1"
        assert c.get("/livez").status_code == 200 and c.get("/readyz").status_code == 200
        assert "medseg_queue_rejected_total 1.0" in c.get("/metrics", headers=AUTH).text
        gated.gate.set()
        for t in threads:
            t.join(60)
        assert [a.status_code for a in answers] == [200, 200]


def test_serve_help_has_examples_and_every_option():
    out = medseg_cli("serve", "--help")
    for option in ("--host", "--port", "--token-file", "--workers", "--max-queue", "--max-upload-mb",
                   "--max-megapixels", "--micro-batch", "Examples", "medseg serve runs/isic"):
        assert option in out, option


def test_serve_refuses_a_public_address_without_a_token(tiny_run, monkeypatch):
    monkeypatch.delenv("MEDSEG_TOKEN", raising=False)
    result = runner.invoke(cli, ["serve", str(tiny_run), "--host", "0.0.0.0"])
    assert result.exit_code != 0 and "without a bearer token" in str(result.exception)


def test_token_file_and_environment(tmp_path, monkeypatch):
    from medseg.errors import MedsegError
    from medseg.serve.security import load_token, token_matches

    monkeypatch.setenv("MEDSEG_TOKEN", "from-env")
    assert load_token(None) == "from-env"
    f = tmp_path / "token"
    f.write_text("from-file\n")
    assert load_token(f) == "from-file"
    f.write_text("\n")
    with pytest.raises(MedsegError, match="empty"):
        load_token(f)
    assert token_matches("Bearer from-env", "from-env") and token_matches("bearer from-env", "from-env")
    assert not token_matches("Bearer from-en", "from-env") and not token_matches("Basic from-env", "from-env")
    assert json.dumps(load_token(None))  # a plain string


@pytest.fixture(scope="module")
def multiclass_checkpoint(tmp_path_factory):
    """A 3-class checkpoint (random weights, seeded): enough to check the multi-class answers."""
    import torch

    from medseg.config import build_config
    from medseg.engine.checkpoint import save_checkpoint
    from medseg.models import create_model

    cfg = build_config(preset="default", overrides=["data.image_size=64", "model.encoder=resnet18",
                                                     "model.encoder_weights=none", "model.classes=3",
                                                     "data.class_names=[background,liver,tumour]",
                                                     "train.precision=fp32"])
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("multiclass") / "three.pt"
    save_checkpoint(path, create_model(cfg.model, load_weights=False), cfg.model_dump(mode="json"))
    return path


def test_multiclass_answers_indexed_masks_and_per_class_json(multiclass_checkpoint, inputs, tmp_path):
    path = inputs["odd.jpg"]
    medseg_cli("predict", multiclass_checkpoint, path, "--out", tmp_path / "cli")
    expected = (tmp_path / "cli" / "odd.png").read_bytes()
    settings = ServeSettings(token=TOKEN, model_path=str(multiclass_checkpoint))
    with TestClient(create_app(lambda: Predictor.load(multiclass_checkpoint), settings)) as c:
        wait_ready(c.get)
        r = c.post("/v1/segment", content=path.read_bytes(), headers=AUTH)
        assert r.status_code == 200 and r.content == expected
        labels = np.array(Image.open(io.BytesIO(r.content)))
        assert Image.open(io.BytesIO(r.content)).mode == "P" and labels.max() <= 2
        body = c.post("/v1/segment?format=json", content=path.read_bytes(), headers=AUTH).json()
        assert [(k["index"], k["name"], k["value"]) for k in body["classes"]] == [(1, "liver", 1), (2, "tumour", 2)]
        for entry in body["classes"]:
            assert entry["area_pixels"] == int((labels == entry["value"]).sum())
        proba = c.post("/v1/segment?format=probability", content=path.read_bytes(), headers=AUTH)
        rgb = np.array(Image.open(io.BytesIO(proba.content)))
        assert rgb.shape == (77, 131, 3) and np.array_equal(rgb[..., 0], labels)  # R = argmax class
        model = c.get("/v1/model", headers=AUTH).json()
        assert model["multi_class"] and [k["name"] for k in model["classes"]] == ["background", "liver", "tumour"]


def test_micro_batching_runs_waiting_uploads_in_one_model_call(predictor, tiny_run, inputs):
    gated = GatedPredictor(predictor)
    settings = ServeSettings(token=TOKEN, model_path=str(tiny_run), workers=1, max_queue=8, max_batch=4)
    names = ["old.bmp", "odd.jpg", "wide.png", "scan.tif"]
    with TestClient(create_app(gated, settings)) as c:
        wait_ready(c.get)
        gated.gate.clear()
        gated.entered.clear()
        answers: dict[str, object] = {}

        def send(name: str) -> None:
            answers[name] = c.post("/v1/segment", content=inputs[name].read_bytes(), headers=AUTH)

        first = threading.Thread(target=send, args=(names[0],))
        first.start()
        assert gated.entered.wait(30)  # the worker holds the first upload alone
        rest = [threading.Thread(target=send, args=(n,)) for n in names[1:]]
        for t in rest:
            t.start()
        deadline = time.monotonic() + 30
        while c.app.state.pool.queue.qsize() < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        gated.gate.set()
        for t in [first, *rest]:
            t.join(60)
        text = c.get("/metrics", headers=AUTH).text
    assert "medseg_batch_size_count 2.0" in text and "medseg_batch_size_sum 4.0" in text  # 1 alone, then 3 at once
    for name in names:
        r = answers[name]
        assert r.status_code == 200
        batched = np.array(Image.open(io.BytesIO(r.content)))
        alone = predictor.predict(inputs[name])
        assert batched.shape == alone.shape and (batched == alone).mean() > 0.99  # batched kernels: last bits only


@pytest.mark.realdata
def test_real_dicom_files_answer_like_medseg_predict(client, tiny_run, shared_data, tmp_path):
    """Real files of ../shared/data/dicom: masks equal `medseg predict`'s; a file whose SEG cannot be made
    (bad_sequence.dcm: no Frame of Reference, as the CLI also finds) is a 422, not a 500."""
    for name in ("CT_small.dcm", "MR_small_RLE.dcm", "US1_J2KR.dcm"):
        src = shared_data / "dicom" / "single" / name
        (tmp_path / "in" / src.stem).mkdir(parents=True)
        (tmp_path / "in" / src.stem / name).write_bytes(src.read_bytes())
        medseg_cli("predict", tiny_run, tmp_path / "in" / src.stem, "--out", tmp_path / "png" / src.stem)
        (expected,) = (tmp_path / "png" / src.stem).rglob("*.png")
        r = client.post("/v1/segment", content=src.read_bytes(), headers=AUTH)
        assert r.status_code == 200 and r.content == expected.read_bytes(), name
    bad = (shared_data / "dicom" / "single" / "bad_sequence.dcm").read_bytes()
    assert client.post("/v1/segment", content=bad, headers=AUTH).status_code == 200
    r = client.post("/v1/segment?format=dicom-seg", content=bad, headers=AUTH)
    assert r.status_code == 422 and "SEG" in r.json()["error"]
