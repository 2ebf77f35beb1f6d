"""``medseg report RUN``: one self-contained HTML file (figures embedded as PNG data URIs; opens offline).

Sections: metrics with 95 % intervals, per-class table (multi-class runs), Dice histogram and HD95 box
plot, the worst images with overlays, reliability diagram with ECE, the failure flag (score against
Jaccard, its AUROC), cross-validation folds (CV runs), training curves, the config and the data report.
It reads ``RUN/eval_SPLIT/`` (what ``medseg evaluate`` wrote), or evaluates first when ``data`` is given.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from medseg.data.source import DataSource
from medseg.errors import MedsegError
from medseg.evaluation.tables import fmt, interval, metrics_rows
from medseg.io.files import write_text_atomic
from medseg.io.tables import read_per_image_csv

CSS = """body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
td:first-child,th:first-child{text-align:left}img{max-width:100%}figure{display:inline-block;margin:4px;
vertical-align:top}figcaption{font-size:80%;text-align:center}pre{background:#f6f6f6;padding:8px;overflow:auto;
max-height:400px}.plots img{width:48%}.gallery img{width:256px}"""


def _png(fig) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return _data_uri(buf.getvalue())


def _data_uri(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def _img(uri: str, alt: str) -> str:
    return f'<img src="{uri}" alt="{html.escape(alt)}">'


def _table(header: list[str], rows: list[tuple]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _figures(rows: list[dict[str, Any]], summary: dict[str, Any]) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = []
    dice = np.array([r["dice"] for r in rows if math.isfinite(r.get("dice", math.nan))])
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.hist(dice, bins=np.linspace(0, 1, 21), color="#4477aa")
    ax.set(xlabel="Dice per image", ylabel="images", title=f"Dice histogram (n={len(dice)})")
    out.append(_img(_png(fig), "Dice histogram"))
    hd = [r["hd95"] for r in rows if math.isfinite(r.get("hd95", math.nan))]
    if hd:
        fig, ax = plt.subplots(figsize=(5, 3.2))
        ax.boxplot([hd], vert=False, tick_labels=["HD95 (px)"])
        ax.set(xlabel="pixels", title="HD95 per image")
        out.append(_img(_png(fig), "HD95 box plot"))
    rel = summary.get("reliability")
    if rel:
        fig, ax = plt.subplots(figsize=(4, 4))
        conf, obs = np.array(rel["confidence"], float), np.array(rel["observed"], float)
        ax.plot([0, 1], [0, 1], "--", color="grey")
        ax.plot(conf, obs, "o-", color="#cc3311")
        ax.set(xlabel="mean predicted foreground probability", ylabel="observed foreground rate",
               title=f"reliability (ECE {summary.get('ece', math.nan):.4f})", xlim=(0, 1), ylim=(0, 1))
        out.append(_img(_png(fig), "reliability diagram"))
    if summary.get("qc") and rows and "qc_score" in rows[0]:
        q = summary["qc"]
        fig, ax = plt.subplots(figsize=(4.5, 3.5))
        ax.scatter([r["qc_score"] for r in rows], [r["iou"] for r in rows], s=8, alpha=.6)
        ax.axvline(q["threshold"], color="#cc3311", label="flag threshold")
        ax.axhline(0.65, color="grey", ls="--", label="Jaccard 0.65")
        ax.set(xlabel="QC score (TTA disagreement)", ylabel="Jaccard", title=f"failure flag, AUROC {fmt(q['auroc'])}")
        ax.legend(fontsize=7)
        out.append(_img(_png(fig), "failure flag scatter"))
    return out


def _gallery(eval_dir: Path, k: int) -> str:
    files = sorted((eval_dir / "overlays").glob("*.png"), key=lambda p: p.stem.rsplit("_dice", 1)[-1])[:k]
    if not files:
        return "<p>No overlays (evaluate with --overlays N, or run the report with --data).</p>"
    figs = [f"<figure>{_img(_data_uri(p.read_bytes()), p.stem)}<figcaption>{html.escape(p.stem)}</figcaption></figure>"
            for p in files]
    return ('<p>Prediction filled in red with a yellow outline; truth outlined in green.</p><div class="gallery">'
            + "".join(figs) + "</div>")


def _cv_section(run: Path) -> str:
    path = run / "cv_summary.json"
    if not path.is_file():
        return ""
    cv = json.loads(path.read_text(encoding="utf-8"))
    rows = [(f"fold {f['fold']}", f["n_images"], fmt(f.get("dice")), fmt(f.get("iou"))) for f in cv.get("folds", [])]
    pooled = cv.get("pooled", {})
    return ("<h2>Cross-validation</h2>" + _table(["fold", "val images", "Dice", "IoU"], rows)
            + f"<p>Pooled out-of-fold: Dice {fmt(pooled.get('dice'))} {interval(pooled.get('ci95', {}).get('dice'))}; "
              f"post-processing chosen on the pooled out-of-fold predictions: "
              f"{html.escape(str(cv.get('postprocess', '-')))}</p>")


def build_html(run: Path, eval_dir: Path, worst: int = 8) -> str:
    """The report's HTML text for a run and an evaluation folder (summary.json, per_image.csv)."""
    summary = json.loads((eval_dir / "summary.json").read_text(encoding="utf-8"))
    rows = read_per_image_csv(eval_dir / "per_image.csv")
    title = f"medseg report: {run.name}, split {summary.get('split', '?')}"
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
             f"<style>{CSS}</style></head><body><h1>{html.escape(title)}</h1>",
             f"<p>{summary.get('n_images')} images; checkpoint {html.escape(str(summary.get('checkpoint')))}; "
             f"TTA {'on' if summary.get('tta') else 'off'}; threshold {summary.get('threshold')}; intervals: "
             f"{html.escape(json.dumps(summary.get('bootstrap', {})))} over images.</p>",
             "<h2>Metrics</h2>", _table(["figure", "value", "95% CI"], metrics_rows(summary))]
    if summary.get("per_class"):
        pc = [(name, c["n_images"], fmt(c["dice"]), interval(c.get("ci95", {}).get("dice")), fmt(c["iou"]),
               interval(c.get("ci95", {}).get("iou"))) for name, c in summary["per_class"].items()]
        parts += ["<h2>Per class</h2>", _table(["class", "images", "Dice", "95% CI", "IoU", "95% CI"], pc)]
    parts += ["<h2>Distributions and calibration</h2>", '<div class="plots">', *_figures(rows, summary), "</div>"]
    if summary.get("qc"):
        q = summary["qc"]
        parts += ["<h2>Failure flag</h2>", f"<p>{html.escape(q['score'])}; threshold {fmt(q['threshold'])} chosen on "
                  f"this split (Youden's J) to catch {html.escape(q['target'])}: AUROC {fmt(q['auroc'])} "
                  f"{interval(q.get('auroc_ci95'))}, sensitivity {fmt(q.get('sensitivity'))}, specificity "
                  f"{fmt(q.get('specificity'))}; {q['n_flagged']} flagged, {q['n_failures']} failures.</p>"]
    parts += [f"<h2>Worst {worst} images by Dice</h2>", _gallery(eval_dir, worst), _cv_section(run)]
    curves = run / "curves.png"
    if curves.is_file():
        parts += ["<h2>Training curves</h2>", _img(_data_uri(curves.read_bytes()), "training curves")]
    for name, heading in (("config.yaml", "Config"), ("data_report.txt", "Data report")):
        if (run / name).is_file():
            parts += [f"<h2>{heading}</h2><pre>{html.escape((run / name).read_text(encoding='utf-8'))}</pre>"]
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(run: str | Path, data: DataSource | str | Path | None = None, *, split: str = "val",
                 out: str | Path | None = None, qc: bool = True, worst: int = 8, overrides: list[str] | None = None
                 ) -> Path:
    """Write the HTML report of ``run`` (default ``RUN/report.html``); evaluate first when ``data`` (a
    DataSource or a data folder) is given (into ``eval_SPLIT`` beside the HTML file, with ``overrides`` of
    the inference settings, TTA on when ``qc``). Returns the HTML path."""
    run = Path(run)
    out = Path(out) if out else run / "report.html"
    data = DataSource.of(data)
    eval_dir = out.parent / f"eval_{split}" if data else run / f"eval_{split}"
    if data:
        from medseg.evaluation.evaluate import evaluate
        from medseg.inference.predictor import Predictor

        extra = (["infer.tta=true"] if qc else []) + list(overrides or [])
        predictor = Predictor.load(run, overrides=extra or None)
        evaluate(run, data, split=split, out=eval_dir, overlays=worst, qc=qc, predictor=predictor)
    elif not (eval_dir / "summary.json").is_file():
        raise MedsegError(f"{eval_dir / 'summary.json'} does not exist: run `medseg evaluate` first or give DATA")
    write_text_atomic(out, build_html(run, eval_dir, worst))
    return out
