"""Dense CRF refinement of a foreground probability map (optional: ``pip install 'medseg[crf]'``).

Uses pydensecrf2, the maintained fork of pydensecrf (Krähenbühl and Koltun's fully connected CRF;
the original package no longer builds with current Cython). It ships as source only, so it needs
a C++ compiler and is an optional extra rather than a dependency.

The CRF runs on the image and the probabilities at a working resolution of at most ``max_side``
pixels (the refined map is resized back), so its cost stays bounded on multi-megapixel photos.
Kernels follow the DeepLab settings (appearance: spatial 80 px at 500 px, colour 13, weight 10;
smoothness: 3 px, weight 3), with spatial widths scaled to the working resolution.
"""

from __future__ import annotations

import cv2
import numpy as np

from medseg.errors import MedsegError


def crf_available() -> bool:
    try:
        import pydensecrf.densecrf  # noqa: F401
    except ImportError:
        return False
    return True


def crf_refine(image: np.ndarray, proba: np.ndarray, *, iterations: int = 5, max_side: int = 512) -> np.ndarray:
    """Refined foreground probabilities (HxW float32) for an RGB uint8 image and its HxW probabilities."""
    try:
        import pydensecrf.densecrf as dcrf
        from pydensecrf.utils import unary_from_softmax
    except ImportError:
        raise MedsegError("infer.crf needs pydensecrf2: pip install 'medseg[crf]' (a C++ compiler is "
                          "required), or set infer.crf=false") from None
    h, w = proba.shape
    scale = min(1.0, max_side / max(h, w))
    wh, ww = max(1, round(h * scale)), max(1, round(w * scale))
    if scale < 1.0:
        image, proba = (cv2.resize(a, (ww, wh), interpolation=cv2.INTER_AREA) for a in (image, proba))
    p = np.clip(proba.astype(np.float32), 1e-5, 1 - 1e-5)
    crf = dcrf.DenseCRF2D(ww, wh, 2)
    crf.setUnaryEnergy(np.ascontiguousarray(unary_from_softmax(np.stack([1 - p, p]))))
    crf.addPairwiseGaussian(sxy=3, compat=3)
    crf.addPairwiseBilateral(sxy=max(8.0, 80 * max(wh, ww) / 500), srgb=13,
                             rgbim=np.array(image[..., :3], dtype=np.uint8, order="C"), compat=10)
    refined = np.asarray(crf.inference(iterations), dtype=np.float32).reshape(2, wh, ww)[1]
    if scale < 1.0:
        refined = cv2.resize(refined, (w, h), interpolation=cv2.INTER_LINEAR)
    return refined
