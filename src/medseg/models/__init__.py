"""Model families, registered explicitly; ``create_model(cfg.model)`` builds one."""

from __future__ import annotations

from medseg.models.factory import MODELS, create_model, model_summary

__all__ = ["MODELS", "create_model", "model_summary"]
