"""ONNX export: parity with PyTorch, metadata, run / checkpoint / .onnx equivalence, and the int8 guard."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import helper

import medseg
from medseg.errors import ExportError
from medseg.export import export_onnx
from medseg.export.quantize import guard_int8, quantize_int8
from medseg.inference.backends import OnnxBackend
from medseg.inference.predictor import Predictor

pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def tiny_onnx(tiny_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("onnx") / "tiny.onnx"
    return out, export_onnx(tiny_run, out)


def odd_images() -> list[np.ndarray]:
    rng = np.random.default_rng(3)
    return [rng.integers(0, 255, shape, dtype=np.uint8) for shape in [(71, 103, 3), (96, 96, 3), (130, 45, 3)]]


def test_export_parity_and_metadata(tiny_onnx):
    path, report = tiny_onnx
    assert path.is_file() and report.precision == "fp32" and report.tta_flips == []
    assert report.parity.mask_agreement >= 0.999 and report.parity.max_abs_diff < 1e-4
    meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert meta["classes"] == "1" and meta["input_size"] == "64" and meta["threshold"] == "0.5"
    assert meta["medseg.version"] == medseg.__version__
    assert json.loads(meta["normalization"])["mean"] == pytest.approx([0.485, 0.456, 0.406])
    assert json.loads(meta["medseg.config"])["model"]["encoder"] == "resnet18"
    assert json.loads(meta["verification"])["parity_vs_pytorch"]["mask_agreement"] >= 0.999


def test_graph_has_dynamic_batch_height_width(tiny_onnx):
    backend = OnnxBackend(tiny_onnx[0])
    inp = backend.session.get_inputs()[0]
    assert inp.type == "tensor(uint8)" and inp.shape[3] == 3
    assert all(isinstance(d, str) for d in inp.shape[:3])
    for shape in [(1, 64, 64, 3), (3, 96, 32, 3), (2, 128, 192, 3)]:
        out = backend(np.random.default_rng(0).integers(0, 255, shape, dtype=np.uint8))
        assert out.shape == (shape[0], 1, shape[1], shape[2]) and 0 <= out.min() <= out.max() <= 1


def test_run_checkpoint_and_onnx_give_the_same_masks(tiny_onnx, tiny_run):
    by_run = medseg.load(tiny_run, precision="fp32")
    by_ckpt = medseg.load(tiny_run / "best.pt", precision="fp32")
    by_onnx = medseg.load(tiny_onnx[0])
    assert by_onnx.config.model_dump() == by_run.config.model_dump()
    assert by_run.config.infer.train_side == 96  # recorded at training: the tiny images are 96 px
    for image in odd_images():
        p_run, p_ckpt, p_onnx = (p.predict_proba(image) for p in (by_run, by_ckpt, by_onnx))
        np.testing.assert_array_equal(p_run, p_ckpt)
        assert np.abs(p_run - p_onnx).max() < 1e-4
        m_run, m_onnx = by_run.predict(image), by_onnx.predict(image)
        assert m_run.shape == image.shape[:2] and np.mean(m_run == m_onnx) >= 0.999


def test_onnx_predictor_with_tta_uncertainty_and_folder(tiny_onnx, tmp_path):
    from PIL import Image

    pred = Predictor.load(tiny_onnx[0], overrides=["infer.tta=true"])
    src = tmp_path / "in"
    src.mkdir()
    for i, image in enumerate(odd_images()):
        Image.fromarray(image).save(src / f"img{i}.png")
    result = pred.predict_folder(src, tmp_path / "out", uncertainty=True, progress=False)
    assert len(result.written) == 3 and not result.failed
    for i, image in enumerate(odd_images()):
        unc = np.array(Image.open(tmp_path / "out" / f"img{i}_uncertainty.png"))
        assert unc.shape == image.shape[:2] and unc.dtype == np.uint8
        assert np.array(Image.open(tmp_path / "out" / f"img{i}.png")).shape == image.shape[:2]


def _inverted(float_path, out_path, images, size) -> None:
    """A 'quantised' model that broke: it answers 1 - p."""
    model = onnx.load(str(float_path))
    out = model.graph.output[0]
    model.graph.node[-1].output[0] = "p_raw"
    one = helper.make_tensor("one", onnx.TensorProto.FLOAT, [], [1.0])
    model.graph.initializer.append(one)
    model.graph.node.append(helper.make_node("Sub", ["one", "p_raw"], [out.name]))
    onnx.save(model, str(out_path))


def test_int8_guard_refuses_a_broken_model(tiny_onnx, tiny_run, tiny_dataset, tmp_path):
    float_pred = Predictor.load(tiny_onnx[0])
    _inverted(tiny_onnx[0], tmp_path / "broken.onnx", [], 64)
    broken = Predictor(OnnxBackend(tmp_path / "broken.onnx"), float_pred.config)
    with pytest.raises(ExportError, match=r"int8 model refused: validation Dice .* a drop of"):
        guard_int8(tiny_run, tiny_dataset, float_pred, broken)
    same = guard_int8(tiny_run, tiny_dataset, float_pred, Predictor.load(tiny_onnx[0]))
    assert same["dice_drop"] == 0 and same["n_val_images"] == 4


def test_int8_export_of_a_broken_model_is_refused_and_not_written(tiny_run, tiny_dataset, tmp_path, monkeypatch):
    monkeypatch.setattr("medseg.export.quantize.quantize_int8", _inverted)
    out = tmp_path / "int8.onnx"
    with pytest.raises(ExportError, match=r"int8 model refused: validation Dice \d\.\d{4} against \d\.\d{4}"):
        export_onnx(tiny_run, out, int8=True, data=tiny_dataset, calibration=8)
    assert not out.exists() and not list(tmp_path.iterdir())  # nothing is written when the guard refuses
    with pytest.raises(ExportError, match="--int8 needs the training data"):
        export_onnx(tiny_run, out, int8=True)


def test_real_int8_quantisation_runs(tiny_onnx, tmp_path):
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (64, 64, 3), dtype=np.uint8) for _ in range(6)]
    quantize_int8(tiny_onnx[0], tmp_path / "q.onnx", images, 64)
    ops = {n.op_type for n in onnx.load(str(tmp_path / "q.onnx")).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    import onnxruntime as ort

    session = ort.InferenceSession(str(tmp_path / "q.onnx"), providers=["CPUExecutionProvider"])
    out = session.run(None, {"image": np.stack(images[:2])})[0]
    assert out.shape == (2, 1, 64, 64) and 0 <= out.min() <= out.max() <= 1


def test_export_rejects_bad_arguments(tiny_run, tiny_onnx, tmp_path):
    with pytest.raises(ExportError, match="must end in .onnx"):
        export_onnx(tiny_run, tmp_path / "model.bin")
    with pytest.raises(ExportError, match="already an ONNX file"):
        export_onnx(tiny_onnx[0], tmp_path / "again.onnx")
