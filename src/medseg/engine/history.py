"""Per-epoch history: ``metrics.csv`` and a training-curves PNG in the run folder."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from medseg.io.files import atomic_path, write_text_atomic

COLUMNS = ("epoch", "train_loss", "val_loss", "val_dice", "lr", "train_images", "train_seconds",
           "train_img_per_s", "epoch_seconds", "elapsed_seconds")


def read_history(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    with path.open() as f:
        rows = list(csv.DictReader(f))
    ints = ("epoch", "train_images")
    return [{k: int(v) if k in ints else float(v) for k, v in row.items()} for row in rows]


def write_history(path: Path, rows: list[dict[str, Any]]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    write_text_atomic(path, buf.getvalue())


def plot_curves(path: Path, rows: list[dict[str, Any]], title: str = "") -> None:
    """Loss (train/val) and validation Dice against epochs, with the learning rate."""
    if not rows:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [r["epoch"] for r in rows]
    fig, (ax_loss, ax_dice) = plt.subplots(1, 2, figsize=(10, 3.8))
    ax_loss.plot(epochs, [r["train_loss"] for r in rows], label="train loss")
    ax_loss.plot(epochs, [r["val_loss"] for r in rows], label="val loss")
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("loss (log scale)")
    ax_loss.set_yscale("log")
    ax_loss.legend()
    ax_loss.grid(alpha=0.3)
    dice = [r["val_dice"] for r in rows]
    ax_dice.plot(epochs, dice, color="tab:green", label="val Dice")
    best = max(range(len(dice)), key=dice.__getitem__)
    ax_dice.scatter([epochs[best]], [dice[best]], color="tab:red", zorder=3, label=f"best {dice[best]:.3f}")
    ax_dice.set_xlabel("epoch")
    ax_dice.set_ylabel("validation Dice")
    ax_dice.set_ylim(0, 1)
    ax_dice.grid(alpha=0.3)
    ax_lr = ax_dice.twinx()
    ax_lr.plot(epochs, [r["lr"] for r in rows], color="tab:gray", ls="--", lw=1, label="lr")
    ax_lr.set_ylabel("learning rate", color="tab:gray")
    ax_dice.legend(loc="lower right")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
