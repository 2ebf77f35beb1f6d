"""The array contract of :meth:`medseg.inference.Predictor.predict`: what an in-memory image may be.

Accepted, and how each is turned into the HxWx3 uint8 RGB image the model sees:

============================  ======================================================================
shape                         ``(H, W)`` grey, ``(H, W, 1)`` grey, ``(H, W, 3)`` colour, ``(H, W, 4)``
                              colour + alpha (alpha dropped); grey is repeated to three channels
channel order (colour)        RGB by default; ``channel_order="bgr"`` for OpenCV (``cv2.imread``) arrays
uint8                         0..255, used as is
uint16                        scaled to 0..255 by the bit depth (value / 257), exactly as 16-bit
                              image files are read (:mod:`medseg.io.images`); never stretched by
                              the array's own minimum and maximum
float16 / float32 / float64   values in [0, 1] (as from ``skimage`` or ``torchvision``), scaled by 255
                              and rounded
============================  ======================================================================

Refused with a :class:`~medseg.errors.MedsegError` saying what to do: floats outside [0, 1] (a float
array holding 0..255 would otherwise be clipped to white), NaN or infinity, bool, signed or other
integer dtypes, any other shape, and empty images. Nothing is guessed: the colour order in
particular cannot be detected from the pixels, so BGR must be declared.
"""

from __future__ import annotations

import numpy as np

from medseg.errors import MedsegError

CHANNEL_ORDERS = ("rgb", "bgr")


def as_rgb_uint8(image: np.ndarray, channel_order: str = "rgb") -> np.ndarray:
    """``image`` as a C-contiguous HxWx3 uint8 RGB array, following the module's table.

    Raises MedsegError for an unknown ``channel_order`` or an array outside the contract.
    """
    order = str(channel_order).lower()
    if order not in CHANNEL_ORDERS:
        raise MedsegError(f"channel_order must be 'rgb' or 'bgr' (OpenCV), not {channel_order!r}")
    arr = np.asarray(image)
    shape_ok = arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] in (1, 3, 4))
    if not shape_ok and arr.ndim == 3 and arr.shape[0] in (1, 3, 4):
        raise MedsegError(f"the image array has shape {arr.shape}, channels first (C, H, W as in PyTorch); pass "
                          "image.transpose(1, 2, 0) for (H, W, C)")
    if not shape_ok:
        raise MedsegError(f"expected an image array of shape (H, W), (H, W, 1), (H, W, 3) or (H, W, 4), got "
                          f"shape {arr.shape}; a batch goes to predict_batch as a list of images")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise MedsegError(f"the image array is empty (shape {arr.shape})")
    arr = _to_uint8(arr)
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.shape[2] == 1:
        return np.ascontiguousarray(np.repeat(arr, 3, axis=2))
    return np.ascontiguousarray(arr[..., 2::-1] if order == "bgr" else arr[..., :3])  # alpha dropped


def _to_uint8(arr: np.ndarray) -> np.ndarray:
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == np.uint16:
        from medseg.io.images import _scale_to_uint8

        return _scale_to_uint8(arr)
    if arr.dtype == np.bool_:
        raise MedsegError("the image array is bool (a mask?); pass the image itself as uint8 0..255 or float "
                          "0..1")
    if np.issubdtype(arr.dtype, np.floating):
        if not np.isfinite(arr).all():
            raise MedsegError("the float image array holds NaN or infinite values")
        lo, hi = float(arr.min()), float(arr.max())
        if lo < 0.0 or hi > 1.0:
            hint = (" it looks like 0..255 data: pass image.astype(np.uint8)" if hi <= 255.0 and lo >= 0.0
                    else " rescale it to [0, 1] (or to uint8 0..255) first")
            raise MedsegError(f"float image arrays must hold values in [0, 1]; this one spans {lo:g}..{hi:g};"
                              f"{hint}")
        return np.rint(arr.astype(np.float64) * 255.0).astype(np.uint8)
    raise MedsegError(f"image arrays must be uint8 (0..255), uint16 or float in [0, 1], not {arr.dtype}; "
                      "convert with image.astype(np.uint8) when the values are 0..255")
