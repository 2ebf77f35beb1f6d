"""Per-epoch history: ``metrics.csv`` and a training-curves PNG in the run folder."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from medseg.io.files import atomic_path, write_text_atomic

# train_img_per_s: all processes together; img_per_s_per_process: global rank 0's share
COLUMNS = ("epoch", "train_loss", "val_loss", "val_dice", "lr", "train_images", "train_seconds",
           "train_img_per_s", "img_per_s_per_process", "world_size", "effective_batch", "epoch_seconds",
           "elapsed_seconds")
INTS = ("epoch", "train_images", "world_size", "effective_batch")


def read_history(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    with path.open() as f:
        rows = list(csv.DictReader(f))
    # columns added later are empty in older files
    return [{k: int(v) if k in INTS else float(v) for k, v in row.items() if v not in ("", None)} for row in rows]


def write_history(path: Path, rows: list[dict[str, Any]]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    write_text_atomic(path, buf.getvalue())


def plot_curves(path: Path, rows: list[dict[str, Any]], title: str = "") -> None:
    """Loss (train/val) and validation Dice against epochs, with the learning rate; readable at any length.

    Short runs (up to 30 epochs) get point markers, so a 1-epoch run shows its points; epoch ticks are
    integers; numbers are plain (no offset, no scientific notation on the loss axis); the x range
    has half an epoch of margin, so a single epoch is not squeezed into 0.96..1.04.
    """
    if not rows:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = curves_figure(rows, title)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def curves_figure(rows: list[dict[str, Any]], title: str = ""):
    """The matplotlib Figure of :func:`plot_curves` (axes: loss, Dice, and the Dice axis's lr twin)."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, MaxNLocator, NullFormatter

    epochs = [r["epoch"] for r in rows]
    marker = "o" if len(rows) <= 30 else None
    xlim = (min(epochs) - 0.5, max(epochs) + 0.5)
    fig, (ax_loss, ax_dice) = plt.subplots(1, 2, figsize=(10, 3.8))
    ax_loss.plot(epochs, [r["train_loss"] for r in rows], marker=marker, label="train loss")
    ax_loss.plot(epochs, [r["val_loss"] for r in rows], marker=marker, label="val loss")
    ax_loss.set_ylabel("loss (log scale)")
    ax_loss.set_yscale("log")
    plain = FuncFormatter(lambda v, _: f"{v:.3g}")
    ax_loss.yaxis.set_major_formatter(plain)
    ax_loss.yaxis.set_minor_formatter(plain if _decades(rows) < 1 else NullFormatter())
    ax_loss.legend()
    dice = [r["val_dice"] for r in rows]
    ax_dice.plot(epochs, dice, color="tab:green", marker=marker, label="val Dice")
    best = max(range(len(dice)), key=dice.__getitem__)
    ax_dice.scatter([epochs[best]], [dice[best]], color="tab:red", zorder=3, label=f"best {dice[best]:.3f}")
    ax_dice.set_ylabel("validation Dice")
    ax_dice.set_ylim(0, 1)
    ax_lr = ax_dice.twinx()
    lrs = [r["lr"] for r in rows]
    ax_lr.plot(epochs, lrs, color="tab:gray", ls="--", lw=1.5, marker="s" if marker else None, markersize=4,
               label="learning rate")
    top = max(lrs) if max(lrs) > 0 else 1.0
    ax_lr.set_ylim(0, top * 1.15)
    ax_lr.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.2g}"))
    ax_lr.set_ylabel("learning rate", color="tab:gray")
    for ax in (ax_loss, ax_dice):
        ax.set_xlabel("epoch")
        ax.set_xlim(*xlim)
        if max(epochs) - min(epochs) < 10:  # few epochs: a tick at each (MaxNLocator would add halves)
            ax.set_xticks(range(min(epochs), max(epochs) + 1))
        else:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True, nbins=10))
        ax.grid(alpha=0.3)
    handles = [h for ax in (ax_dice, ax_lr) for h in ax.get_legend_handles_labels()[0]]
    ax_dice.legend(handles=handles, loc="lower right")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def _decades(rows: list[dict[str, Any]]) -> float:
    """How many powers of ten the losses span (minor ticks get labels when under one)."""
    import math

    values = [v for r in rows for v in (r["train_loss"], r["val_loss"]) if v > 0]
    return math.log10(max(values) / min(values)) if values else 0.0
