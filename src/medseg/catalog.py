"""What models exist and how to get their weights: the per-architecture table of ``medseg models``, encoder
names by pattern, and fetching an encoder's ImageNet weights for offline use.

Sits above ``medseg.models`` and ``medseg.config`` (it builds model configs and models); only the CLI and
bench/ use it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from medseg.config import ModelConfig
from medseg.errors import MedsegError
from medseg.models.factory import ARCHS, MODELS, OPTIONS, create_model
from medseg.models.summary import model_summary
from medseg.models.weights import fetch_imagenet_weights, read_state_dict


def describe(cfg: ModelConfig, size: int) -> dict[str, Any]:
    """Parameters and GFLOPs of the model ``cfg`` describes, built on the meta device (no compute)."""
    with torch.device("meta"):
        model = create_model(cfg, load_weights=False)
    return {"arch": cfg.arch, "encoder": cfg.encoder, **model_summary(model, size, cfg.in_channels)}


def architecture_rows(size: int, classes: int = 1, arch: str | None = None, encoder: str | None = None,
                      in_channels: int = 3) -> list[dict[str, Any]]:
    """One row per architecture (or just ``arch``): encoder used, options, parameters, GFLOPs at ``size``."""
    if arch is not None and arch not in ARCHS:
        MODELS.get(arch)  # raises, listing the valid names
    rows = []
    for name, info in ARCHS.items():
        if arch is not None and name != arch:
            continue
        enc = encoder or info.default_encoder or "resnet34"
        row: dict[str, Any] = {"arch": name, "help": info.help, "encoder": enc if info.default_encoder else "-",
                               "options": ", ".join(k for k in OPTIONS if k in info.options)}
        try:
            cfg = ModelConfig(arch=name, encoder=enc, encoder_weights=None, classes=classes, in_channels=in_channels)
            row.update({k: v for k, v in describe(cfg, size).items() if k in ("parameters_m", "gflops")})
        except MedsegError as err:
            row["error"] = str(err)
        rows.append(row)
    return rows


def encoder_names(pattern: str) -> list[str]:
    """SMP encoder names, and ``tu-`` timm names, matching a glob ``pattern`` (e.g. ``*convnext*``)."""
    from fnmatch import fnmatch

    from medseg.models.smp_arch import smp_module

    smp = smp_module()  # imports torchvision through medseg._compat first, then timm may be imported
    import timm
    names = [n for n in smp.encoders.get_encoder_names() if fnmatch(n, pattern)]
    return names + ["tu-" + n for n in timm.list_models(pattern.removeprefix("tu-"))]


def download_weights(encoder: str, to: str | Path | None = None) -> Path:
    """Fetch an encoder's ImageNet weights now, for offline training later; returns where they are.

    The file lands in the Hugging Face cache (``HF_HOME``), where ``encoder_weights=imagenet`` or
    ``auto`` find it without a network. With ``to`` it is also written there (``.safetensors`` copied,
    any other suffix saved as a torch state dict) to carry to another machine and use as
    ``encoder_weights=PATH``. Either way the weights are loaded into the encoder once as a check.
    """
    import shutil

    from medseg.io.files import write_with

    path = fetch_imagenet_weights(encoder)
    if to is not None:
        to = Path(to).expanduser()
        if to.suffix == ".safetensors":
            write_with(to, lambda tmp: shutil.copyfile(path, tmp))
        else:
            state = read_state_dict(path)
            write_with(to, lambda tmp: torch.save(state, tmp))
        path = to
    create_model(ModelConfig(arch="unet", encoder=encoder, encoder_weights=str(path)))
    return path
