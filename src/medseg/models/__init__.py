"""Model families, registered explicitly in ``factory``; ``create_model(cfg.model)`` builds one.

Files: ``smp_arch`` (segmentation-models-pytorch architectures), ``classic_unet``, ``vgg_unet``
(transposed-conv decoder), ``pspnet`` (configurable bins), ``attention`` (CBAM), ``heads`` (deep
supervision, edge head, :class:`SegOutputs`), ``base`` (the common forward), ``freeze``, ``summary``
(parameters, GFLOPs), ``weights`` (encoder weights), and :mod:`medseg.catalog` above
them (the ``medseg models`` table, encoder names, weights download).
"""

from __future__ import annotations

from medseg.models.factory import ARCHS, MODELS, create_model, model_label
from medseg.models.freeze import freeze_encoder, unfreeze_encoder
from medseg.models.heads import SegOutputs, main_logits
from medseg.models.summary import model_summary

__all__ = ["ARCHS", "MODELS", "SegOutputs", "create_model", "freeze_encoder", "main_logits", "model_label",
           "model_summary", "unfreeze_encoder"]
