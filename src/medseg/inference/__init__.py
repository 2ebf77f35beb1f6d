"""Inference: one Predictor owns preprocessing, the model and postprocessing."""

from medseg.inference.predictor import Predictor

__all__ = ["Predictor"]
