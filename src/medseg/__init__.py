"""medseg: 2D medical image segmentation, from raw files to a trained, evaluated model.

Public API::

    import medseg
    run = medseg.train("data/isic", out="runs/isic")        # trains, returns the run folder
    summary = medseg.evaluate("runs/isic", "data/isic")      # metrics on the validation split
    predictor = medseg.load("runs/isic")                     # run folder, checkpoint or exported .onnx
    mask = predictor.predict("ISIC_0000001.jpg")             # HxW uint8 {0, 255}, the input's size
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__", "load", "train", "evaluate"]


def load(path, **kwargs):
    """Load a trained model (run folder, checkpoint or exported .onnx) as a :class:`~medseg.inference.Predictor`.

    Keyword arguments go to :meth:`~medseg.inference.Predictor.load` (``precision``, ``device``,
    ``overrides=["infer.tta=true"]``, ...).
    """
    from medseg.inference.predictor import Predictor

    return Predictor.load(path, **kwargs)


def train(data, out, **kwargs):
    """Train a model on a data folder; see :func:`medseg.engine.train.train`."""
    from medseg.engine.train import train as _train

    return _train(data, out, **kwargs)


def evaluate(run, data, **kwargs):
    """Evaluate a run on a data folder; see :func:`medseg.evaluation.evaluate`."""
    from medseg.evaluation import evaluate as _evaluate

    return _evaluate(run, data, **kwargs)
