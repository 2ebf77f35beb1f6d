"""The built-in demo: synthetic dermoscopy-like data -> train -> evaluate -> overlays, no download."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from medseg.io.files import write_text_atomic

log = logging.getLogger(__name__)


def run_demo(out: str | Path = "runs/demo", *, minutes: float | None = None, n_train: int = 160,
             progress: bool = True, overrides: list[str] | None = None) -> dict[str, Any]:
    """Generate data, train the ``demo`` preset, evaluate on the test split; returns the summary."""
    from medseg.data.synthetic import make_synthetic_dataset
    from medseg.engine.train import train
    from medseg.evaluation import evaluate
    from medseg.inference.postprocess_tuning import tune_after_training
    from medseg.inference.predictor import Predictor

    out = Path(out)
    t0 = time.monotonic()
    data = out / "data"
    if not (data / "split.csv").is_file():
        log.info("generating a synthetic dermoscopy-like dataset in %s", data)
        make_synthetic_dataset(data, n_train=n_train, n_val=max(8, n_train // 4), n_test=max(8, n_train // 4))
    over = list(overrides or [])
    if minutes is not None:
        over.append(f"train.time_budget_min={minutes}")
    run = train(data, out / "run", config="demo", overrides=over, overwrite=True, progress=progress,
                finish=tune_after_training)
    predictor = Predictor.load(run)
    summary = evaluate(run, data, split="test", out=out / "eval_test", overlays=8, progress=progress,
                       predictor=predictor)
    summary["demo_seconds"] = round(time.monotonic() - t0, 1)
    write_text_atomic(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    return summary
