"""Import torchvision even when its C extension cannot load.

PyPI's torchvision wheels are CUDA builds. Next to a CPU build of torch, the extension ``_C.so``
fails to load and ``import torchvision`` dies while registering a fake kernel for the missing
``torchvision::nms`` operator (pytorch/vision#9085). timm and segmentation-models-pytorch import
torchvision, so medseg calls :func:`import_torchvision` once, before importing them.

Only when the import really fails with that error do we define the schemas of the two operators
that ``torchvision._meta_registrations`` decorates (``nms``, ``qnms``) and import again. The
operators then exist without kernels: calling them raises, but nothing in medseg calls them (they
serve object detection). Everything else in torchvision is pure Python and works.
"""

from __future__ import annotations

import importlib
import logging
import sys
from types import ModuleType

log = logging.getLogger(__name__)

#: True once the schemas were defined because the extension failed to load.
TORCHVISION_SHIMMED = False
_LIBRARY = None  # keeps the torch.library.Library fragment alive

_SCHEMAS = ("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
            "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")


def _forget_partial_import() -> None:
    for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        del sys.modules[name]


def _define_schemas() -> None:
    global _LIBRARY, TORCHVISION_SHIMMED
    import torch

    if _LIBRARY is None:
        _LIBRARY = torch.library.Library("torchvision", "DEF")  # noqa: TOR901 (kept alive)
        for schema in _SCHEMAS:
            _LIBRARY.define(schema)
    TORCHVISION_SHIMMED = True


def import_torchvision(importer=importlib.import_module) -> ModuleType:
    """Return the torchvision module, working around a CUDA-only extension on CPU torch."""
    try:
        return importer("torchvision")
    except RuntimeError as err:
        if not ("torchvision::" in str(err) and "does not exist" in str(err)):
            raise
        log.debug("torchvision extension did not load (%s); defining operator schemas", err)
    _forget_partial_import()
    _define_schemas()
    return importer("torchvision")
