"""Checkpoints: weights + resolved config + versions, written atomically; a checkpoint alone predicts.

A checkpoint holds only tensors, plain containers (dict, list, tuple), numbers, strings and None, and is
read with ``torch.load(..., weights_only=True)``: a ``.pt`` file someone sends cannot run code when it is
loaded (PyTorch's restricted unpickler; https://pytorch.org/docs/stable/notes/serialization.html).
A file that needs any other Python object is refused with :class:`~medseg.errors.CheckpointError`.
"""

from __future__ import annotations

import io
import os
import pickle
import platform
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medseg._version import __version__
from medseg.errors import CheckpointError
from medseg.io.files import atomic_path

BEST, LAST = "best.pt", "last.pt"

#: What checkpoints of earlier medseg versions hold besides plain values: torch.__version__ (a str subclass)
#: and numpy float64 scalars in the training history. Allowed by name when reading; nothing else is.
_LEGACY_SAFE = [torch.torch_version.TorchVersion, np.dtype, type(np.dtype(np.float64)),
                np._core.multiarray.scalar if hasattr(np, "_core") else np.core.multiarray.scalar]


def versions() -> dict[str, str]:
    out = {"medseg": __version__, "torch": str(torch.__version__), "python": platform.python_version()}
    try:
        from medseg._compat import import_torchvision

        import_torchvision()  # before smp, which imports torchvision (see medseg._compat)
        import segmentation_models_pytorch as smp

        out["segmentation_models_pytorch"] = smp.__version__
    except Exception:  # noqa: BLE001
        pass
    return out


def plain(value: Any) -> Any:
    """``value`` with numpy scalars and arrays and subclasses of str/int/float made plain Python.

    What a checkpoint may hold, so that it loads with ``weights_only=True``; raises
    :class:`~medseg.errors.CheckpointError` for anything else (a custom object would need unpickling).
    """
    if isinstance(value, torch.Tensor) or value is None or type(value) in (bool, int, float, str):
        return value
    if isinstance(value, dict):
        return {plain(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return (tuple if isinstance(value, tuple) else list)(plain(v) for v in value)
    if isinstance(value, (np.generic, np.ndarray)):
        return value.tolist()
    for kind in (bool, int, float, str):  # subclasses: TorchVersion (a str), IntEnum, ...
        if isinstance(value, kind):
            return kind(value)
    raise CheckpointError(f"a checkpoint cannot hold a {type(value).__name__}; store plain values")


def save_checkpoint(path: Path, model: torch.nn.Module, config: dict[str, Any], **extra: Any) -> None:
    """Save ``model`` weights (fp32, contiguous) with its config; ``extra`` holds resume state.

    Everything is stored as plain values (:func:`plain`), so that the file loads with
    ``weights_only=True``. Crash-safe (:func:`write_payload`).
    """
    state = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in model.state_dict().items()}
    write_payload(path, {"format": "medseg-checkpoint-1", "model": state, "config": config,
                         "versions": versions(), **extra})


def write_payload(path: Path, payload: dict[str, Any]) -> None:
    """Write a checkpoint dict (made :func:`plain`) to ``path``.

    Crash-safe: serialised in memory, written to a temporary file, flushed to disk (fsync) and renamed
    over ``path``, so a kill or power cut at any moment leaves the previous or the new checkpoint, never
    a torn one. A full disk or a file-size limit raises :class:`~medseg.errors.WriteError`.
    """
    buf = io.BytesIO()  # torch.save into a file reports a full disk as an opaque RuntimeError
    torch.save(plain(payload), buf)
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
        with open(path, "rb") as f:
            head = f.read(4)
        torch_file = head == b"PK\x03\x04" or head.startswith(b"\x80")  # torch's zip container, a legacy pickle
        if not torch_file and path.suffix.lower() not in (".pt", ".pth", ".ckpt"):  # a .pt that is not: corrupt
            run = (path.parent / BEST).is_file()
            hint = f"its run folder {path.parent}" if run else "a run folder (from medseg train)"
            raise CheckpointError(f"{path} is not a checkpoint; give {hint}, a checkpoint file (.pt) or an exported "
                                  ".onnx file")
        return path
    if not path.exists():
        raise CheckpointError(f"{path} does not exist; give a run folder (from medseg train) or a checkpoint "
                              "file (.pt) or an exported .onnx file")
    raise CheckpointError(f"{path} is neither a run folder nor a checkpoint file")


def read_payload(file: Path, *, mmap: bool = False) -> Any:
    """``torch.load(file, weights_only=True)``; a file that needs unpickling is refused, its code never run.

    Checkpoints written by medseg before plain payloads hold two harmless types besides plain values
    (PyTorch's version string, numpy scalars in the history); they are allowed by name, nothing else is.
    """
    try:
        with torch.serialization.safe_globals(_LEGACY_SAFE):
            return torch.load(file, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as err:  # noqa: BLE001
        found = re.search(r"GLOBAL (\S+)|but got <class '([^']+)'>|unrecognized function (\S+)", str(err))
        if isinstance(err, pickle.UnpicklingError) and found:
            name = next(g for g in found.groups() if g)
            raise CheckpointError(f"checkpoint {file} holds a pickled Python object ({name}) and is refused, since "
                                  "loading it could run code; a medseg checkpoint holds only tensors and plain values "
                                  "(convert a file you trust with medseg.engine.checkpoint.convert_trusted)") from None
        detail = re.search(r"WeightsUnpickler error: (.+?)(\n\n|$)", str(err).strip(), re.S)
        raise CheckpointError(f"checkpoint {file} cannot be read ({type(err).__name__}: "
                              f"{detail.group(1).strip() if detail else err})") from None


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint (run folder or file) into a dict with at least 'model' and 'config'.

    Raises :class:`~medseg.errors.CheckpointError` for a missing, unreadable or non-medseg file and for
    one that holds pickled Python objects (:func:`read_payload`).
    """
    file = resolve_checkpoint(path)
    payload = read_payload(file)
    if not isinstance(payload, dict) or "model" not in payload or "config" not in payload:
        raise CheckpointError(f"{file} is not a medseg checkpoint (no model weights and config inside)")
    payload["path"] = str(file)
    return payload


def convert_trusted(source: str | Path, target: str | Path) -> Path:
    """Rewrite a checkpoint that :func:`load_checkpoint` refuses into plain values, for a file you trust.

    This is the one place that unpickles (``weights_only=False``): it runs whatever code the file holds,
    so use it only on files you made yourself. Raises CheckpointError when the result is not a medseg
    checkpoint or holds values that cannot be made plain.
    """
    payload = torch.load(Path(source), map_location="cpu", weights_only=False)
    if not isinstance(payload, dict) or "model" not in payload or "config" not in payload:
        raise CheckpointError(f"{source} is not a medseg checkpoint (no model weights and config inside)")
    write_payload(Path(target), payload)
    return Path(target)
