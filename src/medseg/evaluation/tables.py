"""Rows of text for the printed tables and the HTML report (one formatting for both)."""

from __future__ import annotations

import math
from typing import Any

#: Summary figures in display order, with a short note.
FIGURES = (
    ("dice", "Dice"), ("iou", "IoU (Jaccard)"), ("thresholded_jaccard", "ISIC thresholded Jaccard"),
    ("sensitivity", "sensitivity"), ("specificity", "specificity"), ("precision", "precision"),
    ("accuracy", "accuracy"), ("failure_rate", "failure rate (Jaccard < 0.65)"),
    ("hd95", "HD95 (px)"), ("assd", "ASSD (px)"), ("nsd", "surface Dice (px tolerance)"),
    ("hd95_mm", "HD95 (mm)"), ("assd_mm", "ASSD (mm)"), ("nsd_mm", "surface Dice (mm tolerance)"),
    ("auc_roc", "pixel AUC-ROC"), ("average_precision", "pixel average precision"),
    ("ece", "expected calibration error"),
)


def fmt(value: Any, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}" if abs(value) < 100 else f"{value:.1f}"
    return str(value)


def interval(ci: Any) -> str:
    if not ci or any(v is None or (isinstance(v, float) and not math.isfinite(v)) for v in ci):
        return "-"
    return f"[{fmt(ci[0])}, {fmt(ci[1])}]"


def metrics_rows(summary: dict[str, Any], labels: bool = True) -> list[tuple[str, str, str]]:
    """(figure, value, 95 % interval) for each figure present in ``summary``, then per-class Dice/IoU.

    ``labels`` names figures in words (the report); otherwise by their summary.json keys (the CLI).
    """
    ci = summary.get("ci95", {})
    rows = [(label if labels else key, fmt(summary[key]), interval(ci.get(key))) for key, label in FIGURES
            if key in summary and summary[key] is not None]
    rows.append(("images" if labels else "n_images", str(summary.get("n_images", "-")), ""))
    if summary.get("qc"):
        q = summary["qc"]
        rows.append(("failure flag AUROC (J < 0.65)" if labels else "qc_auroc", fmt(q.get("auroc")),
                     interval(q.get("auroc_ci95"))))
    for name, c in summary.get("per_class", {}).items():
        cci = c.get("ci95", {})
        rows.append((f"{name}: Dice", fmt(c["dice"]), interval(cci.get("dice"))))
        rows.append((f"{name}: IoU", fmt(c["iou"]), interval(cci.get("iou"))))
    return rows


def comparison_lines(result: dict[str, Any]) -> list[str]:
    """Plain lines saying, per metric, which model is better and whether the difference is significant."""
    lines = [f"A = {result['a']}", f"B = {result['b']}",
             f"{result['n_images']} images of split {result['split']} scored by both "
             f"({result['only_a']} only by A, {result['only_b']} only by B); {result['test']}"]
    for metric, r in result["metrics"].items():
        verdict = ("no difference" if r["better"] == "tie" else
                   f"{r['better']} is better" + (" (significant)" if r["significant"] else " (not significant)"))
        lines.append(f"{metric}: A {fmt(r['mean_a'])}, B {fmt(r['mean_b'])}, B - A {fmt(r['mean_diff'])} "
                     f"{interval((r['ci_low'], r['ci_high']))}, Wilcoxon p = {fmt(r['p_value'], 4)}: {verdict}")
    return lines
