"""The ``medseg`` command. Thin: parses options, calls the API, prints results.

User errors (MedsegError) print as one sentence without a traceback; ``--debug`` shows it.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Annotated

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import typer  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from medseg.errors import MedsegError  # noqa: E402

app = typer.Typer(help="medseg: 2D medical image segmentation from raw files to a trained model.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
data_app = typer.Typer(help="Find, check and describe datasets.", no_args_is_help=True)
app.add_typer(data_app, name="data")
console = Console(stderr=False, highlight=False, soft_wrap=True)
_state = {"debug": False}

ImagesOpt = Annotated[Path | None, typer.Option("--images", help="folder of images (with --masks), "
                                                   "for any two folders such as ISIC's official ones")]
MasksOpt = Annotated[Path | None, typer.Option("--masks", help="folder of masks (with --images)")]
ManifestOpt = Annotated[Path | None, typer.Option("--manifest", help="CSV with columns image,mask[,split]; "
                                                     "paths relative to the CSV")]


@app.callback()
def _main(
    debug: Annotated[bool, typer.Option("--debug", help="show tracebacks and debug logs")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="only warnings and errors")] = False,
) -> None:
    _state["debug"] = debug
    level = logging.DEBUG if debug else logging.WARNING if quiet else logging.INFO
    logging.basicConfig(level=level, format="%(message)s", stream=sys.stderr, force=True)
    for noisy in ("PIL", "matplotlib", "urllib3", "httpx", "huggingface_hub", "timm"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))


def _metrics_table(summary: dict, title: str) -> Table:
    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key in ("dice", "iou", "thresholded_jaccard", "sensitivity", "specificity", "precision", "accuracy",
                "failure_rate", "n_images"):
        if key in summary:
            v = summary[key]
            table.add_row(key, f"{v:.4f}" if isinstance(v, float) else str(v))
    return table


# --------------------------------------------------------------------------------------------- data
@data_app.command("check")
def data_check(
    data: Annotated[Path | None, typer.Argument(help="dataset folder (images/ + masks/, ISIC, manifest.csv)")]
    = None,
    images: ImagesOpt = None,
    masks: MasksOpt = None,
    manifest: ManifestOpt = None,
) -> None:
    """Discover image/mask pairs, open every file and report each problem by file name.

    Exits with status 1 when any pair is unusable.
    """
    from medseg.data.check import check_pairs
    from medseg.data.layouts import find_pairs

    index = find_pairs(data, images=images, masks=masks, manifest=manifest)
    report = check_pairs(index, progress=True)
    for line in report.summary_lines():
        console.print(line, markup=False)
    if not report.ok:
        raise typer.Exit(1)


# -------------------------------------------------------------------------------------------- train
@app.command()
def train(
    data: Annotated[Path | None, typer.Argument(help="dataset folder (see `medseg data check`)")] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="run folder for checkpoints, config, metrics")]
    = Path("runs/train"),
    preset: Annotated[str | None, typer.Option(help="named configuration (`medseg presets` lists them)")]
    = None,
    config: Annotated[Path | None, typer.Option("--config", help="YAML config file (over the preset)")]
    = None,
    epochs: Annotated[int | None, typer.Option(help="maximum number of epochs")] = None,
    time_budget: Annotated[float | None, typer.Option("--time-budget", help="stop cleanly after this many "
                                                         "minutes, keeping the best model")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="override a config value, e.g. "
                                                      "--set optim.lr=3e-4 (repeatable)")] = None,
    resume: Annotated[bool, typer.Option(help="continue the run in --out from its last.pt")] = False,
    overwrite: Annotated[bool, typer.Option(help="replace a run already in --out")] = False,
    images: ImagesOpt = None,
    masks: MasksOpt = None,
    manifest: ManifestOpt = None,
) -> None:
    """Train a segmentation model; writes best.pt, last.pt, config.yaml, metrics.csv and curves.png."""
    from medseg.engine.train import train as run_train

    overrides = list(set_ or [])
    if epochs is not None:
        overrides.append(f"train.epochs={epochs}")
    if time_budget is not None:
        overrides.append(f"train.time_budget_min={time_budget}")
    if preset is None and config is None and not resume:
        preset = "default"
    run = run_train(data, out, preset=preset, config_file=config, overrides=overrides, resume=resume,
                    overwrite=overwrite, images=images, masks=masks, manifest=manifest)
    console.print(f"run folder: {run} (best.pt, metrics.csv, curves.png)")


# ----------------------------------------------------------------------------------------- evaluate
@app.command()
def evaluate(
    run: Annotated[Path, typer.Argument(help="run folder or checkpoint")],
    data: Annotated[Path | None, typer.Argument(help="dataset folder with masks")] = None,
    split: Annotated[str, typer.Option(help="val, test, train or all")] = "val",
    out: Annotated[Path | None, typer.Option(help="output folder (default RUN/eval_SPLIT)")] = None,
    overlays: Annotated[int, typer.Option(help="write overlays of the N worst images")] = 0,
    images: ImagesOpt = None,
    masks: MasksOpt = None,
    manifest: ManifestOpt = None,
) -> None:
    """Compute Dice, IoU, sensitivity, specificity, precision, accuracy and the ISIC thresholded Jaccard."""
    from medseg.evaluation import evaluate as run_eval

    if split not in ("train", "val", "test", "all"):
        raise MedsegError(f"--split must be train, val, test or all, not {split!r}")
    summary = run_eval(run, data, split=split, out=out, overlays=overlays, images=images, masks=masks,
                       manifest=manifest)
    console.print(_metrics_table(summary, f"{run} on {split} ({summary['n_images']} images)"))


# ------------------------------------------------------------------------------------------ predict
@app.command()
def predict(
    run: Annotated[Path, typer.Argument(help="run folder or checkpoint")],
    input: Annotated[Path, typer.Argument(help="an image file or a folder of images")],
    out: Annotated[Path, typer.Option("--out", "-o", help="folder for <stem>.png masks")] = Path("predictions"),
    overlay: Annotated[bool, typer.Option(help="also write <stem>_overlay.png")] = False,
    threshold: Annotated[float | None, typer.Option(help="probability threshold (default: the run's)")]
    = None,
) -> None:
    """Write a {0,255} mask PNG at each input's own size; unreadable files are reported and skipped."""
    from medseg.inference.predictor import Predictor

    predictor = Predictor.load(run)
    if threshold is not None:
        predictor.threshold = threshold
    result = predictor.predict_folder(input, out, overlay=overlay)
    console.print(f"wrote {len(result.written)} masks to {out}")
    for path, message in result.failed:
        console.print(f"skipped {path.name}: {message}", markup=False)
    if result.failed and not result.written:
        raise typer.Exit(1)


