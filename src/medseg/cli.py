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
convert_app = typer.Typer(help="Convert DICOM and annotation-tool label maps to PNG images and masks.",
                          no_args_is_help=True)
app.add_typer(convert_app, name="convert")
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
    for name, c in summary.get("per_class", {}).items():  # multi-class runs
        table.add_row(f"{name}: dice / iou", f"{c['dice']:.4f} / {c['iou']:.4f}  ({c['n_images']} img)")
    return table


# --------------------------------------------------------------------------------------------- data
@data_app.command("check")
def data_check(
    data: Annotated[Path | None, typer.Argument(help="dataset folder (images/ + masks/, ISIC, manifest.csv)")]
    = None,
    images: ImagesOpt = None,
    masks: MasksOpt = None,
    manifest: ManifestOpt = None,
    classes: Annotated[int, typer.Option(help="number of classes: 1 checks binary masks, K > 1 label maps "
                                         "0..K-1 (or colours with --palette)")] = 1,
    palette: Annotated[str | None, typer.Option(help="colour-coded masks: one R,G,B per class separated by ';', "
                                                "e.g. '0,0,0;255,0,0;0,0,255'")] = None,
) -> None:
    """Discover image/mask pairs, open every file and report each problem by file name.

    Exits with status 1 when any pair is unusable.
    """
    from medseg.data.check import check_pairs
    from medseg.data.layouts import find_pairs
    from medseg.data.readers import TargetSpec

    colours = None
    if palette:
        try:
            colours = tuple(tuple(int(v) for v in c.split(",")) for c in palette.split(";"))
        except ValueError:
            raise MedsegError(f"--palette expects R,G,B triples separated by ';', got {palette!r}") from None
        classes = max(classes, len(colours))
    index = find_pairs(data, images=images, masks=masks, manifest=manifest)
    report = check_pairs(index, progress=True, target=TargetSpec(classes, colours))
    for line in report.summary_lines():
        console.print(line, markup=False)
    if not report.ok:
        raise typer.Exit(1)


@data_app.command("fingerprint")
def data_fingerprint(
    data: Annotated[Path | None, typer.Argument(metavar="DATA", help="dataset folder (as for `data check`)")]
    = None,
    images: ImagesOpt = None,
    masks: MasksOpt = None,
    manifest: ManifestOpt = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", metavar="FILE",
                                             help="also write the fingerprint as JSON here")] = None,
    max_images: Annotated[int, typer.Option(metavar="N", help="sample at most N images (seeded)")] = 400,
    invert_masks: Annotated[bool, typer.Option("--invert-masks", help="masks mark the background "
                                               "(ISBI 2012 membranes)")] = False,
) -> None:
    """Describe a dataset in figures: sizes, modality, spacing, intensities, classes, object sizes and widths.

    The structure width (median medial-axis width of the labelled structures) tells whether images can be shrunk to a fixed size or thin structures need native resolution.

    Examples:

      medseg data fingerprint data/isic

      medseg data fingerprint data/drive --manifest data/drive/manifest.csv -o drive_fingerprint.json
    """
    import json

    from medseg.data.layouts import find_pairs
    from medseg.io.files import write_text_atomic
    from medseg.plan.fingerprint import compute_fingerprint

    index = find_pairs(data, images=images, masks=masks, manifest=manifest)
    fingerprint = compute_fingerprint(index.pairs, max_images=max_images, invert_masks=invert_masks, progress=True)
    for line in fingerprint.summary_lines():
        console.print(line, markup=False)
    if out is not None:
        write_text_atomic(out, json.dumps(fingerprint.to_dict(), indent=2) + "\n")
        console.print(f"wrote {out}")


# ------------------------------------------------------------------------------------------ convert
def _print_conversion(result, what: str, out: Path) -> None:
    console.print(f"wrote {len(result.written)} {what} to {out}")
    for note in result.notes:
        console.print(f"note: {note}", markup=False)
    for _, message in result.failed:
        console.print(f"skipped: {message}", markup=False)
    if result.failed and not result.written:
        raise typer.Exit(1)


@convert_app.command("dicom")
def convert_dicom(
    src: Annotated[Path, typer.Argument(help="a DICOM file or a folder of DICOM files/series")],
    dst: Annotated[Path, typer.Argument(help="output folder")],
    window: Annotated[str | None, typer.Option(help="file (default), auto, soft_tissue, lung, bone, brain, "
                                                  "or CENTER,WIDTH")] = None,
    bits: Annotated[int, typer.Option(help="8: windowed PNG; 16: raw stored values")] = 8,
    anonymize: Annotated[bool, typer.Option(help="replace UIDs in the sidecars by stable hashes")] = False,
) -> None:
    """One PNG per frame (<stem>.png, <stem>_f003.png) plus a .json sidecar with geometry and UIDs."""
    from medseg.convert import convert_dicom as run

    _print_conversion(run(src, dst, window=window, bits=bits, anonymize=anonymize), "images", dst)


