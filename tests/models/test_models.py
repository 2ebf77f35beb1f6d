"""The model zoo: every registered architecture (SMP-style base test), options, heads, freezing, summary."""

from __future__ import annotations

import pytest
import torch

from medseg.catalog import describe
from medseg.config import ModelConfig
from medseg.errors import ConfigError, WeightsError
from medseg.models import ARCHS, SegOutputs, create_model, freeze_encoder, main_logits, unfreeze_encoder
from medseg.models.freeze import encoder_layers, encoder_stages
from medseg.models.summary import model_summary
from medseg.models.weights import load_encoder_weights
from tests._models import MIN_SIDE, cfg_for
from tests._paths import ROOT


@pytest.mark.parametrize("arch", list(ARCHS))
def test_architecture(arch):
    """Forward and backward (binary), an odd input size, and multiclass output channels."""
    torch.manual_seed(0)
    side = MIN_SIDE.get(arch, 64)
    model = create_model(cfg_for(arch))
    model.train()
    x = torch.randn(2, 3, side, side)
    out = model(x)
    assert isinstance(out, torch.Tensor) and out.shape == (2, 1, side, side)
    out.mean().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert grads and all(g is not None for g in grads[-4:])  # the head learns
    assert any(g is not None and g.abs().sum() > 0 for g in grads[:4])  # so does the first trainable layer

    model.eval()
    odd = (side + 36, side + 68)  # 100x132 for most: not a multiple of any stride
    with torch.no_grad():
        assert model(torch.randn(1, 3, *odd)).shape == (1, 1, *odd)
    if arch in MIN_SIDE:
        with pytest.raises(ConfigError, match="at least"):
            model(torch.randn(1, 3, 64, 64))

    multi = create_model(cfg_for(arch, classes=3)).eval()
    with torch.no_grad():
        assert multi(torch.randn(1, 3, side, side)).shape == (1, 3, side, side)


def test_smp_state_dict_keys_unchanged():
    """A plain SMP U-Net checkpoint (and an older medseg one) loads into medseg's unet."""
    from medseg.models.smp_arch import smp_module

    smp = smp_module()
    ref = smp.Unet("resnet18", encoder_weights=None, classes=1)
    model = create_model(cfg_for("unet"))
    model.load_state_dict(ref.state_dict())  # strict


def test_options_are_checked_per_architecture():
    with pytest.raises(ConfigError, match="psp_bins does not apply to unet; it applies to dicom-pspnet"):
        create_model(cfg_for("unet", psp_bins=[1, 2]))
    with pytest.raises(ConfigError, match="deep_supervision does not apply to deeplabv3"):
        create_model(cfg_for("deeplabv3", deep_supervision=True))
    with pytest.raises(ConfigError, match="valid names"):
        create_model(ModelConfig(arch="unet3d", encoder_weights=None))
    with pytest.raises(ConfigError, match="isic-deeplabv3 uses encoder resnet50"):
        create_model(ModelConfig(arch="isic-deeplabv3", encoder="resnet34", encoder_weights=None))
    with pytest.raises(ConfigError, match="needs a VGG encoder"):
        create_model(ModelConfig(arch="dicom-vgg16-unet", encoder="resnet34", encoder_weights=None))
    with pytest.raises(ConfigError, match="unknown encoder"):
        create_model(ModelConfig(arch="fpn", encoder="resnet7", encoder_weights=None))


def test_isic_deeplabv3_aspp():
    model = create_model(ModelConfig(arch="isic-deeplabv3", encoder="resnet50", encoder_weights=None))
    assert model.encoder.output_stride == 16
    aspp = model.decoder
    rates = sorted(m.dilation[0] for m in aspp.modules() if isinstance(m, torch.nn.Conv2d) and m.dilation[0] > 1)
    assert rates == [6, 12, 18]
    assert any(isinstance(m, torch.nn.AdaptiveAvgPool2d) for m in aspp.modules())  # image pooling
    custom = create_model(ModelConfig(arch="deeplabv3", encoder="resnet18", encoder_weights=None,
                                      atrous_rates=[2, 4, 6], output_stride=8))
    rates = sorted(m.dilation[0] for m in custom.decoder.modules()
                   if isinstance(m, torch.nn.Conv2d) and m.dilation[0] > 1 and m.kernel_size[0] == 3)
    assert rates == [2, 4, 6]


