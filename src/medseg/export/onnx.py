"""Export a run to one ONNX graph and prove it gives the same masks.

The graph is :class:`~medseg.inference.backends.ProbabilityModel`: uint8 RGB (N, H, W, 3) in,
normalisation, the network, optional flip TTA, sigmoid/softmax, probabilities (N, C, H, W) out;
batch, height and width are dynamic (multiples of 32). The resolved config and a readable summary
(classes, input size, normalisation, threshold, medseg version) are stored as metadata, so the
``.onnx`` file alone is enough for ``medseg predict`` and ``medseg.load``.

Every export is verified against PyTorch eager fp32 through the same Predictor: maximum absolute
probability difference and mask agreement (>= 99.9 % required, else nothing is written). ``int8``
adds static quantisation calibrated on training images, refused when validation Dice falls by more
than 0.005 against the float graph (see :mod:`medseg.export.quantize`).
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medseg.config import Config
from medseg.data.source import DataSource
from medseg.errors import ExportError
from medseg.inference.backends import (
    INPUT_NAME,
    OUTPUT_NAME,
    OnnxBackend,
    ProbabilityModel,
    activation_for,
    metadata_for,
)
from medseg.inference.predictor import Predictor
from medseg.io.files import atomic_path

log = logging.getLogger(__name__)

OPSET = 18
MIN_AGREEMENT = 0.999


@dataclass
class Parity:
    """How closely a candidate predictor reproduces the reference one on some images."""

    max_abs_diff: float
    mask_agreement: float
    n_images: int
    n_pixels: int


@dataclass
class ExportReport:
    path: Path
    precision: str
    tta_flips: list[str]
    parity: Parity
    int8: dict[str, Any] | None = None
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"path": str(self.path)}


def compare(reference: Predictor, candidate: Predictor, images: list[np.ndarray]) -> Parity:
    """Probability difference and mask agreement of ``candidate`` against ``reference`` on ``images``."""
    max_diff, agree, total = 0.0, 0, 0
    for a, b in zip(reference.stream(images, read=np.asarray), candidate.stream(images, read=np.asarray),
                    strict=True):
        max_diff = max(max_diff, float(np.abs(a.proba - b.proba).max()))
        ma, mb = reference.to_mask(a.proba), candidate.to_mask(b.proba)
        agree += int(np.count_nonzero(ma == mb))
        total += ma.size
    return Parity(max_diff, agree / max(total, 1), len(images), total)


def export_graph(module: torch.nn.Module, path: Path, size: int, opset: int = OPSET) -> str:
    """Write ``module`` (uint8 NHWC -> probabilities) to ``path``; returns which exporter worked."""
    module = module.eval()
    example = torch.zeros(2, size, size, 3, dtype=torch.uint8)
    import warnings

    try:
        from torch.export import Dim

        dims = {0: Dim("batch", min=1, max=4096), 1: 32 * Dim("h32", min=1, max=1024),
                2: 32 * Dim("w32", min=1, max=1024)}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            torch.onnx.export(module, (example,), str(path), dynamo=True, input_names=[INPUT_NAME],
                              output_names=[OUTPUT_NAME], dynamic_shapes={"images": dims}, opset_version=opset,
                              optimize=True, verbose=False, external_data=False)
        return "torch.export (dynamo)"
    except Exception as err:  # noqa: BLE001 - fall back to the TorchScript exporter, which traces
        log.warning("the torch.export-based ONNX exporter failed (%s: %s); using the TorchScript exporter",
                    type(err).__name__, str(err).splitlines()[0] if str(err) else "")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        axes = {0: "batch", 1: "height", 2: "width"}
        torch.onnx.export(module, (example,), str(path), dynamo=False, input_names=[INPUT_NAME],
                          output_names=[OUTPUT_NAME], opset_version=17,
                          dynamic_axes={INPUT_NAME: axes, OUTPUT_NAME: {0: "batch", 2: "height", 3: "width"}})
    return "TorchScript (legacy)"


def untie_shape_reads(path: Path) -> int:
    """Let ONNX Runtime fold BatchNorm into Conv where a Shape node also reads the Conv output.

    With dynamic height and width the exported graph measures some feature maps (for the decoder's
    upsampling) right after a Conv that feeds a BatchNormalization; that second reader blocks the
    Conv+BN fusion (and then int8 keeps those BNs in float). The BN output has the same shape, so
    the Shape nodes read it instead. Returns the number of rewired Shape nodes.
    """
    import onnx

    model = onnx.load(str(path))
    readers: dict[str, list] = {}
    for node in model.graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    producers = {out: node for node in model.graph.node for out in node.output}
    rewired = 0
    for bn in model.graph.node:
        src = producers.get(bn.input[0]) if bn.op_type == "BatchNormalization" else None
        if src is None or src.op_type != "Conv":
            continue
        for node in readers.get(bn.input[0], []):
            if node.op_type == "Shape":
                node.input[0] = bn.output[0]
                rewired += 1
    if rewired:
        onnx.save(model, str(path))
    return rewired


def write_metadata(path: Path, meta: dict[str, str]) -> None:
    import onnx

    model = onnx.load(str(path))
    del model.metadata_props[:]
    for key, value in meta.items():
        model.metadata_props.add(key=key, value=value)
    model.doc_string = "medseg segmentation model: " + meta.get("input", "") + " -> " + meta.get("output", "")
    onnx.save(model, str(path))


def sample_images(config: Config, data_images: list[np.ndarray] | None, n: int = 8) -> list[np.ndarray]:
    """Images for the parity check: the caller's, else synthetic dermoscopy-like pictures of odd sizes."""
    if data_images:
        return data_images
    from medseg.data.synthetic import make_synthetic_pair

    shapes = [(1.0, 1.0), (0.61, 1.0), (1.0, 0.67), (0.75, 0.55)]
    out = []
    for i in range(n):
        image, _ = make_synthetic_pair(np.random.default_rng([7, i]), max(64, config.data.image_size))
        fh, fw = shapes[i % len(shapes)]
        out.append(np.ascontiguousarray(image[: max(8, int(image.shape[0] * fh)), : max(8, int(image.shape[1] * fw))]))
    return out