@convert_app.command("labels")
def convert_labels(
    labels: Annotated[Path, typer.Argument(help="a DICOM SEG, NRRD/NIfTI label map or LabelMe JSON, or a folder")],
    reference: Annotated[Path, typer.Option("--reference", help="the DICOM series (or, for LabelMe, the image "
                                                               "folder) the labels annotate")],
    out: Annotated[Path, typer.Option("--out", "-o", help="output folder for mask PNGs")],
) -> None:
    """One mask PNG per annotated slice or image, named after it."""
    from medseg.convert import convert_labels as run

    _print_conversion(run(labels, reference, out), "masks", out)


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
    """Compute Dice, IoU, sensitivity, specificity, precision, accuracy and the ISIC thresholded Jaccard.

    Multi-class runs: each metric per foreground class and its mean over classes.
    """
    from medseg.evaluation import evaluate as run_eval

    if split not in ("train", "val", "test", "all"):
        raise MedsegError(f"--split must be train, val, test or all, not {split!r}")
    summary = run_eval(run, data, split=split, out=out, overlays=overlays, images=images, masks=masks,
                       manifest=manifest)
    console.print(_metrics_table(summary, f"{run} on {split} ({summary['n_images']} images)"))


# ------------------------------------------------------------------------------------------ predict
@app.command()
def predict(
    run: Annotated[Path, typer.Argument(help="run folder, checkpoint, or exported .onnx file")],
    input: Annotated[Path, typer.Argument(help="an image file or a folder of images")],
    out: Annotated[Path, typer.Option("--out", "-o", help="folder for <stem>.png masks")] = Path("predictions"),
    overlay: Annotated[bool, typer.Option(help="also write <stem>_overlay.png")] = False,
    threshold: Annotated[float | None, typer.Option(help="probability threshold (default: the run's)")]
    = None,
    fmt: Annotated[str, typer.Option("--format", help="png (a mask per image or DICOM frame), dicom-seg or "
                                                      "nifti (one per DICOM series)")] = "png",
    tta: Annotated[bool | None, typer.Option("--tta/--no-tta", help="test-time augmentation: average over "
                                               "flips and scales 0.75/1/1.25 (default: the run's infer.tta)")]
    = None,
    uncertainty: Annotated[bool, typer.Option(help="also write <stem>_uncertainty.png: disagreement between "
                                                 "TTA members (std of probabilities x 510); turns TTA on")]
    = False,
    set_: Annotated[list[str] | None, typer.Option("--set", help="override an inference setting, e.g. "
                                                      "--set infer.mode=sliding (repeatable)")] = None,
) -> None:
    """Write a {0,255} mask PNG at each input's own size; unreadable files are reported and skipped."""
    from medseg.inference.predictor import Predictor
    from medseg.inference.series_output import is_dicom_input, predict_dicom

    overrides = list(set_ or [])
    if threshold is not None:
        overrides.append(f"infer.threshold={threshold}")
    if tta is not None or uncertainty:
        overrides.append(f"infer.tta={'true' if (tta or uncertainty) else 'false'}")
    predictor = Predictor.load(run, overrides=overrides)
    if fmt != "png" or is_dicom_input(input):  # DICOM goes series by series
        result = predict_dicom(predictor, input, out, fmt=fmt)
    else:
        result = predictor.predict_folder(input, out, overlay=overlay, uncertainty=uncertainty)
    console.print(f"wrote {len(result.written)} masks to {out} ({predictor.describe()})", markup=False)
    for path, message in result.failed:
        console.print(f"skipped {path.name}: {message}", markup=False)
    if result.failed and not result.written:
        raise typer.Exit(1)


