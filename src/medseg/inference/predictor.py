"""The Predictor: one path from an image to a mask, used everywhere.

image -> letterbox (or sliding windows for much larger images) -> backend (PyTorch or ONNX Runtime:
normalise, network, sigmoid) -> [TTA: flips and scales averaged] -> back to the original size ->
[dense CRF] -> threshold -> post-processing. ``medseg predict``, ``medseg.load``, evaluation, export checks and the
server all go through it, so a mask is computed one way everywhere, whichever backend runs the network.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Generic, TypeVar

import numpy as np

from medseg.config import Config, build_config, validate
from medseg.data.geometry import letterbox, unletterbox
from medseg.data.layouts import Pair
from medseg.data.readers import read_pair_image
from medseg.engine.checkpoint import load_checkpoint
from medseg.engine.runtime import Runtime, resolve_runtime
from medseg.errors import CheckpointError, ConfigError, MedsegError
from medseg.inference.arrays import as_rgb_uint8
from medseg.inference.backends import OnnxBackend, TorchBackend
from medseg.inference.ensemble import average_members, trained_folds
from medseg.inference.postprocess import Postprocess
from medseg.inference.sliding import choose_mode, describe_input, sliding_predict
from medseg.inference.tta import MemberStats, TTAPlan, classes_last, flip_members, model_side
from medseg.io.formats import image_suffixes, is_image_file, read_image
from medseg.io.images import write_png
from medseg.io.outputs import BatchResult, check_outputs
from medseg.progress import progress_bar

log = logging.getLogger(__name__)
T = TypeVar("T")

#: Pixels of decoded images read ahead, or waiting to be written, beyond the one in hand (a 4000x3000
#: photo and a little more): folders of large images keep memory bounded like folders of small ones.
_CHUNK_PIXELS = 16_000_000


def output_paths(source: Path, out_dir: Path, *, overlay: bool = False, uncertainty: bool = False) -> list[Path]:
    """The files :meth:`Predictor.predict_folder` writes for ``source``: the mask first, then the extras.

    Give every ``(input, output)`` of a run to :func:`medseg.io.outputs.check_outputs` before writing, so
    that no input is overwritten and no two inputs share an output.
    """
    names = [f"{source.stem}.png"]
    names += [f"{source.stem}_overlay.png"] if overlay else []
    names += [f"{source.stem}_uncertainty.png"] if uncertainty else []
    return [Path(out_dir) / n for n in names]


@dataclass
class Prediction(Generic[T]):
    """One item's result: its image (RGB uint8 HxWx3), probabilities (float32 HxW, or HxWxC for several
    classes) and, on request, the per-pixel standard deviation over TTA members; or the one-sentence
    ``error`` that kept the item from being read (image and proba None)."""

    item: T
    image: np.ndarray | None
    proba: np.ndarray | None = None
    uncertainty: np.ndarray | None = None
    error: str | None = None


def list_images(path: Path) -> list[Path]:
    """``path`` itself when it is a file, else the image files directly inside the folder (sorted)."""
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise MedsegError(f"input {path} does not exist; give an image file or a folder of images")
    files = sorted(p for p in path.iterdir() if p.is_file() and is_image_file(p)
                   and not p.name.startswith("."))
    if not files:
        raise MedsegError(f"folder {path} holds no images ({', '.join(sorted(image_suffixes()))})")
    return files


class Predictor:
    """A trained model with its preprocessing and postprocessing, on a PyTorch or ONNX Runtime backend.

    ``config`` decides everything after the network: letterbox or sliding windows (``infer.mode``),
    test-time augmentation (``infer.tta``), threshold and post-processing. With ``members`` (the folds
    of a CV run) the probabilities are the members' mean (:mod:`medseg.inference.ensemble`).
    """

    def __init__(self, backend: TorchBackend | OnnxBackend, config: Config, source: str = "",
                 members: list[Predictor] | None = None) -> None:
        self.backend = backend
        self.config = config
        self.source = source
        self.members = members or []

    @classmethod
    def load(cls, path: str | Path, *, precision: str = "auto", device: str | None = None,
             channels_last: str = "auto", threads: int | None = None,
             overrides: list[str] | dict[str, Any] | None = None) -> Predictor:
        """From a run folder (best.pt), a checkpoint file, an exported ``.onnx`` file, or a cross-validation
        run folder (``cv.json``: the folds' probabilities averaged, :mod:`medseg.inference.ensemble`).

        ``precision``/``channels_last``/``device`` choose the PyTorch runtime (auto: bf16 + channels_last
        on CPUs with native bf16); ``overrides`` change inference settings, e.g. ``["infer.tta=true"]``.
        Raises :class:`ConfigError` for an override outside ``infer.*``: the input size, normalisation and
        network were fixed by training, and changing them silently would make another model.
        """
        path = Path(path)
        if path.is_dir() and (path / "cv.json").is_file():  # a cross-validation run: its folds, averaged
            folds, chosen = trained_folds(path)
            members = [cls.load(f, precision=precision, device=device, channels_last=channels_last,
                                threads=threads, overrides=chosen + list(overrides or [])) for f in folds]
            return cls(members[0].backend, members[0].config, source=str(path), members=members)
        if path.suffix.lower() == ".onnx":
            if not path.is_file():
                raise CheckpointError(f"{path} does not exist; give a run folder, a checkpoint or an exported "
                                      ".onnx file")
            backend: TorchBackend | OnnxBackend = OnnxBackend(path, threads=threads)
            cfg, source = backend.config, str(path)
        else:
            from medseg.models import create_model

            ckpt = load_checkpoint(path)
            cfg = validate(ckpt["config"])
            net = create_model(cfg.model, load_weights=False)
            net.load_state_dict(ckpt["model"])
            backend = TorchBackend(net, cfg, resolve_runtime(precision, channels_last, device))
            source = ckpt["path"]
        predictor = cls(backend, cfg, source=source)
        return predictor.with_overrides(overrides) if overrides else predictor

    def with_overrides(self, overrides: list[str] | dict[str, Any]) -> Predictor:
        """A new Predictor on the same backend (weights shared, nothing reloaded) whose config is this one's
        with ``overrides`` applied (``["infer.crf=false"]``); this Predictor and its config are unchanged.

        Raises :class:`~medseg.errors.ConfigError` for an unknown key, an invalid value, or a key outside
        ``infer.*``: the input size, normalisation and network were fixed by training, and changing them
        would make another model.
        """
        _refuse_training_keys(overrides, Path(self.source or "this model"))
        new = copy.copy(self)
        new.config = build_config(base=self.config.model_dump(mode="json"), overrides=overrides)
        new.members = [m.with_overrides(overrides) for m in self.members]
        return new

    @property
    def size(self) -> int:
        """The network's input side in pixels (``data.image_size``)."""
        return self.config.data.image_size

    @property
    def runtime(self) -> Runtime | None:
        """The PyTorch runtime (device, precision, memory format); None for ONNX Runtime."""
        return getattr(self.backend, "runtime", None)

    @property
    def plan(self) -> TTAPlan:
        return TTAPlan.from_config(self.config.infer)

    @property
    def threshold(self) -> float:
        return self.config.infer.threshold

    @property
    def postprocess(self) -> Postprocess:
        return Postprocess.from_config(self.config.infer)

    def __repr__(self) -> str:
        m, k = self.config.model, self.config.model.classes
        classes = "binary" if k == 1 else f"{k} classes"
        backend = self.backend.describe()
        return (f"Predictor({m.arch}/{m.encoder}, {classes}, {describe_input(self.config)}, "
                f"threshold {self.threshold:g}, {backend}, from {self.source or '?'})")

    def describe(self) -> str:
        if self.members:
            return f"ensemble of {len(self.members)} folds ({self.members[0].describe()})"
        tta = f", TTA x{self.plan.members(self.backend.flips)}" if self.plan.members(self.backend.flips) > 1 else ""
        return f"{self.backend.describe()}{tta}; {self.postprocess.describe()}"

    # ------------------------------------------------------------------ core
    def _letterbox_batch(self, images: list[np.ndarray], want_std: bool) -> list[tuple[np.ndarray, Any]]:
        stats = [MemberStats(want_std) for _ in images]
        flips = () if self.backend.flips else self.plan.flips
        for scale in self.plan.scales:
            side = model_side(self.size, scale)
            boxed = [letterbox(img, side) for img in images]
            members = flip_members(self.backend, np.stack([b[0] for b in boxed]), flips,
                                   max_batch=self.config.infer.batch_size)
            for st, per_image, (_, box) in zip(stats, members, boxed, strict=True):
                for member in per_image:
                    st.add(unletterbox(classes_last(member), box))
        return [(st.mean(), st.std() if want_std else None) for st in stats]

    def predict_batch(self, images: list[np.ndarray], *, uncertainty: bool = False
                      ) -> list[tuple[np.ndarray, np.ndarray | None]]:
        """(probabilities, uncertainty or None) for each RGB uint8 image, at its own size."""
        if self.members:
            return average_members([m.predict_batch(images, uncertainty=uncertainty) for m in self.members],
                                   uncertainty)
        out: list[Any] = [None] * len(images)
        boxed = [i for i, img in enumerate(images) if choose_mode(*img.shape[:2], self.config) == "letterbox"]
        if boxed:
            for i, result in zip(boxed, self._letterbox_batch([images[i] for i in boxed], uncertainty),
                                 strict=True):
                out[i] = result
        for i, img in enumerate(images):
            if out[i] is None:
                out[i] = sliding_predict(img, self.backend, self.config, self.plan, want_std=uncertainty,
                                         baked_flips=self.backend.flips)
        if self.config.infer.crf:
            from medseg.inference.crf import crf_refine

            out = [(crf_refine(img, p) if p.ndim == 2 else p, u) for img, (p, u) in zip(images, out, strict=True)]
        return out

    def predict_proba_batch(self, images: list[np.ndarray | str | Path], *, channel_order: str = "rgb"
                            ) -> list[np.ndarray]:
        """Probability maps (float32, each image's own HxW; HxWxC for several classes), one per image.

        Each image is a file path or an array following the contract of :meth:`predict`.
        """
        return [p for p, _ in self.predict_batch([self._as_array(img, channel_order) for img in images])]

    def predict_proba(self, image: np.ndarray | str | Path, *, channel_order: str = "rgb") -> np.ndarray:
        """Foreground probability (HxW float32 in [0, 1]; HxWxC for several classes) at the input's size."""
        return self.predict_proba_batch([image], channel_order=channel_order)[0]

    def predict_with_uncertainty(self, image: np.ndarray | str | Path, *, channel_order: str = "rgb"
                                 ) -> tuple[np.ndarray, np.ndarray]:
        """(probabilities, per-pixel standard deviation over the TTA members); uncertainty needs TTA on."""
        return self.predict_batch([self._as_array(image, channel_order)], uncertainty=True)[0]

    def predict(self, image: np.ndarray | str | Path, *, channel_order: str = "rgb") -> np.ndarray:
        """The mask of one image, at the image's own size.

        ``image`` is a file path (any format :func:`medseg.io.formats.read_image` reads, DICOM included)
        or a numpy array:

        - shape ``(H, W)`` or ``(H, W, 1)`` grey, ``(H, W, 3)`` colour, ``(H, W, 4)`` colour + alpha
          (dropped);
        - dtype uint8 (0..255), uint16 (divided by 257, as 16-bit files are read) or float
          in [0, 1] (scaled by 255);
        - colour order RGB, or ``channel_order="bgr"`` for OpenCV arrays (the order cannot be detected).

        Anything else (floats outside [0, 1], NaN, bool, other integer dtypes or shapes) raises
        :class:`~medseg.errors.MedsegError` saying what to pass instead (:mod:`medseg.inference.arrays`).

        Returns an HxW uint8 array: 0/255 for a binary model, class indices 0..K-1 for K classes.
        """
        return self.to_mask(self.predict_proba(image, channel_order=channel_order))

    def to_mask(self, proba: np.ndarray) -> np.ndarray:
        """Threshold + post-processing (one class: uint8 0/255), or argmax class indices (several)."""
        if proba.ndim == 3:
            return np.argmax(proba, axis=2).astype(np.uint8)
        return np.where(self.postprocess(proba), np.uint8(255), np.uint8(0))  # uint8 throughout: no int64 copy

    def _as_array(self, image: np.ndarray | str | Path, channel_order: str = "rgb") -> np.ndarray:
        if isinstance(image, (str, Path)):  # grey DICOM windowed as in training (data.window)
            return read_image(Path(image), window=self.config.data.window)
        return as_rgb_uint8(image, channel_order)

    # ------------------------------------------------------------------ streaming
    def stream(self, items: Iterable[T], **kw: Any) -> Iterator[Prediction[T]]:
        """:func:`stream_predictions` with this predictor: one :class:`Prediction` per item, in order; files
        are read with the run's ``data.window`` unless ``read`` is given."""
        kw.setdefault("read", partial(read_image, window=self.config.data.window))
        return stream_predictions(self, items, **kw)

    def stream_pairs(self, pairs: Iterable[Pair], *, uncertainty: bool = False) -> Iterator[Prediction[Pair]]:
        """:meth:`stream` over data pairs (frames of multi-frame DICOM files included), DICOM images
        windowed with the run's ``data.window``; an unreadable image is logged and comes with ``error``."""
        for r in self.stream(pairs, read=partial(read_pair_image, window=self.config.data.window),
                             uncertainty=uncertainty):
            if r.error is not None:
                log.warning("skipped %s", r.error)
            yield r

    def predict_folder(self, source: str | Path | list[Path], out_dir: str | Path, *, overlay: bool = False,
                       uncertainty: bool = False, progress: bool = True, qc: bool = False) -> BatchResult:
        """Write ``<stem>.png`` masks (``<stem>_overlay.png``, ``<stem>_uncertainty.png``) for an image, a
        folder or a list of image files.

        ``qc`` (needs TTA) scores each image's member disagreement into ``result.qc``
        (:func:`medseg.inference.tta.qc_score`).

        Reading (one batch ahead), computing and writing (post-processing included) overlap; at most
        two batches wait to be written, so memory does not grow with the number of images.
        """
        files = list(source) if isinstance(source, list) else list_images(Path(source))
        out_dir = Path(out_dir)
        check_outputs([(f, p) for f in files
                       for p in output_paths(f, out_dir, overlay=overlay, uncertainty=uncertainty)], what="output")
        result = BatchResult()

        bar = progress_bar(total=len(files), desc="predicting", unit="img", enabled=progress)
        max_pending = 2 * self.config.infer.batch_size
        with ThreadPoolExecutor(max_workers=1) as writer:
            writes: list[tuple[Any, int]] = []
            for r in self.stream(files, uncertainty=uncertainty or qc):
                if r.error is not None:  # the caller reports result.failed (once)
                    result.failed.append((r.item, r.error))
                    log.debug("skipped %s", r.error)
                    continue
                target = output_paths(r.item, out_dir)[0]
                if qc:
                    from medseg.inference.tta import qc_score

                    result.qc.append((r.item.name, qc_score(r.proba, r.uncertainty, self.threshold)))
                    r.uncertainty = r.uncertainty if uncertainty else None
                pixels = r.image.shape[0] * r.image.shape[1]
                writes.append((writer.submit(self._write_outputs, r, target, overlay), pixels))
                result.written.append(target)
                bar.update(1)
                del r
                # keep the write queue (and memory) bounded, in images and in pixels
                while len(writes) > max_pending or (len(writes) > 1 and sum(n for _, n in writes) > _CHUNK_PIXELS):
                    writes.pop(0)[0].result()
            for w, _ in writes:
                w.result()
        bar.update(len(result.failed))
        bar.close()
        return result

    def _write_outputs(self, r: Prediction, target: Path, overlay: bool) -> None:
        """Binary: a 0/255 mask. Several classes: an indexed PNG (values 0..K-1, shown in the class colours)."""
        from medseg.inference.overlay import class_colours, make_overlay

        mask = self.to_mask(r.proba)
        colours = class_colours(self.config) if r.proba.ndim == 3 else None
        r.proba = None  # not needed any more: free it before the overlay (large images)
        # extras first, mask last: a mask on disk means this image's outputs are complete
        extras = output_paths(r.item, target.parent, overlay=overlay, uncertainty=r.uncertainty is not None)[1:]
        for path in extras:
            if path.name.endswith("_overlay.png"):
                write_png(path, make_overlay(r.image, mask, colours=colours))
            else:
                write_png(path, uncertainty_image(r.uncertainty))
        write_png(target, mask, palette=colours)


def stream_predictions(predictor, items: Iterable[T], *, read: Callable[[T], np.ndarray] = read_image,
                       uncertainty: bool = False, batch_size: int | None = None) -> Iterator[Prediction[T]]:
    """One :class:`Prediction` per item, in order: ``read(item)`` runs one batch ahead in a thread.

    ``items`` are image files (the default ``read``), data pairs, DICOM frames or arrays; ``read``
    returns an RGB uint8 HxWx3 array or raises :class:`~medseg.errors.MedsegError`, which gives that
    item a Prediction with ``error`` set (the stream is never shortened silently). Memory holds at
    most two batches whatever the number of items: a batch has at most ``batch_size``
    (``infer.batch_size``) images and stops early once they hold 16 megapixels. ``predictor``: anything
    with ``predict_proba_batch``, ``predict_batch`` (for ``uncertainty``) and ``config.infer.batch_size``.
    """
    bs = batch_size or predictor.config.infer.batch_size
    items = list(items)

    def read_chunk(start: int) -> tuple[list[Prediction[T]], int]:
        """Up to ``bs`` items from ``start``, fewer once their images hold _CHUNK_PIXELS (one at least)."""
        out: list[Prediction[T]] = []
        pixels, i = 0, start
        while i < len(items) and len(out) < bs and (not out or pixels < _CHUNK_PIXELS):
            item = items[i]
            i += 1
            try:
                image = read(item)
                pixels += image.shape[0] * image.shape[1]
                out.append(Prediction(item, image))
            except MedsegError as err:
                out.append(Prediction(item, None, error=str(err)))
        return out, i

    with ThreadPoolExecutor(max_workers=1) as reader:
        pending = reader.submit(read_chunk, 0) if items else None
        while pending is not None:
            loaded, next_start = pending.result()
            pending = reader.submit(read_chunk, next_start) if next_start < len(items) else None
            good = [r for r in loaded if r.error is None]
            if good:
                images = [r.image for r in good]
                if uncertainty:
                    results = predictor.predict_batch(images, uncertainty=True)
                else:
                    results = [(p, None) for p in predictor.predict_proba_batch(images)]
                del images
                for r, (proba, unc) in zip(good, results, strict=True):
                    r.proba, r.uncertainty = proba, unc
                del good, results
            for j in range(len(loaded)):
                r, loaded[j] = loaded[j], None  # the caller owns it now: memory is freed as it goes
                yield r
                del r


def uncertainty_image(std: np.ndarray) -> np.ndarray:
    """uint8 map of a probability standard deviation: 0 = members agree, 255 = std >= 0.5 (two-way split)."""
    if std.ndim == 3:
        std = std.max(axis=2)
    return np.clip(np.rint(std * 510.0), 0, 255).astype(np.uint8)


def _refuse_training_keys(overrides: list[str] | dict[str, Any], model: Path) -> None:
    """ConfigError naming the first override that is not an inference setting (``infer.*``)."""
    if isinstance(overrides, dict):
        keys = [k if "." in k or not isinstance(v, dict) else f"{k}.{next(iter(v), '')}"
                for k, v in overrides.items()]
    else:
        keys = [str(o).split("=", 1)[0].strip() for o in overrides]
    for key in keys:
        if not key.startswith("infer."):
            raise ConfigError(f"--set {key}: only inference settings (infer.*) can change when predicting with "
                              f"{model}; {key.split('.')[0]}.* was fixed when the model was trained")
