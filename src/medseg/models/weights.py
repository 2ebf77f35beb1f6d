"""Encoder weights: ImageNet from the SMP/timm hub (cached or downloaded), a local file, or none.

``encoder_weights`` values:

- ``none``: random initialisation.
- ``imagenet``: the hub weights of the encoder; taken from the local Hugging Face cache when present,
  downloaded otherwise; a clear error when neither is possible (no retries against a dead network).
- ``auto`` (default): ``imagenet`` when obtainable, otherwise ``none`` with a warning.
- a path to a ``.pth``/``.pt``/``.safetensors`` state dict of the encoder (keys with or without an
  ``encoder.`` prefix; classifier keys such as ``fc.*`` are ignored), e.g. saved on a connected machine.
"""

from __future__ import annotations

import logging
import socket
from pathlib import Path
from typing import TYPE_CHECKING

from medseg._compat import import_torchvision
from medseg.errors import WeightsError

if TYPE_CHECKING:
    from torch import nn

    from medseg.config import ModelConfig

log = logging.getLogger(__name__)

HUB_HOST = "huggingface.co"
_CLASSIFIER_PREFIXES = ("fc.", "classifier.", "head.", "last_linear.")


def hub_reachable(host: str = HUB_HOST, timeout: float = 3.0) -> bool:
    """True when a TCP connection to the weights hub opens within ``timeout`` seconds."""
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def hub_location(encoder: str) -> tuple[str, str | None, str]:
    """(repo_id, revision, filename) of an encoder's ImageNet weights on the hub."""
    import_torchvision()  # before timm / smp (see medseg._compat)
    if encoder.startswith("tu-"):
        import timm

        cfg = timm.models.get_pretrained_cfg(encoder[3:])
        if cfg is None or not cfg.hf_hub_id:
            raise WeightsError(f"timm model {encoder[3:]!r} has no pretrained weights on the hub")
        return cfg.hf_hub_id, None, "model.safetensors"
    import segmentation_models_pytorch as smp

    settings = smp.encoders.encoders.get(encoder, {}).get("pretrained_settings", {})
    if "imagenet" not in settings:
        raise WeightsError(f"encoder {encoder!r} has no ImageNet weights in segmentation-models-pytorch")
    s = settings["imagenet"]
    return s["repo_id"], s.get("revision"), "model.safetensors"


def fetch_imagenet_weights(encoder: str, *, allow_download: bool = True) -> Path:
    """Path of the encoder's ImageNet weights, from the local cache or downloaded."""
    from huggingface_hub import hf_hub_download

    repo_id, revision, filename = hub_location(encoder)
    try:
        return Path(hf_hub_download(repo_id, filename=filename, revision=revision, local_files_only=True))
    except Exception:  # noqa: BLE001 - not cached; try the network below
        pass
    if not allow_download or not hub_reachable():
        raise WeightsError(f"ImageNet weights for encoder {encoder!r} are not cached and {HUB_HOST} cannot be reached; "
                           "save them on a connected machine and pass the file with --set model.encoder_weights=PATH, "
                           "or train from scratch with --set model.encoder_weights=none")
    try:
        return Path(hf_hub_download(repo_id, filename=filename, revision=revision))
    except Exception as err:  # noqa: BLE001
        raise WeightsError(f"downloading ImageNet weights for encoder {encoder!r} failed: {err}") from None


def read_state_dict(path: Path) -> dict:
    import torch

    if not path.is_file():
        raise WeightsError(f"encoder weights file {path} does not exist")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            sd = load_file(str(path), device="cpu")
        else:
            sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001
        raise WeightsError(f"encoder weights file {path} cannot be read: {err}") from None
    for key in ("state_dict", "model"):
        if isinstance(sd, dict) and isinstance(sd.get(key), dict):
            sd = sd[key]
    if not isinstance(sd, dict) or not sd:
        raise WeightsError(f"encoder weights file {path} holds no state dict")
    return sd


def load_state_into_encoder(model: nn.Module, sd: dict, source: str) -> None:
    encoder = model.encoder
    target = encoder.model if hasattr(encoder, "model") and hasattr(encoder.model, "feature_info") else encoder
    if any(k.startswith("encoder.") for k in sd):  # a whole model's state dict: keep the encoder's keys
        sd = {k[len("encoder.") :]: v for k, v in sd.items() if k.startswith("encoder.")}
    sd = {k: v for k, v in sd.items() if not k.startswith(_CLASSIFIER_PREFIXES)}
    own = target.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    if missing or unexpected:
        raise WeightsError(f"encoder weights from {source} do not fit encoder {type(target).__name__}: {len(missing)} "
                           f"missing keys (e.g. {missing[:3]}), {len(unexpected)} unexpected (e.g. {unexpected[:3]})")
    bad = [k for k in own if tuple(own[k].shape) != tuple(sd[k].shape)]
    if bad:
        raise WeightsError(f"encoder weights from {source} have wrong shapes for {len(bad)} tensors (e.g. {bad[0]}: "
                           f"{tuple(sd[bad[0]].shape)} vs {tuple(own[bad[0]].shape)})")
    target.load_state_dict(sd)


def load_encoder_weights(model: nn.Module, cfg: ModelConfig) -> str | None:
    """Load weights per ``cfg.encoder_weights``; returns what was actually used (None, 'imagenet', path)."""
    choice = cfg.encoder_weights
    if not choice:
        return None
    if not getattr(model, "pretrained_encoder", True) and choice in ("imagenet", "auto"):
        if choice == "imagenet":
            raise WeightsError(f"{cfg.arch} has no pretrained encoder; use --set model.encoder_weights=none")
        log.info("%s has no pretrained encoder; training from scratch", cfg.arch)
        return None
    if choice in ("imagenet", "auto"):
        try:
            path = fetch_imagenet_weights(cfg.encoder)
        except WeightsError as err:
            if choice == "imagenet":
                raise
            log.warning("training from scratch: %s", err)
            return None
        if cfg.in_channels != 3:
            raise WeightsError(f"ImageNet weights expect 3 input channels, the model has {cfg.in_channels}; use "
                               "in_channels=3 (grey images are replicated) or encoder_weights=none")
        load_state_into_encoder(model, read_state_dict(path), f"the hub ({path.name})")
        return "imagenet"
    path = Path(choice).expanduser()
    load_state_into_encoder(model, read_state_dict(path), str(path))
    return str(path)
