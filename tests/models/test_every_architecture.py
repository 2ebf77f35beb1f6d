"""Every registered architecture, for free: save -> reload -> same output, and ONNX export parity.

As segmentation_models.pytorch's base test class does for its models: the parameters are the registry
(``medseg.models.ARCHS``), so an architecture registered later is tested here with no edit. Small and
quick: no pretrained weights, the light test encoder (``tests/_models.py``), 8 base channels where the
architecture has a width option, a 64 px input (the architecture's minimum side where larger), eval mode.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medseg.config import Config
from medseg.engine.checkpoint import save_checkpoint
from medseg.export.onnx import export_onnx
from medseg.inference.backends import OnnxBackend, ProbabilityModel, activation_for
from medseg.inference.predictor import Predictor
from medseg.models import ARCHS, create_model
from tests._models import MIN_SIDE, cfg_for


@pytest.fixture(scope="module", params=sorted(ARCHS))
def saved(request, tmp_path_factory):
    """(config, model in eval mode, checkpoint path) for one architecture, saved by medseg's writer."""
    arch = request.param
    small = {"base_channels": 8} if "base_channels" in ARCHS[arch].options else {}
    side = MIN_SIDE.get(arch, 64)
    cfg = Config(model=cfg_for(arch, **small).model_dump(), data={"image_size": side})
    torch.manual_seed(0)
    model = create_model(cfg.model)
    with torch.no_grad():  # one batch in train mode: batch-norm statistics that are not the 0/1 defaults
        model.train()(torch.randn(2, 3, side, side))
    model.eval()
    path = tmp_path_factory.mktemp(arch) / "model.pt"
    save_checkpoint(path, model, cfg.model_dump(mode="json"))
    return cfg, model, path


def images(side: int) -> np.ndarray:
    return np.random.default_rng(5).integers(0, 256, (2, side, side, 3), dtype=np.uint8)


def test_save_reload_gives_the_same_output(saved):
    """medseg's checkpoint writer, then its loader (``weights_only=True``), give the same network."""
    cfg, model, path = saved
    loaded = Predictor.load(path, precision="fp32", channels_last="off", device="cpu")
    net = loaded.backend.net.eval()
    assert net is not model and loaded.config.model == cfg.model
    x = torch.randn(2, 3, cfg.data.image_size, cfg.data.image_size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(net(x), model(x), rtol=0, atol=1e-6)


def test_onnx_export_matches_pytorch(saved, tmp_path):
    """``export_onnx`` (its own parity check must pass) and ONNX Runtime agree with PyTorch within 1e-4."""
    cfg, model, path = saved
    out = tmp_path / "model.onnx"
    report = export_onnx(path, out)
    assert report.parity.mask_agreement >= 0.999 and report.parity.max_abs_diff < 1e-4
    side = cfg.data.image_size
    batch = images(side)
    mean, std = cfg.data.mean_std
    with torch.no_grad():
        want = ProbabilityModel(model, mean, std, activation_for(cfg))(torch.from_numpy(batch)).numpy()
    got = OnnxBackend(out)(batch)
    assert got.shape == want.shape == (2, cfg.model.classes, side, side)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-4)
