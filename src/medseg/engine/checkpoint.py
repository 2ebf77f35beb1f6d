"""Checkpoints: weights + resolved config + versions, written atomically; a checkpoint alone predicts."""

from __future__ import annotations

import io
import os
import platform
from pathlib import Path
from typing import Any

import torch

from medseg._version import __version__
from medseg.errors import CheckpointError
from medseg.io.files import atomic_path

BEST, LAST = "best.pt", "last.pt"


def versions() -> dict[str, str]:
    out = {"medseg": __version__, "torch": torch.__version__, "python": platform.python_version()}
    try:
        from medseg._compat import import_torchvision

        import_torchvision()  # before smp, which imports torchvision (see medseg._compat)
        import segmentation_models_pytorch as smp

        out["segmentation_models_pytorch"] = smp.__version__
    except Exception:  # noqa: BLE001
        pass
    return out


def save_checkpoint(path: Path, model: torch.nn.Module, config: dict[str, Any], **extra: Any) -> None:
    """Save ``model`` weights (fp32, contiguous) with its config; ``extra`` holds resume state.

    Crash-safe: serialised in memory, written to a temporary file, flushed to disk (fsync) and renamed
    over ``path``, so a kill or power cut at any moment leaves the previous or the new checkpoint, never
    a torn one. A full disk or a file-size limit raises :class:`~medseg.errors.WriteError`.
    """
    state = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in model.state_dict().items()}
    payload = {"format": "medseg-checkpoint-1", "model": state, "config": config, "versions": versions(), **extra}
    buf = io.BytesIO()  # torch.save into a file reports a full disk as an opaque RuntimeError
    torch.save(payload, buf)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(buf.getbuffer())
        f.flush()
        os.fsync(f.fileno())


def resolve_checkpoint(path: str | Path) -> Path:
    """A run folder (its best.pt, else last.pt) or a checkpoint file."""
    path = Path(path)
    if path.is_dir():
        for name in (BEST, LAST):
            if (path / name).is_file():
                return path / name
        raise CheckpointError(f"run folder {path} holds no {BEST} or {LAST}; train a model into it first")
    if path.is_file():
        return path
    if not path.exists():
        raise CheckpointError(f"{path} does not exist; give a run folder (from medseg train) or a checkpoint "
                              "file (.pt) or an exported .onnx file")
    raise CheckpointError(f"{path} is neither a run folder nor a checkpoint file")


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint (run folder or file) into a dict with at least 'model' and 'config'."""
    file = resolve_checkpoint(path)
    try:
        payload = torch.load(file, map_location="cpu", weights_only=False)
    except Exception as err:  # noqa: BLE001
        raise CheckpointError(f"checkpoint {file} cannot be read ({type(err).__name__}: {err})") from None
    if not isinstance(payload, dict) or "model" not in payload or "config" not in payload:
        raise CheckpointError(f"{file} is not a medseg checkpoint (no model weights and config inside)")
    payload["path"] = str(file)
    return payload
