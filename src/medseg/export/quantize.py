"""int8 static quantisation with ONNX Runtime, calibrated on training images, guarded by validation Dice.

Weights are quantised per output channel (int8, symmetric) and activations per tensor (uint8), with
ranges measured on letterboxed training images (QDQ format, which ONNX Runtime fuses into integer
convolutions; VNNI / AMX-INT8 CPUs run them fastest). Normalisation at the input and the final
sigmoid/softmax stay in float. The quantised graph is kept only when its validation Dice is within
``max_drop`` (0.005) of the float graph's; otherwise the export is refused with both numbers.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from medseg.data.geometry import letterbox
from medseg.data.pairs import Pair
from medseg.data.source import DataSource
from medseg.errors import ExportError
from medseg.inference.backends import INPUT_NAME
from medseg.inference.predictor import Predictor

log = logging.getLogger(__name__)

#: Operators quantised to int8; everything else (normalisation, resizes, sigmoid) stays float.
QUANTIZED_OPS = ["Conv", "ConvTranspose", "MatMul", "Gemm", "Relu", "MaxPool", "Add", "Concat"]


def split_pairs(run: str | Path, data: DataSource | str | Path | None) -> dict[str, list[Pair]]:
    """The run's train and val pairs in ``data`` (the data's own split, else the run's splits.csv)."""
    from medseg.data.prepare import discover_and_check, pairs_for_split

    run = Path(run)
    run_dir = run if run.is_dir() else run.parent
    report = discover_and_check(data, progress=False)
    return {split: pairs_for_split(report, split, run_dir) for split in ("train", "val")}


class _Batches:
    """ONNX Runtime CalibrationDataReader over uint8 (N, S, S, 3) batches, read one range at a time.

    ``set_range`` lets ONNX Runtime collect ranges batch by batch (``CalibStridedMinMax``), so memory
    holds the activations of one batch, not of every calibration image.
    """

    def __init__(self, batches: list[np.ndarray]) -> None:
        self.batches = batches
        self.set_range(0, len(batches))

    def __len__(self) -> int:
        return len(self.batches)

    def set_range(self, start_index: int, end_index: int) -> None:
        self._it = iter(self.batches[start_index:end_index])

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self._it, None)
        return None if batch is None else {INPUT_NAME: batch}


def quantize_int8(float_path: Path, out_path: Path, images: list[np.ndarray], size: int) -> None:
    """Write an int8 (QDQ) version of ``float_path`` calibrated on ``images`` (RGB uint8, any size)."""
    if not images:
        raise ExportError("int8 calibration needs training images; none were found in the data")
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.calibrate import CalibrationDataReader
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(_Batches, CalibrationDataReader):
        pass

    with tempfile.TemporaryDirectory(prefix="medseg-int8-") as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(float_path), str(prepared), skip_symbolic_shape=True)
        boxed = [letterbox(img, size)[0] for img in images]
        batches = [np.stack(boxed[i : i + 4]) for i in range(0, len(boxed), 4)]  # letterboxed, 4 per batch
        quantize_static(str(prepared), str(out_path), Reader(batches),
                        quant_format=QuantFormat.QDQ, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        per_channel=True, calibrate_method=CalibrationMethod.MinMax,
                        op_types_to_quantize=QUANTIZED_OPS, extra_options={"CalibStridedMinMax": 1})


def guard_int8(run: str | Path, data: DataSource | str | Path | None, float_pred: Predictor, int8_pred: Predictor,
               *, max_drop: float = 0.005) -> dict[str, Any]:
    """Validation Dice of the float and int8 graphs; ExportError when int8 loses more than ``max_drop``."""
    from medseg.evaluation import evaluate

    with tempfile.TemporaryDirectory(prefix="medseg-guard-") as tmp:
        scores = {name: evaluate(run, data, split="val", out=Path(tmp) / name, progress=False, predictor=pred)
                  for name, pred in (("float", float_pred), ("int8", int8_pred))}
    d_float, d_int8 = scores["float"]["dice"], scores["int8"]["dice"]
    result = {"dice_float": d_float, "dice_int8": d_int8, "dice_drop": d_float - d_int8, "max_drop": max_drop,
              "n_val_images": scores["int8"]["n_images"]}
    log.info("validation Dice: float ONNX %.4f, int8 %.4f (drop %.4f)", d_float, d_int8, d_float - d_int8)
    if d_float - d_int8 > max_drop:
        raise ExportError(f"int8 model refused: validation Dice {d_int8:.4f} against {d_float:.4f} for the float "
                          f"graph on {result['n_val_images']} images, a drop of {d_float - d_int8:.4f} > "
                          f"{max_drop}; export without --int8")
    return result