# ----------------------------------------------------------------------------- export / post-process
@app.command()
def export(
    run: Annotated[Path, typer.Argument(help="run folder or checkpoint")],
    out: Annotated[Path, typer.Option("--out", "-o", help="the .onnx file to write")],
    format: Annotated[str, typer.Option("--format", help="export format (onnx)")] = "onnx",
    int8: Annotated[bool, typer.Option("--int8", help="static int8 quantisation calibrated on training images; "
                                       "refused when validation Dice drops by more than 0.005 (needs --data)")]
    = False,
    tta: Annotated[bool, typer.Option("--tta", help="bake flip test-time augmentation into the graph")] = False,
    data: Annotated[Path | None, typer.Option("--data", help="the run's data folder: validation images for "
                                              "the parity check, training images for int8 calibration")] = None,
    calibration: Annotated[int, typer.Option(help="number of training images for int8 calibration")] = 64,
    images: ImagesOpt = None,
    masks: MasksOpt = None,
    manifest: ManifestOpt = None,
) -> None:
    """Export one ONNX graph (normalisation, network, optional flip TTA, sigmoid) checked against PyTorch.

    Batch, height and width are dynamic; the config travels in the file's metadata, so the .onnx
    alone works with `medseg predict`. The export is refused when its masks agree with PyTorch's on
    less than 99.9 % of pixels.
    """
    from medseg.export import export_onnx

    if format != "onnx":
        raise MedsegError(f"--format {format!r} is not supported; use --format onnx")
    report = export_onnx(run, out, tta=tta, int8=int8, data=data, images=images, masks=masks, manifest=manifest,
                         calibration=calibration)
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
def tune_postprocess(
    run: Annotated[Path, typer.Argument(help="run folder or checkpoint (the choice is stored in it)")],
    data: Annotated[Path | None, typer.Argument(help="the run's data folder, with masks")] = None,
    split: Annotated[str, typer.Option(help="split to tune on (val, or test/train/all)")] = "val",
    dry_run: Annotated[bool, typer.Option("--dry-run", help="report without storing the choice")] = False,
    images: ImagesOpt = None,
    masks: MasksOpt = None,
    manifest: ManifestOpt = None,
) -> None:
    """Tune threshold, largest component, hole filling and small-object removal on validation Dice.

    Keeps only the steps that improve validation Dice (as nnU-Net does) and stores them in the run's
    checkpoint config and config.yaml, so predict, evaluate and export use them.
    """
    from medseg.inference.tuning import tune_postprocess as run_tuning

    result = run_tuning(run, data, split=split, images=images, masks=masks, manifest=manifest, store=not dry_run)
    table = Table(title=f"post-processing on {split} ({result['n_images']} images)")
    for col in ("step", "setting", "Dice", "kept"):
        table.add_column(col)
    for t in result["trials"]:
        table.add_row(t["step"], t["setting"], f"{t['dice']:.4f}", "yes" if t["kept"] else "no")
    console.print(table)
    stored = "" if dry_run else f" (stored in {result['stored_in']})"
    console.print(f"Dice {result['dice_before']:.4f} -> {result['dice_after']:.4f}: {result['setting_after']}{stored}",
                  markup=False)


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
def models(
    size: Annotated[int, typer.Option(help="input side (px) for GFLOPs")] = 256,
    classes: Annotated[int, typer.Option(help="output classes (1 = binary)")] = 1,
    arch: Annotated[str | None, typer.Option(help="only this architecture")] = None,
    encoder: Annotated[str | None, typer.Option(help="encoder instead of each architecture's default")] = None,
    encoders: Annotated[str | None, typer.Option(help="list encoder names matching a glob, e.g. '*convnext*'")] = None,
    download: Annotated[str | None, typer.Option(help="fetch this encoder's ImageNet weights now (e.g. resnet34, "
                                                 "tu-convnext_tiny) so that training works offline later")] = None,
    to: Annotated[Path | None, typer.Option(help="with --download: also save the weights to this file, to copy "
                                            "to an offline machine and use as --set model.encoder_weights=FILE")]
    = None,
) -> None:
    """List the architectures with parameters and GFLOPs (any SMP encoder or tu-<timm> name works)."""
    from medseg.models.summary import architecture_rows, encoder_names

    if download is not None:
        from medseg.models.weights import download_weights

        path = download_weights(download, to)
        console.print(f"ImageNet weights of {download}: {path}\n"
                      f"use: --set model.encoder={download} --set model.encoder_weights="
                      f"{path if to else 'imagenet'}")
        return
    if to is not None:
        raise MedsegError("--to only goes with --download ENCODER")
    if encoders is not None:
        console.print("\n".join(encoder_names(encoders)) or f"no encoder matches {encoders!r}")
        return
    table = Table(title=f"architectures (model.arch) at {size}x{size}, {classes} class(es); GFLOPs count a "
                  "multiply-add as 2")
    for col in ("arch", "encoder", "params (M)", "GFLOPs", "options (model.*)", "description"):
        table.add_column(col, justify="right" if col in ("params (M)", "GFLOPs") else "left")
    for r in architecture_rows(size, classes, arch, encoder):
        table.add_row(r["arch"], r["encoder"], str(r.get("parameters_m", "-")), str(r.get("gflops", "-")),
                      r["options"], r.get("error", r["help"]))
    console.print(table)


# ------------------------------------------------------------------------------------------- serving
@app.command("dicom-listen")
def dicom_listen(
    model: Annotated[Path, typer.Argument(metavar="MODEL", help="run folder, checkpoint, or exported .onnx file")],
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
    set_: Annotated[list[str] | None, typer.Option("--set", metavar="KEY=VALUE", help="override an inference "
                    "setting, e.g. --set infer.tta=true (repeatable)")] = None,
) -> None:
    """Run a DICOM Storage SCP that answers each received series with a DICOM SEG.

    Received images are spooled to disk; a series is segmented once its association was released and
    it stayed idle for --idle-seconds, and its SEG (same study, new series) is sent to each --forward
    destination and/or written to --out. Stop with Ctrl-C or SIGTERM; the spool is kept.

    \b
    Examples:
      medseg dicom-listen runs/ct --ae-title MEDSEG --port 11112 --out segs/
      medseg dicom-listen runs/ct --host 0.0.0.0 --allow-calling PACS --forward PACS@10.0.0.5:104
      medseg dicom-listen model.onnx --forward ARCHIVE@pacs.local:11112 --idle-seconds 30 --spool /var/spool/medseg
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