def test_pspnet_bins_and_dropout():
    model = create_model(cfg_for("dicom-pspnet"))
    pools = [stage[0].output_size for stage in model.decoder[0].stages]
    assert pools == [1, 3, 5, 7]
    assert model.segmentation_head[0].p == pytest.approx(0.2)
    model = create_model(cfg_for("dicom-pspnet", psp_bins=[1, 2, 3, 6], dropout=0.1, output_stride=32))
    assert [s[0].output_size for s in model.decoder[0].stages] == [1, 2, 3, 6]
    assert model.segmentation_head[0].p == pytest.approx(0.1) and model.encoder.output_stride == 32


@pytest.mark.parametrize("base,upsampling,millions", [(64, "transpose", 31.04), (32, "transpose", 7.76),
                                                      (16, "transpose", 1.94), (32, "bilinear", 7.24)])
def test_classic_unet_sizes(base, upsampling, millions):
    cfg = ModelConfig(arch="unet_classic", encoder_weights=None, base_channels=base, upsampling=upsampling)
    assert describe(cfg, 64)["parameters_m"] == pytest.approx(millions, abs=0.01)


@pytest.mark.parametrize("arch", ["unet", "unet_classic", "dicom-vgg16-unet"])
def test_deep_supervision_and_edge_head(arch):
    model = create_model(cfg_for(arch, classes=2, deep_supervision=True, edge_head=True, attention="cbam")).train()
    out = model(torch.randn(2, 3, 64, 96))
    assert isinstance(out, SegOutputs) and out.main.shape == (2, 2, 64, 96) and out.edge.shape == (2, 1, 64, 96)
    assert [tuple(a.shape) for a in out.aux] == [(2, 2, 32, 48), (2, 2, 16, 24), (2, 2, 8, 12)]
    assert main_logits(out) is out.main
    model.eval()
    with torch.no_grad():
        plain = model(torch.randn(1, 3, 50, 70))
    assert isinstance(plain, torch.Tensor) and plain.shape == (1, 2, 50, 70) and main_logits(plain) is plain


def test_cbam_on_skips_only():
    from medseg.models.attention import CBAM

    model = create_model(cfg_for("unet", attention="cbam"))
    kinds = [type(b).__name__ for b in model.skip_attention.blocks]
    assert kinds == ["Identity", "CBAM", "CBAM", "CBAM", "CBAM", "Identity"]  # not the input, not the bottleneck
    cbam = CBAM(8)
    x = torch.randn(1, 8, 5, 7)
    assert cbam(x).shape == x.shape


def test_edge_head_on_any_architecture():
    model = create_model(cfg_for("dicom-pspnet", edge_head=True)).train()
    out = model(torch.randn(2, 3, 64, 64))
    assert out.aux == () and out.edge.shape == (2, 1, 64, 64)


def test_vgg16_unet_freezes_ten_layers():
    model = create_model(cfg_for("dicom-vgg16-unet", classes=4))
    convs = [m for m in model.encoder.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 13
    assert [c.weight.requires_grad for c in convs] == [False] * 10 + [True] * 3
    assert all(p.requires_grad for p in model.decoder.parameters())
    frozen_bn = model.encoder.features[1]  # BN after the first conv
    before = frozen_bn.running_mean.clone()
    model.train()
    assert not frozen_bn.training and model.decoder.training
    model(torch.randn(2, 3, 64, 64))
    assert torch.equal(frozen_bn.running_mean, before)
    unfreeze_encoder(model)
    assert all(p.requires_grad for p in model.parameters()) and frozen_bn.training
    by_stage = create_model(cfg_for("dicom-vgg16-unet", freeze_stages=1))  # instead of the 10 layers
    assert [c.weight.requires_grad for c in by_stage.encoder.modules() if isinstance(c, torch.nn.Conv2d)][:3] == \
        [False, False, True]


def test_freezing_random_layers_is_warned(caplog):
    with caplog.at_level("WARNING", logger="medseg.models.factory"):
        create_model(cfg_for("dicom-vgg16-unet"))
    assert "randomly initialised and will stay so" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="medseg.models.factory"):
        model = create_model(cfg_for("dicom-vgg16-unet", freeze_layers=0))
    assert caplog.text == "" and all(p.requires_grad for p in model.parameters())


