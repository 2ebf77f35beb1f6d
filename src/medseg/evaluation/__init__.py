"""Evaluation: per-image metrics (evaluate), intervals and paired tests (stats), surface distances
(surface), threshold-free pixel scores (pixel_scores), the failure flag (qc), run comparison (compare)
and the HTML report (report)."""

from medseg.evaluation.evaluate import evaluate

__all__ = ["evaluate"]
