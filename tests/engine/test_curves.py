"""curves.png is readable at any run length: checked on the figure's artists, not its pixels."""

from __future__ import annotations

import math

import matplotlib
import pytest

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from medseg.engine.history import curves_figure, plot_curves  # noqa: E402


def history(n: int) -> list[dict]:
    return [{"epoch": e, "train_loss": 1.07 * math.exp(-e / 10) + 0.1, "val_loss": 1.02 * math.exp(-e / 12) + 0.15,
             "val_dice": 0.9 * (1 - math.exp(-e / 8)), "lr": 1e-3 * 0.5 * (1 + math.cos(math.pi * e / (n + 1)))}
            for e in range(1, n + 1)]


def _tick_labels(fig) -> list[str]:
    fig.canvas.draw()
    return [t.get_text() for ax in fig.axes for axis in (ax.xaxis, ax.yaxis)
            for t in axis.get_ticklabels(which="both") if t.get_text()]


@pytest.mark.parametrize("n", [1, 50])
def test_curves_are_readable(n):
    fig = curves_figure(history(n), "default: unet/resnet34")
    try:
        ax_loss, ax_dice, ax_lr = fig.axes
        lines = {line.get_label(): line for ax in fig.axes for line in ax.get_lines()}
        assert {"train loss", "val loss", "val Dice", "learning rate"} <= set(lines)
        for line in lines.values():
            assert len(line.get_xdata()) == n
            if n == 1:  # a single point is only visible as a marker
                assert line.get_marker() not in (None, "None", "", " ")
        lr = lines["learning rate"]
        assert lr.get_visible() and lr.get_linewidth() >= 1
        low, high = ax_lr.get_ylim()
        assert low <= min(lr.get_ydata()) and max(lr.get_ydata()) < high  # the lr line is inside its axis
        for ax in (ax_loss, ax_dice):
            ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
            assert ticks and all(float(t).is_integer() for t in ticks)  # integer epochs only
            lo, hi = ax.get_xlim()
            assert hi - lo >= 1  # not 0.96..1.04 around a single epoch
        labels = _tick_labels(fig)
        assert labels
        for text in labels:  # plain numbers: no 1.07x10^0, no offset text, no mathtext
            assert "$" not in text and "times" not in text and "×" not in text and "e+" not in text, text
        assert all(not ax.yaxis.get_offset_text().get_text() for ax in fig.axes)
        assert any(ax.get_legend() is not None for ax in fig.axes)
    finally:
        plt.close(fig)


def test_plot_curves_writes_a_png(tmp_path):
    plot_curves(tmp_path / "curves.png", history(1), "t")
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
