"""The Predictor: letterbox -> normalise -> model -> sigmoid -> back to the original size -> threshold.

Used by ``medseg predict``, ``medseg.load``, evaluation and (later) export checks and the server, so
a mask is computed one way everywhere.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from medseg.config import Config, validate
from medseg.data.geometry import letterbox, unletterbox
from medseg.data.transforms import normalize_batch
from medseg.engine.checkpoint import load_checkpoint
from medseg.engine.runtime import Runtime, resolve_runtime
from medseg.errors import MedsegError
from medseg.io.images import IMAGE_SUFFIXES, read_image, write_png
from medseg.models import create_model

log = logging.getLogger(__name__)


@dataclass
class FolderResult:
    written: list[Path] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)


def list_images(path: Path) -> list[Path]:
    """``path`` itself when it is a file, else the image files directly inside the folder (sorted)."""
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise MedsegError(f"input {path} does not exist; give an image file or a folder of images")
    files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                   and not p.name.startswith("."))
    if not files:
        raise MedsegError(f"folder {path} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return files


class Predictor:
    """A trained model with its preprocessing and postprocessing."""

    def __init__(self, model: torch.nn.Module, config: Config, runtime: Runtime | None = None,
                 source: str = "") -> None:
        self.config = config
        self.runtime = runtime or resolve_runtime("auto", "auto")
        self.model = model.to(self.runtime.device, memory_format=self.runtime.memory_format()).eval()
        self.source = source
        self.size = config.data.image_size
        self.threshold = config.infer.threshold
        self.mean_std = config.data.mean_std

    @classmethod
    def load(cls, path: str | Path, *, precision: str = "auto", device: str | None = None) -> Predictor:
        """From a run folder (best.pt) or a checkpoint file."""
        ckpt = load_checkpoint(path)
        cfg = validate(ckpt["config"])
        model = create_model(cfg.model, load_weights=False)
        model.load_state_dict(ckpt["model"])
        return cls(model, cfg, resolve_runtime(precision, "auto", device), source=ckpt["path"])

    # ------------------------------------------------------------------ core
    @torch.inference_mode()
    def predict_proba_batch(self, images: list[np.ndarray]) -> list[np.ndarray]:
        """Foreground probability maps (float32, each image's own HxW) for RGB uint8 images."""
        boxed = [letterbox(img, self.size) for img in images]
        batch = torch.from_numpy(np.stack([b[0] for b in boxed])).permute(0, 3, 1, 2)
        rt = self.runtime
        x = normalize_batch(batch, *self.mean_std).to(rt.device, memory_format=rt.memory_format())
        with rt.autocast():
            logits = self.model(x)
        probs = torch.sigmoid(logits.float())[:, 0].cpu().numpy()
        return [unletterbox(p, box) for p, (_, box) in zip(probs, boxed, strict=True)]

    def predict_proba(self, image: np.ndarray | str | Path) -> np.ndarray:
        return self.predict_proba_batch([self._as_array(image)])[0]

    def predict(self, image: np.ndarray | str | Path) -> np.ndarray:
        """Binary mask (uint8, 0 or 255) at the input's own size."""
        return self.to_mask(self.predict_proba(image))

    def to_mask(self, proba: np.ndarray) -> np.ndarray:
        return np.where(proba > self.threshold, 255, 0).astype(np.uint8)

    @staticmethod
    def _as_array(image: np.ndarray | str | Path) -> np.ndarray:
        if isinstance(image, (str, Path)):
            return read_image(Path(image))
        arr = np.asarray(image)
        if arr.ndim == 2:
            arr = np.repeat(arr[..., None], 3, axis=2)
        if arr.ndim != 3 or arr.shape[2] not in (3, 4):
            raise MedsegError(f"expected an HxW or HxWx3 image array, got shape {arr.shape}")
        return np.ascontiguousarray(arr[..., :3]).astype(np.uint8, copy=False)

    # ------------------------------------------------------------------ streaming over files
    def iter_predictions(self, files: Iterable[Path], *, batch_size: int | None = None,
                         on_error=None) -> Iterator[tuple[Path, np.ndarray, np.ndarray]]:
        """Yield (path, image, probability map) for readable files, reading ahead in a thread.

        Memory holds at most two batches whatever the number of files; unreadable files go to
        ``on_error(path, message)`` and are skipped.
        """
        bs = batch_size or self.config.infer.batch_size
        files = list(files)
        chunks = [files[i : i + bs] for i in range(0, len(files), bs)]

        def read_chunk(chunk: list[Path]) -> list[tuple[Path, np.ndarray | None, str]]:
            out = []
            for path in chunk:
                try:
                    out.append((path, read_image(path), ""))
                except MedsegError as err:
                    out.append((path, None, str(err)))
            return out

        with ThreadPoolExecutor(max_workers=1) as reader:
            pending = reader.submit(read_chunk, chunks[0]) if chunks else None
            for i in range(len(chunks)):
                loaded = pending.result()
                pending = reader.submit(read_chunk, chunks[i + 1]) if i + 1 < len(chunks) else None
                good = [(p, img) for p, img, _ in loaded if img is not None]
                for p, img, err in loaded:
                    if img is None and on_error:
                        on_error(p, err)
                if good:
                    for (path, img), proba in zip(good, self.predict_proba_batch([g[1] for g in good]),
                                                  strict=True):
                        yield path, img, proba

    def predict_folder(self, source: str | Path, out_dir: str | Path, *, overlay: bool = False,
                       progress: bool = True) -> FolderResult:
        """Write ``<stem>.png`` masks (and ``<stem>_overlay.png``) for an image or a folder."""
        from medseg.inference.overlay import make_overlay

        files = list_images(Path(source))
        out_dir = Path(out_dir)
        result = FolderResult()

        def failed(path: Path, message: str) -> None:
            result.failed.append((path, message))
            log.warning("skipped %s", message)

        bar = tqdm(total=len(files), desc="predicting", unit="img", disable=not progress)
        with ThreadPoolExecutor(max_workers=1) as writer:
            writes = []
            for path, image, proba in self.iter_predictions(files, on_error=failed):
                mask = self.to_mask(proba)
                target = out_dir / f"{path.stem}.png"
                writes.append(writer.submit(write_png, target, mask))
                if overlay:
                    writes.append(writer.submit(write_png, out_dir / f"{path.stem}_overlay.png",
                                                make_overlay(image, mask)))
                result.written.append(target)
                bar.update(1)
                if len(writes) > 32:  # keep the write queue (and memory) bounded
                    writes.pop(0).result()
            for w in writes:
                w.result()
        bar.update(len(result.failed))
        bar.close()
        return result
