"""Registered losses. The mode follows the logits: one channel is binary, K channels multiclass.

- binary: logits (N,1,H,W), sigmoid; targets (N,1,H,W) or (N,H,W) in {0,1} (soft values allowed).
- multiclass: logits (N,K,H,W), softmax; targets (N,1,H,W) or (N,H,W) integer labels 0..K-1 (float
  tensors holding integers are accepted); one-hot conversion happens where MONAI needs it.

Terms (MONAI where it has them): ``dice`` (DiceLoss, over the batch), ``ce`` (binary or categorical
cross-entropy with label smoothing and class weights), ``focal`` (FocalLoss, gamma; class weights as
alpha for binary, per-class weights for multiclass), ``tversky`` (TverskyLoss, alpha = false
positives, beta = false negatives). Named losses mix them: ``dice_bce`` and ``dice_ce`` (the same
thing: Dice + BCE/CE), ``dice_focal`` (alpha * Dice + (1 - alpha) * focal).

Boundary term (``boundary_weight`` > 0): cross-entropy averaged with weights exp(-d^2 / 2 sigma^2),
d = chessboard distance (pixels) to the nearest boundary of the true mask, added to the loss. It is a
band-limited variant of the U-Net paper's border weighting, not Kervadec's boundary loss: no
distance transform on the CPU, and well defined for empty masks (no boundary: the term is 0).

Models with deep supervision or an edge head return :class:`~medseg.models.heads.SegOutputs` in
training; :class:`SegmentationLoss` (what :func:`build_loss` returns) takes either that or plain
logits, so the training loop calls ``criterion(outputs, target)`` in all cases.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from medseg.errors import ConfigError
from medseg.registry import Registry

LOSSES = Registry("loss")


# ------------------------------------------------------------------------------------ targets / weights
def as_labels(target: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """Targets as (N,1,H,W): float in [0,1] for binary logits, long labels for multiclass logits."""
    if target.dim() == logits.dim() - 1:
        target = target.unsqueeze(1)
    if target.shape[1] != 1 or target.shape[-2:] != logits.shape[-2:]:
        raise ValueError(f"target of shape {tuple(target.shape)} does not fit logits {tuple(logits.shape)}")
    if logits.shape[1] == 1:
        return target.float()
    labels = target.round().long() if target.is_floating_point() else target.long()
    if int(labels.max()) >= logits.shape[1] or int(labels.min()) < 0:
        raise ValueError(f"labels range {int(labels.min())}..{int(labels.max())} but the model has "
                         f"{logits.shape[1]} classes")
    return labels


def class_weights_from_counts(counts: Sequence[float], power: float = 1.0) -> list[float]:
    """Inverse-frequency class weights from pixel counts: w_c = (total / (K * n_c)) ** power.

    K is the number of classes present. With ``power=1`` the pixel-weighted mean weight is 1
    (sklearn's "balanced"); 0.5 softens it. Classes with no pixels get weight 0. Binary: pass
    [background, foreground] counts.
    """
    counts_t = torch.as_tensor(list(counts), dtype=torch.float64)
    if counts_t.numel() < 2 or bool((counts_t < 0).any()) or float(counts_t.sum()) <= 0:
        raise ValueError("class counts must be at least two non-negative numbers with a positive sum")
    present = int((counts_t > 0).sum())
    w = (counts_t.sum() / (present * counts_t.clamp(min=1e-12))) ** power
    return torch.where(counts_t > 0, w, torch.zeros_like(w)).tolist()


def boundary_map(labels: torch.Tensor) -> torch.Tensor:
    """Morphological gradient (3x3 dilation minus erosion) of (N,1,H,W) masks or label maps: 1 on edges."""
    lab = labels.float()
    return (F.max_pool2d(lab, 3, 1, 1) != -F.max_pool2d(-lab, 3, 1, 1)).float()


def boundary_weights(labels: torch.Tensor, sigma: float) -> torch.Tensor:
    """exp(-d^2 / 2 sigma^2), d = chessboard distance to the nearest boundary pixel (0 beyond 3 sigma)."""
    reached = boundary_map(labels)
    dist = torch.where(reached > 0, 0.0, float("inf"))
    for k in range(1, int(3 * sigma) + 1):
        grown = F.max_pool2d(reached, 3, 1, 1)
        dist = torch.where((grown > 0) & (reached == 0), float(k), dist)
        reached = grown
    return torch.exp(-(dist**2) / (2 * sigma**2))


def pixel_ce(logits: torch.Tensor, labels: torch.Tensor, class_weights: torch.Tensor | None,
             smoothing: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-pixel (N,1,H,W) cross-entropy and class weights (BCE for one channel), with label smoothing."""
    if logits.shape[1] == 1:
        soft = labels * (1 - smoothing) + smoothing / 2
        loss = F.binary_cross_entropy_with_logits(logits, soft, reduction="none")
        index = (labels > 0.5).long()
    else:
        logp = F.log_softmax(logits, dim=1)
        loss = -(1 - smoothing) * logp.gather(1, labels) - smoothing * logp.mean(dim=1, keepdim=True)
        index = labels
    weight = class_weights[index] if class_weights is not None else torch.ones_like(loss)
    return loss, weight


# ---------------------------------------------------------------------------------------- one logits map
class CompositeLoss(nn.Module):
    """A weighted sum of Dice, cross-entropy, focal and Tversky terms on one logits tensor."""

    def __init__(self, terms: dict[str, float], *, class_weights: Sequence[float] | None = None,
                 label_smoothing: float = 0.0, gamma: float = 2.0, tversky_alpha: float = 0.3,
                 tversky_beta: float = 0.7, include_background: bool = True, boundary_weight: float = 0.0,
                 boundary_sigma: float = 3.0) -> None:
        super().__init__()
        from monai.losses import DiceLoss, FocalLoss, TverskyLoss

        self.terms = {k: v for k, v in terms.items() if v > 0}
        self.smoothing, self.gamma, self.include_background = label_smoothing, gamma, include_background
        self.boundary_weight, self.boundary_sigma = boundary_weight, boundary_sigma
        w = torch.tensor(class_weights, dtype=torch.float32) if class_weights is not None else None
        self.register_buffer("class_weights", w, persistent=False)
        kw = {"batch": True, "smooth_nr": 1e-5, "smooth_dr": 1e-5}
        multi = {"softmax": True, "to_onehot_y": True, "include_background": include_background}
        # multiclass Dice / focal weigh the classes they see; binary Dice has one channel and no weights
        cw = None if w is None else (w if include_background else w[1:]).tolist()
        self.dice = nn.ModuleDict({"binary": DiceLoss(sigmoid=True, **kw),
                                   "multiclass": DiceLoss(weight=cw, **multi, **kw)})
        tv = {"alpha": tversky_alpha, "beta": tversky_beta, **kw}
        self.tversky = nn.ModuleDict({"binary": TverskyLoss(sigmoid=True, **tv),
                                      "multiclass": TverskyLoss(**multi, **tv)})
        alpha = float(w[1] / w.sum()) if w is not None and len(w) == 2 else None  # binary: alpha-balanced focal
        self.focal = nn.ModuleDict({
            "binary": FocalLoss(gamma=gamma, alpha=alpha),
            "multiclass": FocalLoss(gamma=gamma, weight=cw, use_softmax=True, to_onehot_y=True,
                                    include_background=include_background),
        })

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return sum(self.parts(logits, target).values())  # type: ignore[return-value]

    def parts(self, logits: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        """Each weighted term, by name (``dice``, ``ce``, ``focal``, ``tversky``, ``boundary``)."""
        logits = logits.float()
        labels = as_labels(target, logits)
        mode = "binary" if logits.shape[1] == 1 else "multiclass"
        w = self.class_weights.to(logits.device) if self.class_weights is not None else None
        if w is not None and len(w) != (2 if mode == "binary" else logits.shape[1]):
            raise ConfigError(f"{len(w)} class weights for a {mode} model with {logits.shape[1]} output channels; "
                              "binary takes [background, foreground], multiclass one per class")
        out: dict[str, torch.Tensor] = {}
        for name, weight in self.terms.items():
            if name == "ce":
                loss, pw = pixel_ce(logits, labels, w, self.smoothing)
                out[name] = weight * (loss * pw).sum() / pw.sum().clamp(min=1e-12)
            else:
                out[name] = weight * getattr(self, name)[mode](logits, labels)
        if self.boundary_weight > 0:
            loss, pw = pixel_ce(logits, labels, w, self.smoothing)
            with torch.no_grad():
                pw = pw * boundary_weights(labels, self.boundary_sigma)
            out["boundary"] = self.boundary_weight * (loss * pw).sum() / pw.sum().clamp(min=1e-12)
        return out


class DiceBCELoss(CompositeLoss):
    """Soft Dice (over the batch) + BCE on logits: the tutorials' loss, kept for direct use."""

    def __init__(self, dice_weight: float = 1.0, bce_weight: float = 1.0) -> None:
        super().__init__({"dice": dice_weight, "ce": bce_weight})


# ---------------------------------------------------------------------------------------- model outputs
class SegmentationLoss(nn.Module):
    """The loss of a model's output: plain logits, or SegOutputs (deep supervision, edge head).

    ``loss = criterion(outputs, target)``: the main logits get the composite loss; auxiliary logits
    (up-sampled to the target size) get it too, weighted by ``deep_supervision_weights`` (main first;
    default 1, 1/2, 1/4, ... normalised to sum 1); edge logits get class-balanced BCE (HED) against the
    morphological gradient of the target, times ``edge_weight``.
    """

    def __init__(self, pixel: CompositeLoss, deep_supervision_weights: Sequence[float] | None = None,
                 edge_weight: float = 1.0) -> None:
        super().__init__()
        self.pixel, self.edge_weight = pixel, edge_weight
        self.ds_weights = list(deep_supervision_weights) if deep_supervision_weights else None

    def forward(self, outputs: Any, target: torch.Tensor) -> torch.Tensor:
        return self.parts(outputs, target)["loss"]

    def parts(self, outputs: Any, target: torch.Tensor) -> dict[str, torch.Tensor]:
        """``loss`` and its pieces: ``main``, ``aux``, ``edge`` (where present)."""
        from medseg.models.heads import SegOutputs

        if not isinstance(outputs, SegOutputs):
            main = self.pixel(outputs, target)
            return {"loss": main, "main": main}
        out = {"main": self.pixel(outputs.main, target)}
        total = out["main"]
        if outputs.aux:
            n = len(outputs.aux) + 1
            ws = self.ds_weights or [0.5**i for i in range(n)]
            if len(ws) != n:
                raise ConfigError(f"loss.deep_supervision_weights has {len(ws)} values; the model gives {n} "
                                  "outputs (main + auxiliary)")
            ws = [x / sum(ws) for x in ws]
            size = outputs.main.shape[-2:]
            aux = sum(wi * self.pixel(F.interpolate(a.float(), size=size, mode="bilinear", align_corners=False),
                                      target) for wi, a in zip(ws[1:], outputs.aux, strict=True))
            out["aux"] = aux
            total = ws[0] * out["main"] + aux
        if outputs.edge is not None:
            out["edge"] = self.edge_weight * edge_loss(outputs.edge, target)
            total = total + out["edge"]
        out["loss"] = total
        return out


def edge_loss(edge_logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Class-balanced BCE (as in HED, Xie & Tu 2015) of edge logits against the target's morphological
    gradient: the mean over edge pixels and the mean over the other pixels, averaged."""
    edge_logits = edge_logits.float()
    labels = target.unsqueeze(1) if target.dim() == edge_logits.dim() - 1 else target
    edges = boundary_map(labels.round() if labels.is_floating_point() else labels)
    loss = F.binary_cross_entropy_with_logits(edge_logits, edges, reduction="none")
    on = edges.sum()
    if on == 0:
        return loss.mean()
    return 0.5 * (loss * edges).sum() / on + 0.5 * (loss * (1 - edges)).sum() / (edges.numel() - on).clamp(min=1)


# ---------------------------------------------------------------------------------------- registry
_HELP = {
    "dice_bce": "soft Dice + binary cross-entropy (CE for multiclass); the default",
    "dice_ce": "soft Dice + cross-entropy (BCE for one channel); same as dice_bce",
    "dice": "soft Dice (MONAI DiceLoss)",
    "ce": "cross-entropy (BCE for one channel), label smoothing, class weights",
    "focal": "focal loss (MONAI FocalLoss), gamma",
    "tversky": "Tversky loss (MONAI TverskyLoss), tversky_alpha (FP) / tversky_beta (FN)",
    "dice_focal": "alpha * Dice + (1 - alpha) * focal",
}


def _terms(name: str, cfg: Any) -> dict[str, float]:
    return {
        "dice_bce": {"dice": cfg.dice_weight, "ce": cfg.bce_weight},
        "dice_ce": {"dice": cfg.dice_weight, "ce": cfg.bce_weight},
        "dice": {"dice": 1.0},
        "ce": {"ce": 1.0},
        "focal": {"focal": 1.0},
        "tversky": {"tversky": 1.0},
        "dice_focal": {"dice": cfg.alpha, "focal": 1.0 - cfg.alpha},
    }[name]


def _register(name: str) -> None:
    @LOSSES.register(name, help=_HELP[name])
    def build(cfg: Any, class_weights: Sequence[float] | None = None) -> SegmentationLoss:
        pixel = CompositeLoss(_terms(name, cfg), class_weights=class_weights, label_smoothing=cfg.label_smoothing,
                              gamma=cfg.gamma, tversky_alpha=cfg.tversky_alpha, tversky_beta=cfg.tversky_beta,
                              include_background=cfg.include_background, boundary_weight=cfg.boundary_weight,
                              boundary_sigma=cfg.boundary_sigma)
        return SegmentationLoss(pixel, cfg.deep_supervision_weights, cfg.edge_weight)


for _name in _HELP:
    _register(_name)


def build_loss(cfg: Any, class_counts: Sequence[float] | None = None) -> SegmentationLoss:
    """Build the loss a :class:`~medseg.config.LossConfig` names.

    ``class_counts`` (pixels per class in the training masks; binary: [background, foreground]) are
    needed when ``cfg.class_weights == "auto"``.
    """
    weights = cfg.class_weights
    if weights == "auto":
        if class_counts is None:
            raise ConfigError("loss.class_weights=auto needs the training masks' pixel counts per class")
        weights = class_weights_from_counts(class_counts)
    return LOSSES.build(cfg.name, cfg=cfg, class_weights=weights)
