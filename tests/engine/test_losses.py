"""Losses on hand-made tensors: perfect predictions, hand-computed values, class weights, model outputs."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError

from medseg.config import LossConfig
from medseg.errors import ConfigError
from medseg.losses import (
    LOSSES,
    DiceBCELoss,
    boundary_map,
    boundary_weights,
    build_loss,
    class_weights_from_counts,
    edge_loss,
)
from medseg.models.heads import SegOutputs

NAMES = ["dice_bce", "dice_ce", "dice", "ce", "focal", "tversky", "dice_focal"]
LN2 = math.log(2)


def binary_case():
    y = torch.zeros(2, 1, 8, 8)
    y[:, :, 2:6, 3:7] = 1
    return y


def multiclass_case():
    y = torch.zeros(2, 8, 8, dtype=torch.long)
    y[:, 1:4, 1:5] = 1
    y[:, 5:8, 4:8] = 2
    return y


def perfect(y: torch.Tensor, classes: int) -> torch.Tensor:
    if classes == 1:
        return (2 * y - 1) * 30
    return F.one_hot(y, classes).permute(0, 3, 1, 2).float() * 60 - 30


def loss(name: str, **kw):
    return build_loss(LossConfig(name=name, **kw))


def test_registry_matches_config():
    assert sorted(LOSSES.names()) == sorted(NAMES)
    with pytest.raises(ValidationError):
        LossConfig(name="lovasz")


@pytest.mark.parametrize("name", NAMES)
def test_perfect_prediction_is_near_zero(name):
    yb, ym = binary_case(), multiclass_case()
    assert loss(name)(perfect(yb, 1), yb).item() == pytest.approx(0, abs=1e-4)
    assert loss(name)(perfect(ym, 3), ym).item() == pytest.approx(0, abs=1e-4)
    wrong = loss(name)(-perfect(yb, 1), yb).item()
    assert wrong > 0.5


@pytest.mark.parametrize("name", NAMES)
def test_gradients_flow(name):
    logits = torch.zeros(2, 3, 8, 8, requires_grad=True)
    loss(name, boundary_weight=1.0)(logits, multiclass_case()).backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0


def test_cross_entropy_by_hand():
    y = binary_case()
    assert loss("ce")(torch.zeros_like(y), y).item() == pytest.approx(LN2, rel=1e-5)
    ym = multiclass_case()
    assert loss("ce")(torch.zeros(2, 3, 8, 8), ym).item() == pytest.approx(math.log(3), rel=1e-5)
    # label smoothing 0.2, binary: target 1 -> 0.9; logit 2 on every pixel
    t = torch.ones(1, 1, 1, 1)
    p = 1 / (1 + math.exp(-2.0))
    expected = -(0.9 * math.log(p) + 0.1 * math.log(1 - p))
    assert loss("ce", label_smoothing=0.2)(torch.full_like(t, 2.0), t).item() == pytest.approx(expected, rel=1e-5)


def test_class_weights_effect():
    # two pixels, background and foreground, both with logit 2: BCE 2.1269 (bg) and 0.1269 (fg)
    y = torch.tensor([[[[0.0, 1.0]]]])
    x = torch.full_like(y, 2.0)
    bg, fg = F.softplus(torch.tensor(2.0)).item(), F.softplus(torch.tensor(-2.0)).item()
    assert loss("ce")(x, y).item() == pytest.approx((bg + fg) / 2, rel=1e-5)
    assert loss("ce", class_weights=[1, 3])(x, y).item() == pytest.approx((bg + 3 * fg) / 4, rel=1e-5)
    ym = multiclass_case()
    logits = torch.zeros(2, 3, 8, 8)
    logits[:, 0] = 3  # predicts background everywhere: heavier class-1/2 weights raise the loss
    plain = loss("dice_ce")(logits, ym).item()
    assert loss("dice_ce", class_weights=[0.2, 1, 1])(logits, ym).item() > plain
    with pytest.raises(ConfigError, match="2 class weights for a multiclass model with 3"):
        loss("ce", class_weights=[1, 2])(logits, ym)


def test_dice_and_tversky_by_hand():
    y = binary_case()
    logits = torch.where(y > 0, 1.0, -1.0)
    p = torch.sigmoid(logits)
    tp, fp, fn = (p * y).sum(), (p * (1 - y)).sum(), ((1 - p) * y).sum()
    dice = 1 - (2 * tp + 1e-5) / (2 * tp + fp + fn + 1e-5)
    assert loss("dice")(logits, y).item() == pytest.approx(dice.item(), rel=1e-5)
    tversky = 1 - (tp + 1e-5) / (tp + 0.3 * fp + 0.7 * fn + 1e-5)
    assert loss("tversky")(logits, y).item() == pytest.approx(tversky.item(), rel=1e-5)
    assert loss("dice_bce")(logits, y).item() == pytest.approx(
        dice.item() + F.binary_cross_entropy_with_logits(logits, y).item(), rel=1e-5)


def test_focal_by_hand_and_dice_focal_mix():
    y = binary_case()
    zero = torch.zeros_like(y)
    assert loss("focal", gamma=2)(zero, y).item() == pytest.approx(0.25 * LN2, rel=1e-5)
    assert loss("focal", gamma=0)(zero, y).item() == pytest.approx(LN2, rel=1e-5)
    # binary class weights [1, 3] -> alpha 0.75 for foreground pixels, 0.25 for background
    frac = y.mean().item()
    alpha = loss("focal", gamma=2, class_weights=[1, 3])(zero, y).item()
    assert alpha == pytest.approx(0.25 * LN2 * (0.75 * frac + 0.25 * (1 - frac)), rel=1e-5)
    logits = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    mix = loss("dice_focal", alpha=0.3)(logits, y).item()
    assert mix == pytest.approx(0.3 * loss("dice")(logits, y).item() + 0.7 * loss("focal")(logits, y).item(), rel=1e-5)


def test_multiclass_targets_in_either_shape():
    ym = multiclass_case()
    logits = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    for name in NAMES:
        a = loss(name)(logits, ym).item()
        assert loss(name)(logits, ym[:, None]).item() == pytest.approx(a, rel=1e-6)
        assert loss(name)(logits, ym[:, None].float()).item() == pytest.approx(a, rel=1e-6)
    with pytest.raises(ValueError, match="labels range 3..3 but the model has 3 classes"):
        loss("dice_ce")(logits, torch.full((2, 8, 8), 3))


def test_class_weights_from_counts():
    w = class_weights_from_counts([900, 100])
    assert w == pytest.approx([1000 / 1800, 1000 / 200])
    assert 0.9 * w[0] + 0.1 * w[1] == pytest.approx(1.0)
    assert class_weights_from_counts([900, 100], power=0.5) == pytest.approx([(1000 / 1800) ** 0.5, 5**0.5])
    assert class_weights_from_counts([50, 0, 50]) == pytest.approx([1.0, 0.0, 1.0])  # K counts present classes
    with pytest.raises(ValueError):
        class_weights_from_counts([0, 0])
    auto = build_loss(LossConfig(name="ce", class_weights="auto"), class_counts=[900, 100])
    assert auto.pixel.class_weights.tolist() == pytest.approx(w)
    with pytest.raises(ConfigError, match="pixel counts"):
        build_loss(LossConfig(name="ce", class_weights="auto"))


def test_boundary_maps_and_term():
    y = torch.zeros(1, 1, 16, 16)
    y[..., 4:8, 4:8] = 1
    edges = boundary_map(y)
    assert edges[0, 0, 3:9, 3:9].sum() == 36 - 4 and edges[0, 0, 5:7, 5:7].sum() == 0  # 2-pixel ring, no corners
    assert edges.sum() == 32
    w = boundary_weights(y, sigma=1.0)  # chessboard distance to the ring, cut at 3 sigma
    assert w[0, 0, 4, 4] == 1 and w[0, 0, 5, 5] == pytest.approx(math.exp(-0.5), rel=1e-6)
    assert w[0, 0, 0, 0] == pytest.approx(math.exp(-4.5), rel=1e-6) and w[0, 0, 0, 15] == 0
    assert boundary_weights(torch.zeros_like(y), 1.0).sum() == 0  # empty mask: no boundary
    zero = torch.zeros_like(y)
    parts = build_loss(LossConfig(name="dice", boundary_weight=2.0)).pixel.parts(zero, y)
    assert parts["boundary"].item() == pytest.approx(2 * LN2, rel=1e-5)  # BCE of logit 0 is ln 2 everywhere
    empty = build_loss(LossConfig(name="ce", boundary_weight=1.0))(zero, torch.zeros_like(y))
    assert torch.isfinite(empty) and empty.item() == pytest.approx(LN2, rel=1e-5)


def test_deep_supervision_and_edge_terms():
    y = binary_case()
    main = torch.zeros(2, 1, 8, 8)
    aux = (torch.zeros(2, 1, 4, 4), torch.zeros(2, 1, 2, 2))
    edge = torch.zeros(2, 1, 8, 8)
    crit = build_loss(LossConfig(name="ce", edge_weight=0.5))
    parts = crit.parts(SegOutputs(main, aux, edge), y)
    assert parts["main"].item() == pytest.approx(LN2, rel=1e-5)
    assert parts["aux"].item() == pytest.approx(LN2 * (0.5 + 0.25) / 1.75, rel=1e-5)
    assert parts["edge"].item() == pytest.approx(0.5 * LN2, rel=1e-5)  # balanced BCE of logit 0
    assert parts["loss"].item() == pytest.approx(LN2 * (1 / 1.75 + 0.75 / 1.75 + 0.5), rel=1e-5)
    assert crit(main, y).item() == pytest.approx(LN2, rel=1e-5)  # plain logits: the main term only
    custom = build_loss(LossConfig(name="ce", deep_supervision_weights=[1, 1, 0]))
    assert custom(SegOutputs(main, aux), y).item() == pytest.approx(LN2, rel=1e-5)
    with pytest.raises(ConfigError, match="has 2 values; the model gives 3"):
        build_loss(LossConfig(name="ce", deep_supervision_weights=[1, 1]))(SegOutputs(main, aux), y)


def test_edge_loss_rewards_true_edges():
    y = binary_case()
    edges = boundary_map(y)
    assert edge_loss((2 * edges - 1) * 20, y).item() < 1e-6
    assert edge_loss((1 - 2 * edges) * 20, y).item() > 10


def test_dice_bce_class_kept_for_direct_use():
    from monai.losses import DiceLoss

    y = binary_case()
    logits = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    ref = DiceLoss(sigmoid=True, batch=True)(logits, y) + F.binary_cross_entropy_with_logits(logits, y)
    assert DiceBCELoss()(logits, y).item() == pytest.approx(ref.item(), rel=1e-6)
