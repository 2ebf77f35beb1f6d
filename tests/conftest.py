"""Shared fixtures: tiny synthetic data, one tiny trained run, and the real data folder."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import pytest  # noqa: E402

from tests._paths import SHARED

SHARED_DATA = SHARED / "data"

# A run small enough to train in seconds; fp32 so that results are bit-reproducible.
TINY = ["data.image_size=64", "model.encoder=resnet18", "model.encoder_weights=none", "train.epochs=2",
        "train.batch_size=8", "train.precision=fp32", "train.augment=low", "optim.warmup_epochs=0"]


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data not available at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    """24 synthetic dermoscopy-like pairs (16 train, 4 val, 4 test) at 96 px, ISIC layout."""
    from medseg.data.synthetic import make_synthetic_dataset

    return make_synthetic_dataset(tmp_path_factory.mktemp("tiny") / "data", n_train=16, n_val=4, n_test=4,
                                  size=96, seed=1)


@pytest.fixture(scope="session")
def tiny_run(tiny_dataset, tmp_path_factory) -> Path:
    """A run trained for two epochs on the tiny dataset."""
    from medseg.engine.train import train

    return train(tiny_dataset, tmp_path_factory.mktemp("runs") / "tiny", config="default", overrides=TINY,
                 progress=False)
