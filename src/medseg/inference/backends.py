"""Backends: one call, "probabilities for a batch of model-sized uint8 RGB images".

``backend(batch)`` takes uint8 images (N, H, W, 3), H and W multiples of 32, and returns float32
probabilities (N, C, H, W). Normalisation and the final sigmoid (one class) or softmax live inside
:class:`ProbabilityModel`, the same module that PyTorch runs and that export writes to ONNX, so both
backends compute the same function. Letterboxing, TTA, sliding windows and post-processing are
composed around this call by the :class:`~medseg.inference.predictor.Predictor`.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from medseg._version import __version__
from medseg.config import Config, validate
from medseg.engine.runtime import Runtime, usable_cores
from medseg.errors import CheckpointError

log = logging.getLogger(__name__)

#: Image axes flipped by each TTA flip, for (N, C, H, W) tensors and arrays.
FLIP_DIMS = {"h": (3,), "v": (2,), "hv": (2, 3)}
INPUT_NAME, OUTPUT_NAME = "image", "probability"
CONFIG_KEY = "medseg.config"


def activation_for(config: Config) -> str:
    """sigmoid for one foreground class, softmax over classes otherwise."""
    return "sigmoid" if config.model.classes == 1 else "softmax"


class ProbabilityModel(nn.Module):
    """uint8 RGB (N, H, W, 3) -> probabilities (N, C, H, W): normalise, network, [flip average], activation.

    ``flips`` (h / v / hv) bakes flip test-time augmentation into the graph: the flipped copies go
    through the network in one batch, are flipped back and averaged with the original.
    """

    def __init__(self, net: nn.Module, mean, std, activation: str = "sigmoid", flips=(),
                 channels_last: bool = False) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        if activation not in ("sigmoid", "softmax"):
            raise ValueError(f"activation must be sigmoid or softmax, not {activation!r}")
        self.activation = activation
        self.flips = tuple(flips)
        self.channels_last = channels_last

    def _probabilities(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.net(x).float()
        return torch.sigmoid(logits) if self.activation == "sigmoid" else torch.softmax(logits, dim=1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        # same arithmetic as medseg.data.transforms.normalize_batch (training)
        x = (images.permute(0, 3, 1, 2).float() / 255.0 - self.mean) / self.std
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        if not self.flips:
            return self._probabilities(x)
        views = [x] + [torch.flip(x, FLIP_DIMS[f]) for f in self.flips]
        probs = self._probabilities(torch.cat(views))
        k = len(views)
        probs = probs.reshape(k, -1, *probs.shape[1:])
        total = probs[0]
        for i, f in enumerate(self.flips, start=1):
            total = total + torch.flip(probs[i], FLIP_DIMS[f])
        return total / k


class TorchBackend:
    """A PyTorch network on the runtime's device, precision (autocast) and memory format."""

    kind = "torch"
    flips: tuple[str, ...] = ()

    def __init__(self, net: nn.Module, config: Config, runtime: Runtime, flips=()) -> None:
        self.runtime = runtime
        self.flips = tuple(flips)
        mean, std = config.data.mean_std
        self.module = ProbabilityModel(net, mean, std, activation_for(config), self.flips,
                                       channels_last=runtime.channels_last)
        self.module.to(runtime.device, memory_format=runtime.memory_format()).eval()

    @property
    def net(self) -> nn.Module:
        return self.module.net

    @torch.inference_mode()
    def __call__(self, batch: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(batch)).to(self.runtime.device)
        with self.runtime.autocast():
            probs = self.module(x)
        return probs.float().cpu().numpy()

    def describe(self) -> str:
        return f"PyTorch {self.runtime.describe()}"


class OnnxBackend:
    """An exported medseg ONNX graph in ONNX Runtime; its metadata carries the config."""

    kind = "onnx"

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        import onnxruntime as ort

        self.path = Path(path)
        if not self.path.is_file():
            raise CheckpointError(f"ONNX file {self.path} does not exist")
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = threads or usable_cores()
        options.log_severity_level = 3
        wanted = ["CUDAExecutionProvider", "CPUExecutionProvider"]
        providers = [p for p in wanted if p in ort.get_available_providers()]
        try:
            self.session = ort.InferenceSession(str(self.path), options, providers=providers)
        except Exception as err:  # noqa: BLE001 - onnxruntime raises its own exception types
            raise CheckpointError(f"ONNX file {self.path} cannot be loaded ({type(err).__name__}: "
                                  f"{str(err).splitlines()[0]})") from None
        self.metadata: dict[str, str] = dict(self.session.get_modelmeta().custom_metadata_map)
        if CONFIG_KEY not in self.metadata:
            raise CheckpointError(f"ONNX file {self.path} has no medseg metadata; export it with `medseg export`")
        self.flips = tuple(json.loads(self.metadata.get("tta_flips", "[]")))
        self.precision = self.metadata.get("precision", "fp32")

    @property
    def config(self) -> Config:
        return validate(json.loads(self.metadata[CONFIG_KEY]))

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run([OUTPUT_NAME], {INPUT_NAME: np.ascontiguousarray(batch, dtype=np.uint8)})[0]

    def describe(self) -> str:
        return f"ONNX Runtime {self.precision} ({self.session.get_providers()[0]})"


def metadata_for(config: Config, *, flips=(), precision: str = "fp32", extra: dict[str, Any] | None = None
                 ) -> dict[str, str]:
    """Key/value metadata that makes an exported file self-sufficient for prediction."""
    mean, std = config.data.mean_std
    meta = {
        CONFIG_KEY: json.dumps(config.model_dump(mode="json")),
        "medseg.version": __version__,
        "classes": str(config.model.classes),
        "activation": activation_for(config),
        "input_size": str(config.data.image_size),
        "input": f"{INPUT_NAME}: uint8 RGB (N, H, W, 3), H and W multiples of 32 (letterboxed to input_size)",
        "output": f"{OUTPUT_NAME}: float32 probabilities (N, classes, H, W)",
        "normalization": json.dumps({"mean": list(mean), "std": list(std), "scale": "x / 255"}),
        "threshold": str(config.infer.threshold),
        "tta_flips": json.dumps(list(flips)),
        "precision": precision,
    }
    meta.update({k: str(v) for k, v in (extra or {}).items()})
    return meta

