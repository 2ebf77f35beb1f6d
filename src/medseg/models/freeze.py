"""Freeze and unfreeze a model's encoder: all of it, its first N layers, or its first N stages.

- A *layer* is one convolution or linear layer of the encoder, in the order the forward pass runs them,
  together with the parameters used between it and the next one (its batch norm, layer scales). VGG16
  has 13 layers, so ``layers=10`` freezes blocks 1-4 and leaves block 5 trainable. (Keras counts the
  input and pooling layers too; its ``layers[:10]`` of VGG16 are the first 7 convolutions.)
- A *stage* is the part of the encoder that produces one of its output features (ResNet: stem,
  layer1, ..., layer4; VGG: block1, ..., block5).

Frozen parameters get ``requires_grad = False``; frozen normalisation layers also stop updating their
running statistics (they stay in eval mode through ``model.train()``). An optimiser built while
parameters were frozen does not hold them: build it over all parameters if you unfreeze later.
"""

from __future__ import annotations

import torch
from torch import nn

from medseg.errors import ConfigError

_WEIGHT_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.Linear)
_NORMS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)


def _own_params(module: nn.Module) -> list[nn.Parameter]:
    return list(module.parameters(recurse=False))


def _trace(encoder: nn.Module, size: int = 128) -> tuple[list[tuple[int, str]], list[int]]:
    """Run the encoder once. Returns (first-call step, name) of the modules with parameters in call
    order, and the step at which each output feature was made (the input and empty placeholders
    excluded; -1 where that cannot be told)."""
    first = next(m for m in encoder.modules() if isinstance(m, nn.Conv2d))
    p = next(encoder.parameters())
    x = torch.zeros(1, first.in_channels, size, size, device=p.device, dtype=p.dtype)
    calls: list[tuple[int, str]] = []
    made: list[tuple[int, torch.Tensor]] = []
    seen: set[str] = set()
    step = [0]

    def pre(name: str, module: nn.Module) -> None:
        step[0] += 1
        if name not in seen and _own_params(module):
            seen.add(name)
            calls.append((step[0], name))

    def post(out: object) -> None:
        step[0] += 1
        if isinstance(out, torch.Tensor):
            made.append((step[0], out))

    handles = []
    for name, module in encoder.named_modules():
        handles.append(module.register_forward_pre_hook(lambda m, a, n=name: pre(n, m)))
        handles.append(module.register_forward_hook(lambda m, a, o: post(o)))
    was_training = encoder.training
    try:
        encoder.eval()
        with torch.no_grad():
            feats = encoder(x)
    finally:
        encoder.train(was_training)
        for h in handles:
            h.remove()
    if isinstance(feats, tuple):  # ViT encoders: (features, prefix tokens)
        feats = feats[0]
    ends = []
    for f in feats:
        if f is x or f.shape[1] == 0:
            continue
        same = [s for s, o in made if o is f]  # first: later identity / in-place modules return it too
        shapes = (f.shape, f.permute(0, 2, 3, 1).shape)  # timm channels-last features are permuted by SMP
        alike = [s for s, o in made if o.shape in shapes]
        ends.append(same[0] if same else alike[-1] if alike else -1)
    return calls, ends


def encoder_layers(model: nn.Module) -> list[list[str]]:
    """Names of the encoder's modules with parameters, grouped into layers, in forward order."""
    layers: list[list[str]] = []
    pending: list[str] = []  # parameters used before the first convolution (e.g. ViT embeddings)
    for _, name in _trace(model.encoder)[0]:
        if isinstance(model.encoder.get_submodule(name), _WEIGHT_LAYERS):
            layers.append(pending + [name])
            pending = []
        elif layers:
            layers[-1].append(name)
        else:
            pending.append(name)
    return layers


def encoder_stages(model: nn.Module) -> list[list[str]]:
    """Names of the encoder's modules with parameters, grouped by the output feature they lead to."""
    calls, ends = _trace(model.encoder)
    if -1 in ends or len(set(ends)) != len(ends):
        raise ConfigError(f"cannot tell the stages of encoder {type(model.encoder).__name__}; freeze by layers")
    stages: list[list[str]] = [[] for _ in ends]
    for step, name in calls:
        idx = next((i for i, end in enumerate(ends) if step <= end), None)
        if idx is not None:
            stages[idx].append(name)
    return stages


def _set(model: nn.Module, names: list[str], trainable: bool) -> int:
    n = 0
    frozen_norms = getattr(model, "frozen_norms", None)
    for name in names:
        module = model.encoder.get_submodule(name)
        for p in _own_params(module):
            p.requires_grad = trainable
            n += p.numel()
        if isinstance(module, _NORMS) and not trainable:
            module.eval()
            full = f"encoder.{name}" if name else "encoder"
            if frozen_norms is not None and full not in frozen_norms:
                frozen_norms.append(full)
    return n


def freeze_encoder(model: nn.Module, *, layers: int | None = None, stages: int | None = None) -> int:
    """Freeze the whole encoder, or its first ``layers`` layers, or its first ``stages`` stages.

    Returns the number of parameters (elements) frozen.
    """
    if not hasattr(model, "encoder"):
        raise ConfigError(f"{type(model).__name__} has no encoder to freeze")
    if layers is not None and stages is not None:
        raise ConfigError("freeze either by layers or by stages, not both")
    if layers is None and stages is None:
        names = [name for name, m in model.encoder.named_modules() if _own_params(m)]
    else:
        groups = encoder_layers(model) if layers is not None else encoder_stages(model)
        count = layers if layers is not None else stages
        if count < 0 or count > len(groups):
            unit = "layers" if layers is not None else "stages"
            raise ConfigError(f"cannot freeze {count} {unit}: the encoder has {len(groups)}")
        names = [name for group in groups[:count] for name in group]
    return _set(model, names, trainable=False)


def unfreeze_encoder(model: nn.Module) -> None:
    """Make every encoder parameter trainable again; norm layers follow the model's mode again."""
    names = [name for name, m in model.encoder.named_modules() if _own_params(m)]
    _set(model, names, trainable=True)
    if hasattr(model, "frozen_norms"):
        model.frozen_norms.clear()
    model.encoder.train(model.training)
