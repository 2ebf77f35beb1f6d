"""DICOM CT -> HU normalisation planned as nnU-Net does (clip to the foreground 0.5-99.5 % HU percentiles,
z-score with the foreground mean and std), honoured the same way by training, validation and prediction."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import medseg
from medseg.config import build_config
from medseg.data.dataset import SegmentationDataset
from medseg.data.layouts import find_pairs
from medseg.data.transforms import normalize_batch
from medseg.engine.checkpoint import load_checkpoint
from medseg.errors import ConfigError
from medseg.inference.predictor import Predictor
from medseg.plan.catalogue import FROM_SCRATCH
from medseg.plan.machine import Machine
from medseg.plan.run import plan_data
from tests._dicom_factories import ct_slice
from tests._factories import save

SIDE = 64
#: the foreground: soft tissue uniform in 0..99 HU (mean 49.5, std 28.9); background: air near -1000 HU
FG_LO, FG_HI = 0, 100


def _machine() -> Machine:
    tp = {n.name: {"128": round(4000 / n.params_m, 3), "256": round(1000 / n.params_m, 3)} for n in FROM_SCRATCH}
    return Machine("cpu", 2, "Test CPU", {"amx": False, "avx512_bf16": False, "avx512f": False, "avx2": True},
                   False, 0.9, None, None, "fp32", False, tp)


def _hu(i: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(i)
    hu = rng.integers(-1000, -900, (SIDE, SIDE))
    mask = np.zeros((SIDE, SIDE), np.uint8)
    y, x = 8 + 3 * (i % 5), 10 + 2 * (i % 7)
    mask[y : y + 30, x : x + 34] = 255
    hu[mask > 0] = rng.integers(FG_LO, FG_HI, int((mask > 0).sum()))
    return hu, mask


def _ct_dataset(root: Path, n: int = 10) -> Path:
    for i in range(n):
        hu, mask = _hu(i)
        ct_slice(root / "images" / f"s{i}.dcm", (hu + 1024).astype(np.int16), z=float(i), window=(40, 400))
        save(root / "masks" / f"s{i}.png", mask)
    return root


@pytest.fixture(scope="module")
def ct_data(tmp_path_factory) -> Path:
    return _ct_dataset(tmp_path_factory.mktemp("ct") / "data")


def _zscore(hu: np.ndarray, cfg) -> np.ndarray:
    """nnU-Net's CTNormalization in float, from the config's clip (data.window) and foreground figures."""
    c, w = (float(v) for v in cfg.data.window.split(","))
    lo, hi = c - 0.5 - (w - 1) / 2, c - 0.5 + (w - 1) / 2
    return (np.clip(hu, lo, hi) - cfg.data.intensity_mean) / cfg.data.intensity_std


def test_plan_clips_to_foreground_percentiles_and_zscores_with_foreground_figures(ct_data):
    cfg = plan_data(ct_data, machine=_machine(), with_pretrained=False).config
    c, w = (float(v) for v in cfg.data.window.split(","))
    lo, hi = c - 0.5 - (w - 1) / 2, c - 0.5 + (w - 1) / 2
    assert cfg.data.normalize == "ct"
    assert lo == pytest.approx(0.5, abs=1.5) and hi == pytest.approx(98.5, abs=1.5)  # 0.5 / 99.5 % of 0..99 HU
    assert cfg.data.intensity_mean == pytest.approx(49.5, abs=2)
    assert cfg.data.intensity_std == pytest.approx(28.9, abs=1.5)  # uniform: 100 / sqrt(12)


def test_a_user_window_keeps_priority_and_the_report_says_so(ct_data, tmp_path):
    planned = plan_data(ct_data, machine=_machine(), with_pretrained=False)
    assert any("foreground 0.5-99.5 %" in line and "std" in line for line in planned.fingerprint.summary_lines())
    result = plan_data(ct_data, machine=_machine(), with_pretrained=False, overrides=["data.window=lung"])
    assert result.config.data.window == "lung" and result.config.data.normalize == "imagenet"
    result.write(tmp_path / "plan.yaml")
    report = (tmp_path / "plan_report.md").read_text()
    assert "CT with your window: it is kept" in report


def test_ct_normalisation_needs_its_figures_and_a_fixed_clip():
    with pytest.raises(ConfigError, match="normalize=ct needs"):
        build_config(overrides=["data.normalize=ct", "data.intensity_mean=40", "data.intensity_std=20"])
    with pytest.raises(ConfigError, match="normalize=ct needs"):
        build_config(overrides=["data.normalize=ct", "data.window=auto", "data.intensity_mean=40",
                                "data.intensity_std=20"])
    cfg = build_config(overrides=["data.normalize=ct", "data.window=soft_tissue", "data.intensity_mean=40",
                                  "data.intensity_std=20"])
    assert len(cfg.data.mean_std[0]) == 3


def test_training_input_is_the_zscored_hu_within_quantisation(ct_data):
    """What the network sees in training = (clip(HU) - mean) / std, up to the 256 levels of the clip range."""
    cfg = plan_data(ct_data, machine=_machine(), with_pretrained=False).config
    pairs = find_pairs(ct_data).pairs[:2]
    ds = SegmentationDataset(pairs, SIDE, cache=False, window=cfg.data.window)
    image = ds[0][0].unsqueeze(0)  # uint8 (1, C, H, W), letterboxing at its own size is the identity
    x = normalize_batch(image, *cfg.data.mean_std)[0, 0].numpy()
    hu, _ = _hu(int(pairs[0].case_id.lstrip("s")))
    c, w = (float(v) for v in cfg.data.window.split(","))
    step = (w - 1) / 255 / cfg.data.intensity_std  # one uint8 level of the clip range, in z units
    assert np.abs(x - _zscore(hu, cfg)).max() <= step


@pytest.mark.slow
def test_trained_ct_run_predicts_as_it_validated(ct_data, tmp_path):
    planned = plan_data(ct_data, machine=_machine(), with_pretrained=False,
                        overrides=["data.image_size=64", "train.epochs=2", "train.time_budget_min=3",
                                   "train.ema=null", "train.val_every_s=null", "train.precision=fp32",
                                   "train.tune_postprocess=false"])  # evaluate with the threshold validation used
    planned.write(tmp_path / "plan.yaml")
    run = medseg.train(ct_data, tmp_path / "run", config=tmp_path / "plan.yaml", progress=False)
    assert (run / "config.yaml").read_text().count("normalize: ct") == 1
    ckpt = load_checkpoint(run)
    predictor = Predictor.load(run, precision="fp32")
    assert predictor.config.data.mean_std == planned.config.data.mean_std
    # the network on nnU-Net's float z-score gives the predictor's probabilities (quantisation aside)
    pair = find_pairs(ct_data).pairs[0]
    hu, _ = _hu(int(pair.case_id.lstrip("s")))
    x = torch.from_numpy(_zscore(hu, predictor.config)).float()[None, None].repeat(1, 3, 1, 1)
    with torch.no_grad():
        expected = torch.sigmoid(predictor.backend.net(x))[0, 0].numpy()
    proba = next(iter(predictor.stream_pairs([pair]))).proba
    assert np.abs(proba - expected).max() < 0.02
    assert np.array_equal(predictor.predict_proba(pair.image), proba)  # a path: windowed as in training too
    # the exported ONNX graph carries the config: the same clip and z-score
    from medseg.export import export_onnx

    export_onnx(run, tmp_path / "ct.onnx")
    onnx = Predictor.load(tmp_path / "ct.onnx")
    assert onnx.config.data.normalize == "ct"
    assert np.abs(next(iter(onnx.stream_pairs([pair]))).proba - proba).max() < 1e-3
    # evaluate (prediction at the image's own size) agrees with the in-training validation of best.pt
    summary = medseg.evaluate(run, split="val", progress=False)
    assert summary["dice"] == pytest.approx(ckpt["val_dice"], abs=0.01)
