"""PSPNet backbones compared by parameters and GFLOPs (dicom-pspnet: bins 1,3,5,7, dropout 0.2).

Counts come from torch.utils.flop_counter on models built on the meta device: no computation, so the
numbers do not depend on the machine. Prints a Markdown table; ``--append`` adds it to BENCHMARKS.md.

    .venv/bin/python bench/pspnet_backbones.py --size 512 [--append]
"""

from __future__ import annotations

import argparse
import datetime
import os
from pathlib import Path
from typing import Any

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from medseg.catalog import describe  # noqa: E402
from medseg.config import ModelConfig  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SECTION = "## PSPNet backbones (params and GFLOPs)"

#: PSPNet backbones compared in BENCHMARKS.md (label -> encoder name)
PSPNET_BACKBONES = {
    "ResNet18": "resnet18",
    "MobileNetV3-Large": "tu-mobilenetv3_large_100",
    "EfficientNet-B0": "efficientnet-b0",
    "ConvNeXt-Tiny": "tu-convnext_tiny",
}


def pspnet_backbone_table(size: int = 512, classes: int = 1, output_strides: tuple[int, ...] = (8, 16, 32),
                          backbones: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """Parameters and GFLOPs (key ``gflops_os<N>`` per output stride) of ``dicom-pspnet`` (bins 1,3,5,7,
    dropout 0.2) for each backbone at ``size`` x ``size``."""
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--classes", type=int, default=1)
    parser.add_argument("--append", action="store_true", help="append the section to BENCHMARKS.md")
    args = parser.parse_args()
    strides = (8, 16, 32)
    rows = pspnet_backbone_table(args.size, args.classes, strides)
    columns = {"backbone": "backbone", "encoder": "model.encoder", "parameters_m": "params (M)",
               **{f"gflops_os{s}": f"GFLOPs, output stride {s}" for s in strides}}
    text = "\n".join([
        SECTION, "",
        f"`{Path(__file__).relative_to(ROOT)} --size {args.size}` on {datetime.date.today().isoformat()}; "
        f"one {args.size}x{args.size} image, {args.classes} output class(es).",
        "GFLOPs from `torch.utils.flop_counter` (a multiply-add counts as 2 FLOPs; convolutions and matrix products "
        "only), on models built on the meta device, so they hold on any machine. The default output stride of "
        "`dicom-pspnet` is 8 (dilated backbone, as in the PSPNet paper; `--set model.output_stride=16|32` for less).",
        "", markdown_table(rows, columns), "",
    ])
    print(text)
    if args.append:
        path = ROOT / "BENCHMARKS.md"
        old = path.read_text() if path.exists() else "# Benchmarks\n"
        if SECTION in old:
            raise SystemExit(f"{path} already has the section {SECTION!r}; edit it by hand")
        path.write_text(old.rstrip("\n") + "\n\n" + text)


if __name__ == "__main__":
    main()
