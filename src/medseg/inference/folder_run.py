"""Restartable, sharded prediction over a folder: ``medseg predict RUN FOLDER --out OUT``.

- **Restartable**: an image whose outputs are already in ``OUT`` and valid (a PNG that decodes, at the
  input's size) is skipped, so a killed run started again finishes the rest; ``--overwrite`` predicts
  every image again. Every file is written atomically (temporary file + rename), the mask last, so a
  mask on disk means the image is done; temporaries left by a killed process are removed.
- **Guarded**: ``OUT/medseg_predict.json`` records which model file (SHA-256) and which inference
  settings made the outputs; a later run with another model or other settings into the same ``OUT``
  is refused instead of silently mixing old and new masks (``--overwrite`` replaces them).
- **Sharded**: under ``torchrun --nproc-per-node N -m medseg predict ...`` rank r takes
  ``sorted(files)[r::N]``; the ranks meet once at the end (a barrier) and rank 0 reports the merged
  summary. The files written do not depend on N, on the order of work or on interruptions.
"""

from __future__ import annotations

import contextlib
import json
import logging
from pathlib import Path

from PIL import Image

from medseg.engine.distributed import DistContext, shard
from medseg.errors import MedsegError
from medseg.inference.predictor import Predictor, list_images, output_paths
from medseg.io.files import file_sha256, remove_stale_temps, write_text_atomic
from medseg.io.outputs import BatchResult, check_outputs

log = logging.getLogger(__name__)

MANIFEST = "medseg_predict.json"


def fingerprint(predictor: Predictor, *, overlay: bool, uncertainty: bool) -> dict:
    """What decides the output bytes: the model file's SHA-256 and the inference settings."""
    return {"model_sha256": file_sha256(predictor.source), "infer": predictor.config.infer.model_dump(mode="json"),
            "image_size": predictor.config.data.image_size, "overlay": overlay, "uncertainty": uncertainty}


def claim_output_folder(out: Path, stamp: dict, overwrite: bool) -> str | None:
    """Write ``OUT/medseg_predict.json``; the refusal message when OUT holds another model's outputs."""
    path = out / MANIFEST
    if path.is_file() and not overwrite:
        try:
            previous = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            previous = None
        if previous != stamp:
            return (f"{out} holds predictions made with another model or other settings ({MANIFEST}); "
                    "use --overwrite to replace them, or another --out")
        return None
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, json.dumps(stamp, indent=1, sort_keys=True) + "\n")
    return None


def is_complete(source: Path, outputs: list[Path]) -> bool:
    """Every output exists and decodes as a PNG, and the mask has the input's size (either orientation)."""
    sizes = []
    for path in outputs:
        try:
            with Image.open(path) as im:
                if im.format != "PNG":
                    return False
                sizes.append(im.size)
                im.verify()
        except Exception:  # noqa: BLE001 - missing or unreadable: predict it (again)
            return False
    try:
        with Image.open(source) as src:
            want = src.size
    except Exception:  # noqa: BLE001 - a header PIL cannot read: the decodable outputs are enough
        return True
    return sorted(sizes[0]) == sorted(want)


def predict_folder_restartable(predictor: Predictor, source: str | Path, out: str | Path, *,
                               overlay: bool = False, uncertainty: bool = False, overwrite: bool = False,
                               ctx: DistContext | None = None, progress: bool = True, qc: bool = False
                               ) -> BatchResult:
    """Predict this rank's share of ``source`` into ``out``, skipping complete outputs; the merged result.

    Every rank returns the same merged :class:`~medseg.io.outputs.BatchResult` (written, failed, skipped over all ranks;
    with ``qc`` the failure-flag scores of the images predicted now, not of those skipped).
    Raises :class:`~medseg.errors.MedsegError` when ``out`` holds another model's predictions (without
    ``overwrite``) and :class:`~medseg.errors.WriteError` when ``out`` cannot be written.
    """
    ctx = ctx or DistContext()
    out = Path(out)
    files = list_images(Path(source))  # sorted: every rank sees the same list
    # no input overwritten, no two inputs sharing an output: checked on the whole list, on every rank
    check_outputs([(f, p) for f in files for p in output_paths(f, out, overlay=overlay, uncertainty=uncertainty)],
                  what="output")
    problem = None
    created = not out.exists()
    if ctx.is_main:
        try:
            problem = claim_output_folder(out, fingerprint(predictor, overlay=overlay, uncertainty=uncertainty),
                                          overwrite)
        except MedsegError as err:
            problem = str(err)
    problem = ctx.broadcast(problem)
    if problem:
        raise MedsegError(problem)
    mine = shard(files, ctx)
    outputs = {f: output_paths(f, out, overlay=overlay, uncertainty=uncertainty) for f in mine}
    removed = remove_stale_temps(out, [p.name for paths in outputs.values() for p in paths])
    if removed:
        log.info("removed %d partial file(s) left by an interrupted run", removed)
    todo = mine if overwrite else [f for f in mine if not is_complete(f, outputs[f])]
    if len(todo) < len(mine):
        log.info("%d of %d image(s) already have complete outputs in %s; skipping them (--overwrite redoes them)",
                 len(mine) - len(todo), len(mine), out)
    result = predictor.predict_folder(todo, out, overlay=overlay, uncertainty=uncertainty, qc=qc,
                                      progress=progress and ctx.is_main) if todo else BatchResult()
    redo = set(todo)
    result.skipped = [outputs[f][0] for f in mine if f not in redo]
    ctx.barrier()  # the one meeting point: every rank has finished its share
    merged = BatchResult()
    for part in ctx.gather(result):
        merged.merge(part)
    if ctx.is_main and created and not merged.written and not merged.skipped:
        # nothing was written: leave no folder behind that holds only the stamp
        (out / MANIFEST).unlink(missing_ok=True)
        with contextlib.suppress(OSError):  # not empty (another writer, a qc.csv to come): keep it
            out.rmdir()
    return merged
