"""What ``GET /v1/model`` says about the loaded model: identity, classes, input, export kind, metrics."""

from __future__ import annotations

import contextlib
import json
import logging
from pathlib import Path
from typing import Any

from medseg._version import __version__
from medseg.config import label_names
from medseg.inference.overlay import class_colours
from medseg.inference.sliding import input_geometry
from medseg.io.files import file_sha256

log = logging.getLogger(__name__)


def _training_metrics(model_path: Path, predictor) -> dict[str, Any]:
    """Validation figures recorded at training (checkpoint), by ``medseg evaluate`` (run folder) or at export."""
    out: dict[str, Any] = {}
    backend = predictor.backend
    if getattr(backend, "kind", "") == "onnx":
        with contextlib.suppress(ValueError):
            if raw := backend.metadata.get("verification"):
                out["export_verification"] = json.loads(raw)
        return out
    try:
        from medseg.engine.checkpoint import read_payload

        ckpt = read_payload(Path(predictor.source), mmap=True)
        out |= {key: ckpt[key] for key in ("epoch", "val_dice") if key in ckpt} | {"versions": ckpt.get("versions", {})}
    except Exception as err:  # noqa: BLE001 - metrics are informative only
        log.warning("training metrics could not be read from the checkpoint (%s)", type(err).__name__)
    run = model_path if model_path.is_dir() else Path(predictor.source).parent
    summary = run / "eval_val" / "summary.json"
    with contextlib.suppress(OSError, ValueError):
        if summary.is_file():
            out["eval_val"] = {k: v for k, v in json.loads(summary.read_text()).items() if isinstance(v, (int, float))}
    return out


def describe_model(predictor, model_path: str | Path) -> dict[str, Any]:
    """A JSON-ready description: name, id (name@sha256 prefix), classes with colours, input size, kind."""
    model_path = Path(model_path)
    source = Path(predictor.source)
    sha = file_sha256(source) if source.is_file() else ""
    name = model_path.name if model_path.is_dir() else model_path.stem
    from medseg.models.factory import model_label

    cfg, backend = predictor.config, predictor.backend
    kind = f"onnx-{getattr(backend, 'precision', 'fp32')}" if getattr(backend, "kind", "") == "onnx" else "pytorch"
    names, colours = label_names(cfg), class_colours(cfg)
    return {
        "name": name,
        "id": f"{name}@{sha[:12]}" if sha else name,
        "file": source.name,
        "sha256": sha,
        "kind": kind,
        "backend": predictor.describe(),
        "medseg_version": __version__,
        "architecture": model_label(cfg.model),
        "config": cfg.name,
        "classes": [{"index": i, "name": n, "colour": list(colours[i % len(colours)])} for i, n in enumerate(names)],
        "multi_class": cfg.model.classes > 1,
        **input_geometry(cfg),  # mode, input_size (the window side of patch runs), patch_size, scale
        "threshold": cfg.infer.threshold,
        "tta_default": bool(cfg.infer.tta),
        "postprocess": predictor.postprocess.describe(),
        "metrics": _training_metrics(model_path, predictor),
    }
