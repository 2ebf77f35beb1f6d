"""Worker for test_distributed.py, started by torchrun: sharded validation and the stop agreement.

argv: DATA_FOLDER OUT_JSON. Every rank scores its share of an odd number of validation images with the
same seeded model; rank 0 writes what all ranks agreed on.
"""

import json
import sys
from pathlib import Path

import torch

from medseg.config import build_config
from medseg.data.dataset import SegmentationDataset
from medseg.data.layouts import find_pairs
from medseg.engine.distributed import init_distributed, shutdown
from medseg.engine.runtime import resolve_runtime
from medseg.engine.train import validate_epoch
from medseg.losses import build_loss
from medseg.models import create_model


def evaluate(data: Path, ctx) -> dict:
    cfg = build_config("default", overrides=["data.image_size=64", "model.encoder=resnet18",
                                              "model.encoder_weights=none", "train.precision=fp32"])
    pairs = find_pairs(data).pairs[:5]  # an odd number of images: 3 on rank 0, 2 on rank 1
    ds = SegmentationDataset(pairs, 64)
    torch.manual_seed(0)
    model = create_model(cfg.model, load_weights=False)
    rt = resolve_runtime("fp32", "off")
    loss, dice = validate_epoch(model, ds, build_loss(cfg.loss), rt, cfg.data.mean_std, 0.5, 4, ctx)
    return {"loss": loss, "dice": dice, "n": len(ds)}


if __name__ == "__main__":
    ctx = init_distributed()
    result = evaluate(Path(sys.argv[1]), ctx)
    ctx.stop_requested = ctx.rank == ctx.world - 1  # only the last rank was sent SIGTERM
    result["stop"], (result["elapsed"],) = ctx.agree(100.0 + ctx.rank)  # rank 0's clock decides
    results = ctx.gather(result)
    if ctx.is_main:
        Path(sys.argv[2]).write_text(json.dumps(results))
    shutdown(ctx)
