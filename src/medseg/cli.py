"""The ``medseg`` command. Thin: parses options, calls the API, prints results.

User errors (MedsegError) print as one sentence without a traceback; ``--debug`` shows it.
Conventions every command follows (checked over the whole app by tests/cli/test_cli_conventions.py):
positional DATA for data, ``--out/-o`` for what a command writes, ``--time-budget`` in minutes,
``--threshold``, ``--set KEY=VALUE``, ``--overlay`` for overlay images, and an Examples section at
the end of each docstring. Help style and global flags: :mod:`medseg.cli_style`.
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

from medseg.cli_style import MedsegGroup, data_source  # noqa: E402
from medseg.data.source import DataSource  # noqa: E402
from medseg.errors import MedsegError  # noqa: E402
from medseg.progress import set_quiet  # noqa: E402

app = typer.Typer(help="medseg: 2D medical image segmentation from raw files to a trained model.\n\n"
                  "\b\nExamples:\n  medseg demo\n  medseg data check data/isic\n"
                  "  medseg train data/isic -o runs/isic --time-budget 20",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False, cls=MedsegGroup,
                  rich_markup_mode=None)
data_app = typer.Typer(help="Find, check and describe datasets.\n\n\b\nExamples:\n  medseg data check "
                       "data/isic", no_args_is_help=True, rich_markup_mode=None)
app.add_typer(data_app, name="data")
convert_app = typer.Typer(help="Convert DICOM and annotation-tool label maps to PNG images and masks.\n\n"
                          "\b\nExamples:\n  medseg convert dicom scans/ -o png/\n  medseg convert labels "
                          "seg.dcm --reference scans/case7 -o masks/", no_args_is_help=True, rich_markup_mode=None)
app.add_typer(convert_app, name="convert")
console = Console(stderr=False, highlight=False, soft_wrap=True)
_state = {"debug": False}

SetOpt = Annotated[list[str] | None, typer.Option("--set", metavar="KEY=VALUE", help="override a config value, "
                                                   "e.g. --set infer.tta=true (repeatable)")]
InferSetOpt = Annotated[list[str] | None, typer.Option("--set", metavar="KEY=VALUE", help="override an inference "
                                                        "setting, e.g. --set infer.mode=sliding (repeatable)")]
SplitOpt = Annotated[str, typer.Option(help="val, test, train or all")]
RunArg = Annotated[Path, typer.Argument(help="run folder or checkpoint")]
ThresholdOpt = Annotated[float | None, typer.Option(metavar="P", help="probability threshold [default: the run's, "
                                                                   "0.5 unless tuned]")]


def _version(value: bool) -> None:
    if value:
        from medseg._version import __version__

        console.print(f"medseg {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    debug: Annotated[bool, typer.Option("--debug", help="show tracebacks and debug logs")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="only warnings and errors")] = False,
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="print the version and exit")] = False,
) -> None:
    """--debug and --version are accepted anywhere on the command line."""
    _state["debug"] = debug
    set_quiet(quiet)
    level = logging.DEBUG if debug else logging.WARNING if quiet else logging.INFO
    logging.basicConfig(level=level, format="%(message)s", stream=sys.stderr, force=True)
    for noisy in ("PIL", "matplotlib", "urllib3", "httpx", "huggingface_hub", "timm", "onnxscript", "onnx_ir",
                  "torch.onnx"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))


def _table(title: str, columns: tuple[str, ...], rows, right: tuple[str, ...] = (), overflow: str = "ellipsis"
           ) -> Table:
    """A rich table: ``columns`` left-aligned except those in ``right``, one row per item of ``rows``."""
    table = Table(title=title)
    for col in columns:
        table.add_column(col, justify="right" if col in right else "left", overflow=overflow)
    for row in rows:
        table.add_row(*row)
    return table


def _metrics_table(summary: dict, title: str) -> Table:
    from medseg.evaluation.tables import metrics_rows

    return _table(title, ("metric", "value", "95% CI"), metrics_rows(summary, labels=False), right=("value", "95% CI"))


# --------------------------------------------------------------------------------------------- data
@data_app.command("check")
@data_source("dataset folder (images/ + masks/, ISIC, manifest.csv)")
def data_check(
    source: DataSource,
    classes: Annotated[int, typer.Option(help="number of classes: 1 checks binary masks, K > 1 label maps "
                                         "0..K-1 (or colours with --palette)")] = 1,
    palette: Annotated[str | None, typer.Option(help="colour-coded masks: one R,G,B per class separated by ';', "
                                                "e.g. '0,0,0;255,0,0;0,0,255'")] = None,
) -> None:
    """Discover image/mask pairs, open every file and report each problem by file name.

    Prints the layout found, the split counts, the foreground fraction of the masks and the folders it
    ignored. Exits with status 1 when any pair is unusable.

    \b
    Examples:
      medseg data check data/isic
      medseg data check --images isic/Training_Input --masks isic/Training_GroundTruth
      medseg data check data/drive/manifest.csv
    """
    from medseg.data.check import check_pairs
    from medseg.data.readers import TargetSpec

    colours = None
    if palette:
        try:
            colours = tuple(tuple(int(v) for v in c.split(",")) for c in palette.split(";"))
        except ValueError:
            raise MedsegError(f"--palette expects R,G,B triples separated by ';', got {palette!r}") from None
        classes = max(classes, len(colours))
    report = check_pairs(source.find(), progress=True, target=TargetSpec(classes, colours))
    for line in report.summary_lines():
        console.print(line, markup=False)
    if not report.ok:
        raise typer.Exit(1)


@data_app.command("fingerprint")
@data_source("dataset folder (as for `data check`)")
def data_fingerprint(
    source: DataSource,
    out: Annotated[Path | None, typer.Option("--out", "-o", metavar="FILE",
                                             help="also write the fingerprint as JSON here")] = None,
    max_images: Annotated[int, typer.Option(metavar="N", help="sample at most N images (seeded)")] = 400,
    invert_masks: Annotated[bool, typer.Option("--invert-masks", help="masks mark the background "
                                               "(ISBI 2012 membranes)")] = False,
) -> None:
    """Describe a dataset in figures: sizes, modality, spacing, intensities, classes, object sizes and widths.

    The structure width (median medial-axis width of the labelled structures) tells whether images can be
    shrunk to a fixed size or thin structures need native resolution.

    \b
    Examples:
      medseg data fingerprint data/isic
      medseg data fingerprint data/drive --manifest data/drive/manifest.csv -o drive_fingerprint.json
    """
    import json

    from medseg.io.files import write_text_atomic
    from medseg.plan.fingerprint import compute_fingerprint

    fingerprint = compute_fingerprint(source.find().pairs, max_images=max_images, invert_masks=invert_masks,
                                      progress=True)
    for line in fingerprint.summary_lines():
        console.print(line, markup=False)
    if out is not None:
        write_text_atomic(out, json.dumps(fingerprint.to_dict(), indent=2) + "\n")
        console.print(f"wrote {out}")


# --------------------------------------------------------------------------------------------- plan
@app.command("plan")
@data_source("dataset folder (as for `train`)")
def plan_command(
    source: DataSource,
    time_budget: Annotated[float | None, typer.Option("--time-budget", metavar="MINUTES", help="training budget "
                                                       "to plan for [default: 20]")] = None,
    device: Annotated[str, typer.Option(metavar="DEVICE", help="auto (CUDA when available), cpu or cuda")]
    = "auto",
    out: Annotated[Path, typer.Option("--out", "-o", metavar="FILE", help="the plan YAML; plan_report.md and "
                                      "machine.json go beside it")] = Path("plan.yaml"),
    machine: Annotated[Path | None, typer.Option(metavar="FILE", help="machine description (machine.json of an "
                                                 "earlier plan) instead of probing: same data + same "
                                                 "description = same plan")] = None,
    set_: SetOpt = None,
) -> None:
    """Plan training from the data and this machine: fingerprint, speed probe, then a config with reasons.

    Prints the dataset fingerprint and the plan, and writes the plan as a config YAML (every value with a
    comment saying why), plan_report.md (the figures behind each choice, every candidate network and
    side weighed) and machine.json. --set values go over the plan (data.invert_masks also applies to
    the fingerprint). `medseg train DATA --plan FILE` trains it.

    \b
    Examples:
      medseg plan data/isic --time-budget 20 -o runs/isic_plan.yaml
      medseg plan data/isbi --set data.invert_masks=true -o isbi_plan.yaml
      medseg plan data/drive --machine runs/isic_plan/machine.json --device cpu
    """
    from medseg.plan.run import plan_data

    result = plan_data(source, budget_min=time_budget, device=device, overrides=list(set_ or []), machine=machine,
                       progress=True)
    for line in result.fingerprint.summary_lines() + [""] + result.machine.summary_lines() + [""]:
        console.print(line, markup=False)
    for line in result.summary_lines():
        console.print(line, markup=False)
    path = result.write(out)
    console.print(f"wrote {path}, {path.parent / 'plan_report.md'} and {path.parent / 'machine.json'}; train it "
                  f"with: medseg train DATA --plan {path}", markup=False)


# ------------------------------------------------------------------------------------------ convert
def _print_batch(result, what: str, out: Path, more: str = "") -> None:
    """What a batch command wrote (``more`` appended), its notes and its failures (each names its file);
    exit status 1 when it failed on everything."""
    n = len(result.written)
    console.print((f"wrote {n} {what}{'' if n == 1 else 's'} to {out}" if n else f"wrote no {what}s") + more,
                  markup=False)
    for note in result.notes:
        console.print(f"note: {note}", markup=False)
    for _, message in result.failed:
        console.print(f"skipped: {message}", markup=False)
    if result.failed and not (result.written or result.skipped):
        raise typer.Exit(1)


@convert_app.command("dicom")
def convert_dicom(
    src: Annotated[Path, typer.Argument(help="a DICOM file or a folder of DICOM files/series")],
    out: Annotated[Path | None, typer.Option("--out", "-o", metavar="FOLDER", help="output folder (not the "
                                             "source folder)", show_default=False)] = None,
    dst: Annotated[Path | None, typer.Argument(hidden=True, help="deprecated: use --out")] = None,
    window: Annotated[str | None, typer.Option(help="file (default), auto, soft_tissue, lung, bone, brain, "
                                                  "or CENTER,WIDTH")] = None,
    bits: Annotated[int, typer.Option(help="8: windowed PNG; 16: raw stored values")] = 8,
    anonymize: Annotated[bool, typer.Option("--anonymize", help="replace UIDs in the sidecars by stable hashes")]
    = False,
) -> None:
    """One PNG per frame (<stem>.png, <stem>_f003.png) plus a .json sidecar with geometry and UIDs.

    \b
    Examples:
      medseg convert dicom scans/ -o png/ --window lung
      medseg convert dicom scans/ -o png16/ --bits 16 --anonymize
    """
    from medseg.convert import convert_dicom as run

    out = out or dst
    if out is None:
        raise MedsegError("give the output folder with --out FOLDER")
    _print_batch(run(src, out, window=window, bits=bits, anonymize=anonymize), "image", out)


@convert_app.command("labels")
def convert_labels(
    labels: Annotated[Path, typer.Argument(help="a DICOM SEG, NRRD/NIfTI label map or LabelMe JSON, or a folder")],
    reference: Annotated[Path, typer.Option("--reference", help="the DICOM series (or, for LabelMe, the image "
                                                               "folder) the labels annotate")],
    out: Annotated[Path, typer.Option("--out", "-o", metavar="FOLDER", help="output folder for mask PNGs (not "
                                      "an input folder)")],
) -> None:
    """One mask PNG per annotated slice or image, named after it.

    \b
    Examples:
      medseg convert labels seg.dcm --reference scans/case7 -o masks/
      medseg convert labels labelme/ --reference photos/ -o masks/
    """
    from medseg.convert import convert_labels as run

    _print_batch(run(labels, reference, out), "mask", out)


# -------------------------------------------------------------------------------------------- train
@app.command()
@data_source("dataset folder (see `medseg data check`)")
def train(
    source: DataSource,
    out: Annotated[Path, typer.Option("--out", "-o", metavar="RUN", help="run folder for checkpoints, config, "
                                      "metrics")] = Path("runs/train"),
    preset: Annotated[str | None, typer.Option(help="named configuration (`medseg presets` lists them) "
                                               "[default: default]")] = None,
    config: Annotated[Path | None, typer.Option("--config", metavar="FILE", help="YAML config file (over the "
                                                "preset)")] = None,
    plan: Annotated[Path | None, typer.Option("--plan", metavar="FILE", help="train a plan written by `medseg "
                                              "plan` (edited or not); without --plan, --preset or --config, "
                                              "the data is planned first")] = None,
    epochs: Annotated[int | None, typer.Option(metavar="N", help="maximum number of epochs [default: the "
                                               "preset's; 100 for default, with early stopping]")] = None,
    time_budget: Annotated[float | None, typer.Option("--time-budget", metavar="MINUTES", help="stop cleanly "
                                                       "after this many minutes, keeping the best model; "
                                                       "with --folds: the whole cross-validation, shared by "
                                                       "its folds [default: none]")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", metavar="KEY=VALUE", help="override a config "
                                                    "value, e.g. --set optim.lr=3e-4 (repeatable)")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="continue the run in --out from its last.pt")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="replace a run already in --out")] = False,
    devices: Annotated[int, typer.Option("--devices", metavar="N", min=1, help="train with N processes on this "
                                         "machine (DDP through torchrun: one per GPU, or gloo on CPU)")] = 1,
    folds: Annotated[int | None, typer.Option(metavar="K", help="K-fold cross-validation: RUN/fold_0.., pooled "
                                              "out-of-fold summary, folds ensembled by predict")] = None,
    fold: Annotated[int | None, typer.Option(metavar="I", help="with --folds: train only fold I (one process "
                                             "or machine per fold)")] = None,
    group_by: Annotated[str | None, typer.Option(metavar="COLUMN", help="with --folds: manifest column whose "
                                                 "cases stay in one fold (patient id)")] = None,
) -> None:
    """Train a segmentation model; writes best.pt, last.pt, config.yaml, metrics.csv and curves.png.

    Without --preset, --config or --plan the data and this machine are planned first (see `medseg
    plan`; the budget is --time-budget, else 20 minutes) and RUN/plan.yaml + plan_report.md say why.

    With --folds K: K runs in RUN/fold_I (grouped, stratified by foreground size), then the folds that
    exist are gathered: RUN/cv_summary.json, RUN/eval_oof/, post-processing chosen out of fold.

    At the end the threshold and post-processing are chosen on the val split, as `medseg
    tune-postprocess` does, inside --time-budget (skipped with a note when they do not fit), and
    stored in the run (RUN/postprocess.json); --set train.tune_postprocess=false turns this off.

    Names (preset, architecture, encoder, loss, --set keys) are checked before any data is read;
    the run folder is created once the data is usable. On a CPU without --time-budget the first
    steps are timed and the likely duration is printed. SIGTERM stops at the next step with the
    resume state in last.pt (exit 0); --resume continues, with any number of processes.

    \b
    Examples:
      medseg train data/isic -o runs/isic --time-budget 20
      medseg train data/drive -o runs/drive --plan drive_plan.yaml
      medseg train data/isic -o runs/isic --preset default --devices 2
      torchrun --nproc-per-node 4 -m medseg train data/isic -o runs/isic
      medseg train data/isic -o runs/cv --folds 5 --group-by patient_id
    """
    from medseg.engine.budget import mark_start

    mark_start()  # --time-budget counts from here: the imports and the data loading are inside it
    from medseg.engine.distributed import launch, under_torchrun

    overrides = list(set_ or [])
    if epochs is not None:
        overrides.append(f"train.epochs={epochs}")
    if time_budget is not None:
        overrides.append(f"train.time_budget_min={time_budget}")
    config, preset, planned = _plan_for_train(source, out, preset, config, plan, overrides, resume, overwrite)
    if devices > 1 and not under_torchrun():
        argv = _without_option(sys.argv[1:], "--devices")
        raise typer.Exit(launch(devices, argv + (["--plan", str(planned)] if planned and not plan else [])))
    from medseg.config import build_config
    from medseg.engine.train import train as run_train
    from medseg.inference.postprocess_tuning import tune_after_training

    settings = build_config(preset, config) if preset and config else config or preset  # --config over --preset
    if folds is not None or fold is not None or group_by is not None:
        from medseg.evaluation.crossval import train_cv

        if folds is None:
            raise MedsegError("--fold and --group-by go with --folds K")
        run = train_cv(source, out, folds=folds, fold=fold, group_by=group_by, config=settings, overrides=overrides,
                       resume=resume, overwrite=overwrite)
        console.print(f"cross-validation run: {run} (fold_*/, cv_summary.json, eval_oof/)")
        return
    run = run_train(source, out, config=settings, overrides=overrides, resume=resume, overwrite=overwrite,
                    finish=tune_after_training)
    if os.environ.get("RANK", "0") == "0":
        console.print(f"run folder: {run} (best.pt, metrics.csv, curves.png)")
    _state["exit_now"] = True  # every file is written (atomically): skip the interpreter's slow teardown


def _plan_for_train(source, out: Path, preset, config, plan, overrides, resume, overwrite):
    """(config file, preset, plan file) for `medseg train`: --plan is the config; neither --preset nor
    --config: plan now into RUN/plan.yaml (one process: torchrun ranks train the default preset)."""
    from medseg.engine.distributed import under_torchrun
    from medseg.plan.run import copy_plan_into_run, plan_into_run

    if plan is not None:
        if preset is not None or config is not None:
            raise MedsegError("--plan is a config of its own: give --plan, or --preset/--config, not both")
        if os.environ.get("RANK", "0") == "0":
            copy_plan_into_run(plan, out)
        return plan, None, plan
    if preset is not None or config is not None or resume:
        return config, preset, None
    if under_torchrun() or ((out / "last.pt").exists() and not overwrite):
        if under_torchrun():
            logging.getLogger("medseg").warning("under torchrun the data is not planned (every rank would probe "
                                                "alone): training the default preset; plan first with `medseg "
                                                "plan` and pass --plan")
        return None, "default", None
    planned = plan_into_run(out, source, overrides=overrides)
    console.print(f"planned: {planned} (why: {planned.parent / 'plan_report.md'})")
    return planned, None, planned


# ----------------------------------------------------------------------------------------- evaluate
@app.command()
@data_source("dataset folder with masks [default: the data the run was trained on]")
def evaluate(
    run: RunArg,
    source: DataSource,
    split: SplitOpt = "val",
    out: Annotated[Path | None, typer.Option("--out", "-o", metavar="FOLDER", help="output folder [default: "
                                             "RUN/eval_SPLIT]", show_default=False)] = None,
    overlay: Annotated[bool, typer.Option("--overlay", help="also write overlay images (prediction red/yellow, "
                                          "truth green) to OUT/overlays/")] = False,
    worst: Annotated[int | None, typer.Option(metavar="N", help="overlays of only the N worst images by Dice "
                                              "(implies --overlay) [default: with --overlay, every image]")] = None,
    threshold: ThresholdOpt = None,
    set_: SetOpt = None,
    spacing: Annotated[str | None, typer.Option(metavar="ROW,COL", help="pixel spacing in mm for surface "
                                                "distances [default: DICOM PixelSpacing, else pixels only]")]
    = None,
    tolerance_px: Annotated[float, typer.Option(metavar="PX", help="surface-Dice tolerance in pixels")] = 2.0,
    tolerance_mm: Annotated[float, typer.Option(metavar="MM", help="surface-Dice tolerance in mm")] = 1.0,
    qc: Annotated[bool, typer.Option("--qc", help="TTA on: score each image's failure flag and calibrate its "
                                     "threshold (OUT/qc.json)")] = False,
    resamples: Annotated[int, typer.Option(metavar="N", help="bootstrap resamples for the 95% intervals")] = 2000,
    overlays_old: Annotated[int | None, typer.Option("--overlays", hidden=True,
                                                     help="deprecated: --overlay --worst N")] = None,
) -> None:
    """Dice, IoU, sensitivity, specificity, precision, accuracy, ISIC thresholded Jaccard, HD95, ASSD,
    surface Dice, pixel AUC-ROC and average precision, each with a bootstrap 95% interval.

    Writes OUT/per_image.csv and OUT/summary.json (and OUT/overlays/ with --overlay). Multi-class
    runs: each metric per foreground class and its mean over classes. Pixel metrics count only
    inside a region of interest when the data has one (DRIVE field of view).

    \b
    Examples:
      medseg evaluate runs/isic
      medseg evaluate runs/isic data/isic --split test -o results/ --worst 16
      medseg evaluate runs/isic --threshold 0.4 --set infer.tta=true
      medseg evaluate runs/isic data/isic --qc
      medseg evaluate runs/ct data/ct --spacing 0.7,0.7 --tolerance-mm 2
    """
    from medseg.evaluation import evaluate as run_eval

    if split not in ("train", "val", "test", "all"):
        raise MedsegError(f"--split must be train, val, test or all, not {split!r}")
    if overlays_old:
        overlay, worst = True, overlays_old
    if worst is not None and worst < 1:
        raise MedsegError(f"--worst must be at least 1, not {worst}")
    overlays = worst or ("all" if overlay else 0)
    summary = run_eval(run, source, split=split, out=out, overlays=overlays,
                       overrides=_inference_overrides(set_, threshold), spacing=_parse_spacing(spacing),
                       tolerance_px=tolerance_px, tolerance_mm=tolerance_mm, qc=qc, n_resamples=resamples)
    console.print(_metrics_table(summary, f"{run} on {split} ({summary['n_images']} images)"))


def _parse_spacing(text: str | None) -> tuple[float, float] | None:
    if text is None:
        return None
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) == 1:
        values = values * 2
    if len(values) != 2 or min(values) <= 0:
        raise MedsegError(f"--spacing expects ROW,COL in mm (e.g. 0.7,0.7), got {text!r}")
    return values


@app.command()
@data_source("dataset folder with masks")
def compare(
    a: Annotated[Path, typer.Argument(metavar="A", help="run folder, checkpoint, .onnx, or a folder of predicted "
                                      "masks (<image stem>.png)")],
    b: Annotated[Path, typer.Argument(metavar="B", help="the same kinds as A")],
    source: DataSource,
    split: SplitOpt = "val",
    out: Annotated[Path, typer.Option("--out", "-o", metavar="FOLDER", help="folder for compare.json and "
                                      "paired.csv")] = Path("compare"),
) -> None:
    """Paired comparison of two models on the same images: Dice, IoU and HD95 per image, the mean
    difference B - A with a bootstrap 95% interval, and the Wilcoxon signed-rank test.

    \b
    Examples:
      medseg compare runs/unet runs/deeplab data/isic --split val
      medseg compare predictions_a/ predictions_b/ data/isic --split all -o cmp/
    """
    from medseg.evaluation.compare import compare as run_compare
    from medseg.evaluation.tables import comparison_lines

    result = run_compare(a, b, source, split=split, out=out)
    for line in comparison_lines(result):
        console.print(line, markup=False)


@app.command()
@data_source("dataset folder: evaluate now [default: use RUN/eval_SPLIT]")
def report(
    run: Annotated[Path, typer.Argument(help="run folder (a cross-validation run too)")],
    source: DataSource,
    split: Annotated[str, typer.Option(help="val, test, train, all (oof: a CV run's out-of-fold)")] = "val",
    out: Annotated[Path | None, typer.Option("--out", "-o", metavar="FILE", help="the HTML file [default: "
                                             "RUN/report.html]", show_default=False)] = None,
    qc: Annotated[bool, typer.Option("--qc/--no-qc", help="with DATA: TTA and the failure flag")] = True,
    worst: Annotated[int, typer.Option(metavar="N", help="images in the worst-cases gallery")] = 8,
    set_: SetOpt = None,
) -> None:
    """One self-contained HTML report: metrics with intervals, per-class table, Dice histogram, HD95
    box plot, worst cases, reliability diagram, failure flag, training curves, config, data report.

    \b
    Examples:
      medseg report runs/isic data/isic -o isic_val.html
      medseg report runs/isic data/isic --set infer.tta_scales=[1.0]
      medseg report runs/cv --split oof
    """
    from medseg.evaluation.report import write_report

    path = write_report(run, source, split=split, out=out, qc=qc, worst=worst, overrides=set_)
    console.print(f"wrote {path}", markup=False)


def _inference_overrides(set_: list[str] | None, threshold: float | None) -> list[str]:
    overrides = list(set_ or [])
    if threshold is not None:
        overrides.append(f"infer.threshold={threshold}")
    return overrides


# ------------------------------------------------------------------------------------------ predict
@app.command()
def predict(
    run: Annotated[Path, typer.Argument(help="run folder, checkpoint, or exported .onnx file")],
    input: Annotated[Path, typer.Argument(metavar="IMAGES", help="an image file or a folder of images")],
    out: Annotated[Path, typer.Option("--out", "-o", metavar="FOLDER", help="folder for <stem>.png masks; "
                                      "never an input's own name")] = Path("predictions"),
    overlay: Annotated[bool, typer.Option("--overlay", help="also write overlay images (<stem>_overlay.png)")]
    = False,
    threshold: ThresholdOpt = None,
    fmt: Annotated[str, typer.Option("--format", metavar="FORMAT", help="png (a mask per image or DICOM frame), "
                                                      "dicom-seg or "
                                                      "nifti (one per DICOM series)")] = "png",
    tta: Annotated[bool | None, typer.Option("--tta/--no-tta", help="test-time augmentation: average over "
                                               "flips and scales 0.75/1/1.25 (default: the run's infer.tta)")]
    = None,
    uncertainty: Annotated[bool, typer.Option("--uncertainty", help="also write <stem>_uncertainty.png: "
                                              "disagreement between "
                                                 "TTA members (std of probabilities x 510); turns TTA on")]
    = False,
    set_: InferSetOpt = None,
    overwrite: Annotated[bool, typer.Option("--overwrite/--resume", help="--resume (default): skip images whose "
                                            "outputs in --out are already complete, so a killed run finishes the "
                                            "rest; --overwrite: predict every image again")] = False,
) -> None:
    """Write a {0,255} mask PNG at each input's own size; unreadable files are reported and skipped.

    An input is never overwritten: a mask that would replace an input (predicting photos/ into
    photos/ when they are PNGs) or two inputs that would share a mask name (a.png and a.jpg) stop
    the command before anything is written. Restartable: images whose outputs in --out are complete
    are skipped. Under torchrun each of N processes predicts every N-th image of a folder.

    \b
    Examples:
      medseg predict runs/isic photos/ -o masks/ --overlay
      medseg predict isic.onnx ISIC_0000001.jpg -o masks/ --threshold 0.4
      torchrun --nproc-per-node 4 -m medseg predict runs/isic big_folder/ -o masks/
    """
    from medseg.engine.distributed import DistContext, init_distributed, shutdown, under_torchrun
    from medseg.inference.dicom_prediction import is_dicom_input, predict_dicom
    from medseg.inference.folder_run import predict_folder_restartable
    from medseg.inference.predictor import Predictor

    overrides = _inference_overrides(set_, threshold)
    if tta is False and uncertainty:
        raise MedsegError("--uncertainty measures the disagreement between TTA members; drop --no-tta")
    if tta is not None or uncertainty:
        overrides.append(f"infer.tta={'true' if (tta or uncertainty) else 'false'}")
    ctx = init_distributed(backend="gloo") if under_torchrun() else DistContext()
    qc = False
    try:
        if ctx.enabled and (fmt != "png" or is_dicom_input(input)):
            raise MedsegError("torchrun shards folders of images; predict DICOM input in one process")
        import torch

        device = f"cuda:{ctx.local_rank}" if ctx.enabled and torch.cuda.is_available() else None
        predictor = Predictor.load(run, overrides=overrides, device=device)
        if fmt != "png" or is_dicom_input(input):  # DICOM goes series by series
            result = predict_dicom(predictor, input, out, fmt=fmt)
        else:
            qc = predictor.plan.members(predictor.backend.flips) > 1  # TTA: also the per-image failure flag
            result = predict_folder_restartable(predictor, input, out, overlay=overlay, uncertainty=uncertainty,
                                                overwrite=overwrite, ctx=ctx, qc=qc)
    finally:
        shutdown(ctx)
    if not ctx.is_main:
        return
    done = f", {len(result.skipped)} already complete" if result.skipped else ""
    procs = f" by {ctx.world} processes" if ctx.enabled else ""
    if qc and result.qc:
        from medseg.evaluation.qc import find_calibration, write_qc_csv

        calibration = find_calibration(run)
        write_qc_csv(out / "qc.csv", result.qc, calibration)
        flagged = "" if calibration is None else (
            f"; {sum(s >= calibration['threshold'] for _, s in result.qc)} flagged as likely failures")
        console.print(f"wrote {out / 'qc.csv'} (failure-flag scores of the {len(result.qc)} images predicted now"
                      f"{flagged})", markup=False)
    _print_batch(result, "mask", out, f"{done}{procs} ({predictor.describe()})")


# ----------------------------------------------------------------------------- export / post-process
@app.command()
@data_source("the run's data folder: validation images for the parity check, training images for int8 calibration")
def export(
    run: RunArg,
    out: Annotated[Path, typer.Option("--out", "-o", metavar="FILE", help="the .onnx file to write")],
    source: DataSource,
    format: Annotated[str, typer.Option("--format", help="export format (onnx)")] = "onnx",
    int8: Annotated[bool, typer.Option("--int8", help="static int8 quantisation calibrated on training images; "
                                       "refused when validation Dice drops by more than 0.005 (needs DATA)")]
    = False,
    tta: Annotated[bool, typer.Option("--tta", help="bake flip test-time augmentation into the graph")] = False,
    calibration: Annotated[int, typer.Option(metavar="N", help="number of training images for int8 "
                                             "calibration")] = 64,
    data_old: Annotated[Path | None, typer.Option("--data", hidden=True, help="deprecated: DATA")] = None,
) -> None:
    """Export one ONNX graph (normalisation, network, optional flip TTA, sigmoid) checked against PyTorch.

    Batch, height and width are dynamic; the config travels in the file's metadata, so the .onnx
    alone works with `medseg predict`. The export is refused when its masks agree with PyTorch's on
    less than 99.9 % of pixels.

    \b
    Examples:
      medseg export runs/isic -o isic.onnx
      medseg export runs/isic data/isic --int8 -o isic_int8.onnx
      medseg export runs/isic -o isic_tta.onnx --tta
    """
    from medseg.export import export_onnx
    from medseg.io.outputs import check_not_input

    source = source or DataSource(data_old)
    check_not_input(out, [run], what="export file")
    if format != "onnx":
        raise MedsegError(f"--format {format!r} is not supported; use --format onnx")
    report = export_onnx(run, out, tta=tta, int8=int8, data=source, calibration=calibration)
    p = report.parity
    flips = f", flip TTA {'/'.join(report.tta_flips)}" if report.tta_flips else ""
    console.print(f"wrote {report.path} ({report.precision}{flips}) in {report.seconds:.0f} s", markup=False)
    console.print(f"ONNX fp32 vs PyTorch fp32 on {p.n_images} images: max |probability difference| "
                  f"{p.max_abs_diff:.2e}, mask agreement {p.mask_agreement:.5%}", markup=False)
    if report.int8:
        q = report.int8
        console.print(f"int8: validation Dice {q['dice_int8']:.4f} vs float {q['dice_float']:.4f} (drop "
                      f"{q['dice_drop']:.4f} <= {q['max_drop']}); mask agreement with PyTorch "
                      f"{q['parity_vs_pytorch']['mask_agreement']:.4%}", markup=False)


@app.command("tune-postprocess")
@data_source("the run's data folder, with masks [default: the data the run was trained on]")
def tune_postprocess(
    run: Annotated[Path, typer.Argument(help="run folder or checkpoint (the choice is stored in it)")],
    source: DataSource,
    split: Annotated[str, typer.Option(help="split to tune on (val, or test/train/all)")] = "val",
    dry_run: Annotated[bool, typer.Option("--dry-run", help="report without storing the choice")] = False,
    tta: Annotated[bool, typer.Option("--tta/--no-tta", help="also try flip TTA (image + left-right and up-down "
                                      "flips), kept when it raises Dice by >= 0.002")] = True,
) -> None:
    """Tune threshold, largest component, hole filling and small-object removal on validation Dice.

    Keeps only the steps that improve validation Dice (as nnU-Net does) and stores them in the run's
    checkpoint config and config.yaml, so predict, evaluate and export use them. A run without TTA
    also gets the search on flip-TTA probabilities; flip TTA is kept when its Dice is >= 0.002 higher
    (it triples the network's work per image).

    \b
    Examples:
      medseg tune-postprocess runs/isic data/isic
      medseg tune-postprocess runs/isic data/isic --dry-run
    """
    from medseg.inference.postprocess_tuning import tune_postprocess as run_tuning

    result = run_tuning(run, source, split=split, store=not dry_run, tta=tta)
    rows = [(t["step"], t["setting"], f"{t['dice']:.4f}", "yes" if t["kept"] else "no") for t in result["trials"]]
    console.print(_table(f"post-processing on {split} ({result['n_images']} images)",
                         ("step", "setting", "Dice", "kept"), rows))
    stored = "" if dry_run else f" (stored in {result['stored_in']})"
    console.print(f"Dice {result['dice_before']:.4f} -> {result['dice_after']:.4f}: {result['setting_after']}{stored}",
                  markup=False)


# -------------------------------------------------------------------------------------------- serve
@app.command()
def serve(
    model: Annotated[Path, typer.Argument(metavar="MODEL", help="run folder, checkpoint, or exported .onnx "
                                          "(int8 included)")],
    host: Annotated[str, typer.Option(help="address to listen on; anything but loopback needs a token")]
    = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port")] = 8000,
    token_file: Annotated[Path | None, typer.Option("--token-file", metavar="FILE", help="file whose first line "
                                                    "is the bearer token (else $MEDSEG_TOKEN)")] = None,
    workers: Annotated[int, typer.Option(help="worker threads running the model")] = 1,
    max_queue: Annotated[int, typer.Option("--max-queue", help="uploads waiting for a worker; more are "
                                           "answered 503 with Retry-After")] = 16,
    max_upload_mb: Annotated[float, typer.Option("--max-upload-mb", help="largest file accepted (413 above)")]
    = 32.0,
    max_megapixels: Annotated[float, typer.Option("--max-megapixels", help="largest image, width x height x "
                                                  "frames from the header, checked before decoding (413)")] = 40.0,
    micro_batch: Annotated[int, typer.Option("--micro-batch", help="run up to N concurrent uploads in one model "
                                             "call (1 = off; see bench/serve_load.py)")] = 1,
    batch_wait_ms: Annotated[float, typer.Option("--batch-wait-ms", help="with --micro-batch: how long a worker "
                                                 "waits for more uploads")] = 5.0,
) -> None:
    """Serve a model over HTTP (FastAPI + uvicorn) with a browser viewer at /.

    POST /v1/segment (an image or DICOM file: mask PNG, json, overlay, dicom-seg), POST /v1/segment/batch,
    GET /v1/model, /metrics (Prometheus), /livez, /readyz, /docs. Masks are computed by the same Predictor
    as `medseg predict`. Ctrl-C or SIGTERM stops after in-flight requests finish.

    Examples:

      medseg serve runs/isic --token-file ~/.medseg-token

      medseg serve isic_int8.onnx --host 0.0.0.0 --port 8080 --token-file /run/secrets/medseg --max-queue 32

      curl -H "Authorization: Bearer $TOKEN" -F file=@ISIC_0000001.jpg localhost:8000/v1/segment -o mask.png
    """
    from medseg.serve.runner import serve as run_server

    run_server(model, host=host, port=port, token_file=token_file, workers=workers, max_queue=max_queue,
               max_upload_mb=max_upload_mb, max_megapixels=max_megapixels, max_batch=micro_batch,
               batch_wait_ms=batch_wait_ms, log_level=logging.DEBUG if _state["debug"] else logging.INFO)


# --------------------------------------------------------------------------------- presets / models
@app.command()
def presets() -> None:
    """List the named configurations, which to choose on a CPU, and the loss and augmentation names.

    \b
    Examples:
      medseg presets
      medseg train data/isic --preset isic-unet -o runs/unet
    """
    from medseg.config import describe_presets

    narrow = _narrow_console()
    narrow.print(_table("presets (use with --preset NAME)", ("name", "description"), describe_presets().items()))
    narrow.print("On a CPU choose `default` (add --time-budget MINUTES); `demo` is the 4-minute synthetic "
                 "demo. The tutorial presets assume ImageNet-pretrained encoders and a GPU; from scratch on "
                 "a CPU `default` beats each of them (BENCHMARKS.md).", markup=False)
    from medseg.data.augmentations import AUGMENTATIONS
    from medseg.losses import LOSSES

    for registry, key in ((LOSSES, "loss.name"), (AUGMENTATIONS, "train.augment")):
        narrow.print(_table(f"{registry.kind}s (--set {key}=NAME)", ("name", "description"),
                            registry.describe().items()))


def _narrow_console() -> Console:
    """Tables fit 100 columns (or the terminal, when narrower)."""
    import shutil

    return Console(width=min(100, shutil.get_terminal_size((100, 24)).columns), highlight=False)


@app.command()
def models(
    size: Annotated[int, typer.Option(metavar="PX", help="input side (px) for GFLOPs")] = 256,
    classes: Annotated[int, typer.Option(help="output classes (1 = binary)")] = 1,
    arch: Annotated[str | None, typer.Option(help="only this architecture")] = None,
    encoder: Annotated[str | None, typer.Option(help="encoder instead of each architecture's default")] = None,
    encoders: Annotated[str | None, typer.Option(metavar="PATTERN", help="list encoder names matching a glob, "
                                                 "e.g. '*convnext*'")] = None,
    download: Annotated[str | None, typer.Option(metavar="ENCODER", help="fetch this encoder's ImageNet weights "
                                                 "now (e.g. resnet34, tu-convnext_tiny) so that training works "
                                                 "offline later")] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", metavar="FILE", help="with --download: also save "
                                             "the weights to this file, to copy to an offline machine and use as "
                                             "--set model.encoder_weights=FILE", show_default=False)] = None,
    to: Annotated[Path | None, typer.Option("--to", hidden=True, help="deprecated: --out")] = None,
) -> None:
    """List the architectures with parameters and GFLOPs (any SMP encoder or tu-<timm> name works).

    \b
    Examples:
      medseg models
      medseg models --arch unet --encoder tu-convnext_tiny --size 512
      medseg models --download resnet34 -o resnet34.safetensors
    """
    from medseg.catalog import architecture_rows, download_weights, encoder_names
    from medseg.models.factory import ARCHS
    from medseg.progress import progress_bar

    to = out or to

    if download is not None:
        path = download_weights(download, to)
        console.print(f"ImageNet weights of {download}: {path}\n"
                      f"use: --set model.encoder={download} --set model.encoder_weights="
                      f"{path if to else 'imagenet'}")
        return
    if to is not None:
        raise MedsegError("--out (--to) only goes with --download ENCODER")
    if encoders is not None:
        console.print("\n".join(encoder_names(encoders)) or f"no encoder matches {encoders!r}")
        return
    names = [arch] if arch is not None else list(ARCHS)
    rows = [r for name in progress_bar(names, desc="building models", unit="arch", leave=False, enabled=len(names) > 1)
            for r in architecture_rows(size, classes, name, encoder)]
    _narrow_console().print(_table(
        f"architectures (model.arch) at {size}x{size}, {classes} class(es); GFLOPs count a multiply-add as 2",
        ("arch", "encoder", "params (M)", "GFLOPs", "description; options (model.*)"),
        [(r["arch"], r["encoder"], str(r.get("parameters_m", "-")), str(r.get("gflops", "-")),
          r.get("error", r["help"]) + (f"; options: {r['options']}" if r["options"] else "")) for r in rows],
        right=("params (M)", "GFLOPs"), overflow="fold"))


# ------------------------------------------------------------------------------------------- serving
@app.command("dicom-listen")
def dicom_listen(
    model: Annotated[Path, typer.Argument(metavar="RUN", help="run folder, checkpoint, or exported .onnx file")],
    ae_title: Annotated[str, typer.Option("--ae-title", metavar="AE", help="this node's AE title (the called "
                                          "AE title must match)")] = "MEDSEG",
    port: Annotated[int, typer.Option(help="TCP port to listen on")] = 11112,
    host: Annotated[str, typer.Option(help="address to listen on (0.0.0.0: every interface)")] = "127.0.0.1",
    allow_calling: Annotated[list[str] | None, typer.Option("--allow-calling", metavar="AE", help="accept "
                             "associations only from this calling AE title (repeatable; default: any)")] = None,
    forward: Annotated[list[str] | None, typer.Option("--forward", metavar="AE@HOST:PORT", help="C-STORE each SEG "
                       "to this destination (repeatable)")] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", metavar="DIR", help="also write each SEG here")]
    = None,
    idle_seconds: Annotated[float, typer.Option(help="a series is complete when its association was released and "
                                                "nothing arrived for this long")] = 10.0,
    spool: Annotated[Path, typer.Option(metavar="DIR", help="received instances wait here (kept across "
                                        "restarts)")] = Path("dicom-spool"),
    dead_letter: Annotated[Path | None, typer.Option(metavar="DIR", help="SEGs that could not be forwarded "
                                                     "(default: SPOOL/dead-letter)")] = None,
    retries: Annotated[int, typer.Option(help="retries per destination before the dead-letter folder")] = 5,
    retry_delay: Annotated[float, typer.Option(help="first retry delay in seconds, doubled each retry")] = 2.0,
    min_free_mb: Annotated[float, typer.Option(help="answer C-STORE with 0xA700 (out of resources) below this "
                                               "much free disk space in the spool")] = 512.0,
    set_: InferSetOpt = None,
) -> None:
    """Run a DICOM Storage SCP that answers each received series with a DICOM SEG.

    Received images are spooled to disk; a series is segmented once its association was released and
    it stayed idle for --idle-seconds, and its SEG (same study, new series) is sent to each --forward
    destination and/or written to --out. Stop with Ctrl-C or SIGTERM; the spool is kept.

    \b
    Examples:
      medseg dicom-listen runs/ct --ae-title MEDSEG --port 11112 --out segs/
      medseg dicom-listen runs/ct --host 0.0.0.0 --allow-calling PACS --forward PACS@10.0.0.5:104
      medseg dicom-listen model.onnx --forward ARCHIVE@pacs.local:11112 --idle-seconds 30
    """
    from medseg.serve.dicom_node import NodeSettings, listen
    from medseg.serve.forwarder import Destination

    settings = NodeSettings(ae_title=ae_title, host=host, port=port, allow_calling=list(allow_calling or []),
                            forward=[Destination.parse(f) for f in forward or []], out=out,
                            idle_seconds=idle_seconds, spool=spool, dead_letter=dead_letter, retries=retries,
                            retry_delay=retry_delay, min_free_mb=min_free_mb)
    listen(model, settings, overrides=list(set_ or []))


# --------------------------------------------------------------------------------------------- demo
@app.command()
def demo(
    out: Annotated[Path, typer.Option("--out", "-o", metavar="FOLDER", help="folder for data, run and results")]
    = Path("runs/demo"),
    time_budget: Annotated[float | None, typer.Option("--time-budget", metavar="MINUTES", help="training time "
                                                       "budget [default: the demo preset's, 4]")] = None,
    minutes: Annotated[float | None, typer.Option("--minutes", hidden=True, help="deprecated: --time-budget")]
    = None,
) -> None:
    """Generate synthetic dermoscopy-like data, train, evaluate and write overlays (no download).

    \b
    Examples:
      medseg demo
      medseg demo -o /tmp/demo --time-budget 2
    """
    from medseg.demo import run_demo

    summary = run_demo(out, minutes=time_budget if time_budget is not None else minutes)
    console.print(_metrics_table(summary, f"demo: test split ({summary['n_images']} synthetic images)"))
    console.print(f"data:      {out / 'data'}\nrun:       {out / 'run'} (best.pt, metrics.csv, curves.png)\n"
                  f"results:   {out / 'eval_test'} (per_image.csv, summary.json, overlays/)\n"
                  f"summary:   {out / 'summary.json'}\ntook {summary['demo_seconds']:.0f} s")


def _without_option(argv: list[str], name: str) -> list[str]:
    """``argv`` less ``name VALUE`` / ``name=VALUE`` (to hand the rest to torchrun's workers)."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == name:
            skip = True
        elif not arg.startswith(name + "="):
            out.append(arg)
    return out


def main() -> None:
    """Entry point: run the app, turning user errors into one clear line."""
    try:
        app()  # MedsegGroup.main moves --debug/--version given after the command to the front
    except SystemExit as done:
        if _state.get("exit_now") and not done.code:  # a finished `medseg train`: its time budget includes
            from medseg.engine.budget import exit_now  # the exit, and tearing torch down takes seconds

            exit_now()
        raise
    except MedsegError as err:
        if _state["debug"]:
            raise
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