def export_onnx(run: str | Path, out: str | Path, *, tta: bool = False, int8: bool = False,
                data: DataSource | str | Path | None = None, calibration: int = 64, n_check: int = 16,
                max_dice_drop: float = 0.005, min_agreement: float = MIN_AGREEMENT) -> ExportReport:
    """Export ``run`` to ``out`` (.onnx), verify it against PyTorch, optionally quantise it to int8."""
    t0 = time.monotonic()
    out = Path(out)
    if out.suffix.lower() != ".onnx":
        raise ExportError(f"output file {out} must end in .onnx")
    if Path(run).suffix.lower() == ".onnx":
        raise ExportError(f"{run} is already an ONNX file; export from a run folder or checkpoint")
    base = Predictor.load(run, precision="fp32", channels_last="off", device="cpu")
    flips = list(dict.fromkeys(base.config.infer.tta_flips)) if tta else []
    # the reference: PyTorch eager fp32 doing in Python what the graph does (flip TTA at scale 1, or none)
    ref_over = ["infer.tta=true", "infer.tta_scales=[1.0]", f"infer.tta_flips={json.dumps(flips)}"] if tta \
        else ["infer.tta=false"]
    reference = base.with_overrides(ref_over)
    export_cfg = base.config.model_copy(deep=True)
    export_cfg.infer.tta = False  # the graph is one pass; baked flips are listed in its metadata
    mean, std = export_cfg.data.mean_std
    module = ProbabilityModel(reference.backend.net, mean, std, activation_for(export_cfg), flips)

    split_images = _data_images(run, export_cfg, DataSource.of(data), int8, calibration, n_check)
    check = sample_images(export_cfg, split_images.get("check"))
    with tempfile.TemporaryDirectory(prefix="medseg-export-") as tmp:
        float_path = Path(tmp) / "float.onnx"
        exporter = export_graph(module, float_path, export_cfg.data.image_size)
        untie_shape_reads(float_path)
        write_metadata(float_path, metadata_for(export_cfg, flips=flips, precision="fp32"))
        float_pred = Predictor(OnnxBackend(float_path), export_cfg, source=str(out))
        parity = compare(reference, float_pred, check)
        log.debug("ONNX fp32 vs PyTorch fp32 on %d images: max |diff| %.2e, mask agreement %.5f",
                 parity.n_images, parity.max_abs_diff, parity.mask_agreement)
        if parity.mask_agreement < min_agreement:
            raise ExportError(f"the exported graph disagrees with PyTorch: mask agreement "
                              f"{parity.mask_agreement:.4%} < {min_agreement:.1%} (max probability difference "
                              f"{parity.max_abs_diff:.3g}); nothing was written to {out}")
        report = ExportReport(out, "fp32", flips, parity, notes=[f"exporter: {exporter}"])
        final, precision, verification = float_path, "fp32", {"parity_vs_pytorch": asdict(parity)}
        if int8:
            from medseg.export.quantize import guard_int8, quantize_int8

            int8_path = Path(tmp) / "int8.onnx"
            quantize_int8(float_path, int8_path, split_images["calibration"], export_cfg.data.image_size)
            write_metadata(int8_path, metadata_for(export_cfg, flips=flips, precision="int8"))
            int8_pred = Predictor(OnnxBackend(int8_path), export_cfg, source=str(out))
            report.int8 = guard_int8(run, data, float_pred, int8_pred, max_drop=max_dice_drop)
            report.int8["parity_vs_pytorch"] = asdict(compare(reference, int8_pred, check))
            report.int8["calibration_images"] = len(split_images["calibration"])
            final, precision, report.precision = int8_path, "int8", "int8"
            verification["int8"] = report.int8
        extra = {"verification": json.dumps(verification), "exported_from": Path(base.source).name}
        write_metadata(final, metadata_for(export_cfg, flips=flips, precision=precision, extra=extra))
        with atomic_path(out) as target:
            target.write_bytes(final.read_bytes())
    report.seconds = time.monotonic() - t0
    return report


def _data_images(run, config: Config, source: DataSource, int8: bool, calibration: int,
                 n_check: int) -> dict[str, list[np.ndarray]]:
    """Validation images for the parity check and training images for int8 calibration, when data is given."""
    if not source:
        if int8:
            raise ExportError("--int8 needs the training data (--data DIR): int8 is calibrated on training "
                              "images and checked on validation Dice")
        return {}
    from medseg.data.readers import read_pair_image, spread
    from medseg.export.quantize import split_pairs

    pairs = split_pairs(run, source)
    window = config.data.window
    out = {"check": [read_pair_image(p, window) for p in spread(pairs["val"], n_check)]}
    if int8:
        out["calibration"] = [read_pair_image(p, window) for p in spread(pairs["train"], calibration)]
    return out

