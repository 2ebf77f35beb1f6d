"""Model size and cost: parameters and GFLOPs at an input size, for one model or a comparison table.

FLOPs are counted by ``torch.utils.flop_counter.FlopCounterMode`` on one image in eval mode: a
multiply-add counts as 2 FLOPs (papers that quote "FLOPs" from fvcore/thop count multiply-adds, i.e.
half these numbers); only convolutions and matrix products are counted, not activations,
normalisation or pooling. Tables build models on the ``meta`` device, so nothing is computed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import nn

if TYPE_CHECKING:
    from medseg.config import ModelConfig

#: PSPNet backbones compared in BENCHMARKS.md (label -> encoder name)
PSPNET_BACKBONES = {
    "ResNet18": "resnet18",
    "MobileNetV3-Large": "tu-mobilenetv3_large_100",
    "EfficientNet-B0": "efficientnet-b0",
    "ConvNeXt-Tiny": "tu-convnext_tiny",
}


def count_flops(model: nn.Module, size: int | tuple[int, int], in_channels: int = 3) -> float:
    """FLOPs of one forward pass of ``model`` on a (1, in_channels, H, W) input, in eval mode."""
    from torch.utils.flop_counter import FlopCounterMode

    h, w = (size, size) if isinstance(size, int) else size
    p = next(model.parameters())
    x = torch.zeros(1, in_channels, h, w, device=p.device, dtype=p.dtype)
    was_training = model.training
    model.eval()
    counter = FlopCounterMode(display=False)
    try:
        with counter, torch.no_grad():
            model(x)
    finally:
        model.train(was_training)
    return float(counter.get_total_flops())


def model_summary(model: nn.Module, size: int | None = None, in_channels: int = 3) -> dict[str, Any]:
    """Parameters (total, trainable, in millions) and, when ``size`` is given, GFLOPs at that size."""
    n = sum(p.numel() for p in model.parameters())
    out: dict[str, Any] = {
        "parameters": n,
        "parameters_m": round(n / 1e6, 2),
        "trainable": sum(p.numel() for p in model.parameters() if p.requires_grad),
    }
    if size is not None:
        out["gflops"] = round(count_flops(model, size, in_channels) / 1e9, 2)
    return out


def describe(cfg: ModelConfig, size: int) -> dict[str, Any]:
    """Parameters and GFLOPs of the model ``cfg`` describes, built on the meta device (no compute)."""
    from medseg.models.factory import create_model

    with torch.device("meta"):
        model = create_model(cfg, load_weights=False)
    return {"arch": cfg.arch, "encoder": cfg.encoder, **model_summary(model, size, cfg.in_channels)}


def pspnet_backbone_table(size: int = 512, classes: int = 1, output_strides: tuple[int, ...] = (8, 16, 32),
                          backbones: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """Parameters and GFLOPs (key ``gflops_os<N>`` per output stride) of ``dicom-pspnet`` (bins 1,3,5,7,
    dropout 0.2) for each backbone at ``size`` x ``size``."""
    from medseg.config import ModelConfig

    rows = []
    for label, encoder in (backbones or PSPNET_BACKBONES).items():
        row: dict[str, Any] = {"backbone": label, "encoder": encoder}
        for stride in output_strides:
            cfg = ModelConfig(arch="dicom-pspnet", encoder=encoder, encoder_weights=None, classes=classes,
                              output_stride=stride)
            d = describe(cfg, size)
            row.update(parameters_m=d["parameters_m"], **{f"gflops_os{stride}": d["gflops"]})
        rows.append(row)
    return rows


def markdown_table(rows: list[dict[str, Any]], columns: dict[str, str]) -> str:
    """A Markdown table of ``rows`` with ``columns`` (key -> heading)."""
    lines = ["| " + " | ".join(columns.values()) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(str(row.get(k, "")) for k in columns) + " |")
    return "\n".join(lines)


def architecture_rows(size: int, classes: int = 1, arch: str | None = None, encoder: str | None = None,
                      in_channels: int = 3) -> list[dict[str, Any]]:
    """One row per architecture (or just ``arch``): encoder used, options, parameters, GFLOPs at ``size``."""
    from medseg.config import ModelConfig
    from medseg.errors import MedsegError
    from medseg.models.factory import ARCHS, MODELS, OPTIONS

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