# --------------------------------------------------------------------------------- presets / models
@app.command()
def presets() -> None:
    """List the named configurations."""
    from medseg.config import describe_presets

    table = Table(title="presets (use with --preset NAME)")
    table.add_column("name")
    table.add_column("description")
    for name, desc in describe_presets().items():
        table.add_row(name, desc)
    console.print(table)


@app.command()
def models() -> None:
    """List the architectures (any segmentation-models-pytorch encoder or tu-<timm> name works)."""
    from medseg.models import MODELS

    table = Table(title="architectures (model.arch); encoders: model.encoder")
    table.add_column("arch")
    table.add_column("description")
    for name, desc in MODELS.describe().items():
        table.add_row(name, desc)
    console.print(table)


# --------------------------------------------------------------------------------------------- demo
@app.command()
def demo(
    out: Annotated[Path, typer.Option("--out", "-o", help="folder for data, run and results")] = Path("runs/demo"),
    minutes: Annotated[float | None, typer.Option(help="training time budget (default: the demo "
                                                     "preset's)")] = None,
) -> None:
    """Generate synthetic dermoscopy-like data, train, evaluate and write overlays (no download)."""
    from medseg.demo import run_demo

    summary = run_demo(out, minutes=minutes)
    console.print(_metrics_table(summary, f"demo: test split ({summary['n_images']} synthetic images)"))
    console.print(f"data:      {out / 'data'}\nrun:       {out / 'run'} (best.pt, metrics.csv, curves.png)\n"
                  f"results:   {out / 'eval_test'} (per_image.csv, summary.json, overlays/)\n"
                  f"summary:   {out / 'summary.json'}\ntook {summary['demo_seconds']:.0f} s")


def main() -> None:
    """Entry point: run the app, turning user errors into one clear line."""
    try:
        app()
    except MedsegError as err:
        if _state["debug"]:
            raise
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
