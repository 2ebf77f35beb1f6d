"""medseg: 2D medical image segmentation, from raw files to a trained, evaluated model.

Public API::

    import medseg
    run = medseg.train("data/isic", "runs/isic", time_budget=20)  # trains, returns the run folder
    summary = medseg.evaluate("runs/isic", "data/isic")             # metrics on the validation split
    planned = medseg.plan("data/isic", budget_min=20)               # fingerprint + machine -> config
    planned.write("plan.yaml")                                      # plan YAML + plan_report.md
    predictor = medseg.load("runs/isic")                            # run folder, checkpoint or exported .onnx
    mask = predictor.predict("ISIC_0000001.jpg")                    # HxW uint8 {0, 255}, the input's size
"""

import typing as _typing
from pathlib import Path as _Path

if _typing.TYPE_CHECKING:
    from pathlib import Path

    from medseg.config import Config
    from medseg.data.source import DataSource
    from medseg.inference.predictor import Predictor

from medseg._version import __version__

__all__ = ["__version__", "evaluate", "load", "plan", "train"]


def __getattr__(name: str):
    if name == "plan":  # the package medseg.plan is callable: medseg.plan(DATA, budget_min=20)
        import medseg.plan

        return medseg.plan
    raise AttributeError(f"module 'medseg' has no attribute {name!r}")


def load(path: "str | Path", *, precision: str = "auto", device: "str | None" = None, channels_last: str = "auto",
         threads: "int | None" = None, overrides: "list[str] | dict | None" = None) -> "Predictor":
    """Load a trained model as a :class:`~medseg.inference.predictor.Predictor`.

    Args:
        path: a run folder (its ``best.pt``), a checkpoint file (``.pt``) or an exported ``.onnx`` file.
        precision: PyTorch only: ``auto`` (bf16 on CPUs with native bf16, fp16 on CUDA, else fp32),
            ``bf16``, ``fp16`` or ``fp32``.
        device: ``cpu``, ``cuda``, ``cuda:1``...; default: CUDA when available, else CPU.
        channels_last: ``auto``, ``on`` or ``off`` (PyTorch memory format).
        threads: ONNX Runtime intra-op threads (default: all cores).
        overrides: inference settings, e.g. ``["infer.tta=true", "infer.threshold=0.4"]``.

    Returns:
        A Predictor: ``predict(image)`` gives an HxW uint8 mask at the image's own size (0/255, or class
        indices 0..K-1 for K classes); ``predict_proba(image)`` float32 probabilities in [0, 1]. Images
        are file paths or arrays (HxW or HxWx3 RGB; uint8, uint16, or float in [0, 1]; see
        ``Predictor.predict``).

    Raises:
        CheckpointError: ``path`` does not exist or is not a medseg run, checkpoint or export.
        ConfigError: an override names an unknown key or an invalid value.

    Example::

        predictor = medseg.load("runs/isic", overrides=["infer.tta=true"])
        mask = predictor.predict(np.asarray(PIL.Image.open("x.jpg")))   # HxW uint8 0/255
    """
    from medseg.inference.predictor import Predictor

    return Predictor.load(path, precision=precision, device=device, channels_last=channels_last, threads=threads,
                          overrides=overrides)


def train(data: "DataSource | str | Path | None", out: "str | Path", *, config: "Config | str | Path | None" = None,
          overrides: "list[str] | dict | None" = None, time_budget: "float | None" = None,
          epochs: "int | None" = None, resume: bool = False, overwrite: bool = False, progress: bool = True) -> _Path:
    """Train a segmentation model on a data folder into the run folder ``out``.

    Args:
        data: a data folder (``images/`` + ``masks/``, ISIC folders, ``manifest.csv``; see
            ``medseg data check``), or a :class:`~medseg.data.source.DataSource` (two folders, a manifest).
        out: the run folder; it receives ``best.pt``, ``last.pt``, ``config.yaml``, ``metrics.csv``,
            ``curves.png``, ``splits.csv``, ``data_report.txt`` and ``data_source.json``. It is created
            only once the configuration and the data have been checked.
        config: a preset name (``medseg presets``; default ``default``), a YAML file (a Path, or a str
            ending in ``.yaml``: a run's ``config.yaml``, a hand-written file, or the output of
            ``medseg plan``), or a :class:`~medseg.config.Config`.
        overrides: ``["optim.lr=3e-4", ...]`` (or a nested dict) over it.
        time_budget: minutes; training stops cleanly at the budget and keeps the best model.
        epochs: maximum number of epochs (the default config: 100, with early stopping).
        resume: continue the run in ``out`` from its ``last.pt`` (with its own config and ``overrides``);
            ``overwrite``: replace it.
        progress: show progress bars.

    Returns:
        ``out`` as a Path.

    Raises:
        ConfigError: an unknown preset, key, architecture, encoder or loss (with the valid names),
            before any data is read. DataError: missing data, or no usable pair.
        CheckpointError: ``out`` already holds a run and neither ``resume`` nor ``overwrite`` is set.

    Example::

        run = medseg.train("data/isic", "runs/isic", time_budget=20, overrides=["model.encoder=resnet18"])
        from medseg.data.source import DataSource
        source = DataSource(images="isic/Input", masks="isic/GroundTruth")
        run = medseg.train(source, "runs/planned", config="plan.yaml")   # a `medseg plan` output
    """
    from medseg.config import parse_overrides
    from medseg.engine.train import train as _train
    from medseg.inference.postprocess_tuning import tune_after_training

    over = dict(overrides) if isinstance(overrides, dict) else parse_overrides(list(overrides or []))
    if extra := {k: v for k, v in (("epochs", epochs), ("time_budget_min", time_budget)) if v is not None}:
        over["train"] = {**over.get("train", {}), **extra}
    return _train(data, out, config=config, overrides=over, resume=resume, overwrite=overwrite, progress=progress,
                  finish=tune_after_training)


def evaluate(run: "str | Path", data: "DataSource | str | Path | None" = None, *, split: str = "val",
             out: "str | Path | None" = None, overlays: "int | str" = 0, overrides: "list[str] | None" = None,
             progress: bool = True) -> dict:
    """Evaluate a trained run on the images of one split, at each image's original size.

    Args:
        run: a run folder or checkpoint (or exported ``.onnx``).
        data: the data folder or a :class:`~medseg.data.source.DataSource`; default: the data the run
            was trained on (``RUN/data_source.json``).
        split: ``val`` (default), ``test``, ``train`` or ``all``.
        out: the results folder (default ``RUN/eval_<split>``): ``per_image.csv`` and ``summary.json``.
        overlays: 0 (default) none; N: overlays of the N worst images by Dice; ``"all"``: every image;
            written to ``out/overlays/``.
        overrides: inference settings, e.g. ``["infer.threshold=0.4"]``.

    Returns:
        The summary dict: ``dice``, ``iou``, ``sensitivity``, ``specificity``, ``precision``,
        ``accuracy``, ``thresholded_jaccard`` (ISIC 2018), ``failure_rate`` (means over images, in
        [0, 1]), ``n_images``; ``per_class`` for multi-class runs.

    Raises:
        DataError: no data given or recorded, or no image in the split. CheckpointError: a bad run.

    Example::

        summary = medseg.evaluate("runs/isic", split="val", overlays=16)
        print(summary["dice"], summary["n_images"])
    """
    from medseg.evaluation import evaluate as _evaluate

    return _evaluate(run, data, split=split, out=out, overlays=overlays, overrides=overrides, progress=progress)


def __dir__() -> list[str]:
    return sorted(__all__)
