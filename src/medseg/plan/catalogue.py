"""The networks the planner chooses from, each with its known cost (parameters).

Trained from scratch, the MONAI residual UNet and DynUNet at two widths (``medseg.models.monai_arch``);
the SMP U-Nets with a ResNet encoder join only when that encoder's ImageNet weights are on this machine
(``medseg models`` / ``medseg.models.weights``): issue 9 found a 24 M-parameter encoder trained from
scratch sees too few epochs in a CPU budget, while pretrained it is the strongest start.
Parameter counts are for 3 input channels and 1 output channel (tests/plan/test_plan.py checks them).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Network:
    """One candidate: its name in plans and machine probes, the ``model`` config section, its size."""

    name: str
    model: dict = field(hash=False)
    params_m: float
    pretrained: bool = False  # needs (and uses) local ImageNet weights of its encoder

    @property
    def label(self) -> str:
        return f"{self.name} ({self.params_m:.1f} M parameters{', ImageNet encoder' if self.pretrained else ''})"


FROM_SCRATCH = (
    Network("monai_unet16", {"arch": "monai_unet", "base_channels": 16, "encoder_weights": None}, 1.63),
    Network("dynunet16", {"arch": "dynunet", "base_channels": 16, "encoder_weights": None}, 1.94),
    Network("monai_unet32", {"arch": "monai_unet", "base_channels": 32, "encoder_weights": None}, 6.50),
    Network("dynunet32", {"arch": "dynunet", "base_channels": 32, "encoder_weights": None}, 7.76),
)
PRETRAINED = (
    Network("unet_resnet18", {"arch": "unet", "encoder": "resnet18", "encoder_weights": "imagenet"}, 14.33, True),
    Network("unet_resnet34", {"arch": "unet", "encoder": "resnet34", "encoder_weights": "imagenet"}, 24.44, True),
)
CATALOGUE = {n.name: n for n in FROM_SCRATCH + PRETRAINED}


def local_weights(network: Network) -> bool:
    """Whether ``network``'s encoder weights are already on this machine (never downloads)."""
    if not network.pretrained:
        return False
    from medseg.errors import WeightsError
    from medseg.models.weights import fetch_imagenet_weights

    try:
        fetch_imagenet_weights(network.model["encoder"], allow_download=False)
    except (WeightsError, OSError):
        return False
    return True


def candidates(with_pretrained: bool | None = None) -> list[Network]:
    """The from-scratch networks, plus the pretrained ones whose weights are local (``with_pretrained``
    None: look; True/False: force, for tests and machine descriptions)."""
    pretrained = [n for n in PRETRAINED if (local_weights(n) if with_pretrained is None else with_pretrained)]
    return list(FROM_SCRATCH) + pretrained