def test_freeze_by_stage_and_whole_encoder():
    model = create_model(cfg_for("unet"))
    stages = encoder_stages(model)
    assert [s[0] for s in stages] == ["conv1", "layer1.0.conv1", "layer2.0.conv1", "layer3.0.conv1", "layer4.0.conv1"]
    assert len(encoder_layers(model)) == 20  # resnet18: 1 + 16 + 3 downsample convolutions
    n = freeze_encoder(model, stages=2)
    assert n == sum(p.numel() for p in [*model.encoder.conv1.parameters(), *model.encoder.bn1.parameters(),
                                        *model.encoder.layer1.parameters()])
    assert not model.encoder.layer1[1].conv2.weight.requires_grad and model.encoder.layer2[0].conv1.weight.requires_grad
    freeze_encoder(model)
    assert not any(p.requires_grad for p in model.encoder.parameters())
    assert all(p.requires_grad for p in model.decoder.parameters())
    unfreeze_encoder(model)
    assert all(p.requires_grad for p in model.parameters())
    with pytest.raises(ConfigError, match="the encoder has 5"):
        freeze_encoder(model, stages=9)
    frozen = create_model(cfg_for("unet", freeze_stages=1))
    assert not frozen.encoder.conv1.weight.requires_grad and frozen.encoder.layer1[0].conv1.weight.requires_grad


def test_classic_unet_has_no_pretrained_encoder():
    model = create_model(cfg_for("unet_classic"))
    assert load_encoder_weights(model, cfg_for("unet_classic", encoder_weights="auto")) is None
    with pytest.raises(WeightsError, match="no pretrained encoder"):
        load_encoder_weights(model, cfg_for("unet_classic", encoder_weights="imagenet"))


def _bench_pspnet():
    """bench/pspnet_backbones.py as a module (its table is for BENCHMARKS.md, not part of the package)."""
    import importlib.util

    path = ROOT / "bench" / "pspnet_backbones.py"
    spec = importlib.util.spec_from_file_location("bench_pspnet_backbones", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_summary_parameters_and_flops():
    model = create_model(cfg_for("unet_classic"))
    s = model_summary(model, size=64)
    assert s["parameters"] == sum(p.numel() for p in model.parameters()) and s["gflops"] > 0
    small, large = describe(cfg_for("unet"), 64)["gflops"], describe(cfg_for("unet"), 128)["gflops"]
    assert large == pytest.approx(4 * small, rel=0.02)
    rows = _bench_pspnet().pspnet_backbone_table(size=64, output_strides=(32,))  # the four compared backbones build
    assert [r["encoder"] for r in rows] == ["resnet18", "tu-mobilenetv3_large_100", "efficientnet-b0",
                                            "tu-convnext_tiny"]
    assert all(r["parameters_m"] > 5 and r["gflops_os32"] > 0 for r in rows)


def test_cli_models_table():
    from typer.testing import CliRunner

    from medseg.cli import app

    result = CliRunner().invoke(app, ["models", "--size", "64", "--arch", "dicom-pspnet", "--encoder", "resnet18"],
                                env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "dicom-pspnet" in result.output and "resnet18" in result.output and "16.16" in result.output
    listed = CliRunner().invoke(app, ["models", "--encoders", "*convnext_tiny*"])
    assert "tu-convnext_tiny" in listed.output
    bad = CliRunner().invoke(app, ["models", "--arch", "nope"])
    assert bad.exit_code != 0


def test_model_label_names_the_encoder_only_where_the_architecture_takes_one():
    from medseg.models import model_label

    assert model_label(ModelConfig(arch="unet", encoder="resnet18")) == "unet-resnet18"
    assert model_label(ModelConfig(arch="monai_unet", base_channels=32, encoder_weights=None)) == "monai_unet-32"
