"""The chain of reconstruction units a zoo model's forward pass is cut into, and the helpers the
CIFAR-form architectures share (`zoo` and `cifar_nets`); no torchvision import here."""
from __future__ import annotations

from dataclasses import dataclass

from torch import nn

STEM_INITS = ("kaiming_normal", "pytorch_default")


@dataclass
class Unit:
    name: str  # e.g. "stem", "layer1.0", "classifier"
    module: nn.Module  # maps the previous unit's output to this unit's output (shares parameters)
    layers: list[str]  # model-level names of the quantizable layers inside it


def unit_of(model: nn.Module, name: str, module: nn.Module) -> Unit:
    """A Unit whose layer names are resolved against the model (parameters are shared)."""
    ids = {id(m): n for n, m in model.named_modules()}
    layers = [ids[id(m)] for m in module.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    return Unit(name, module, layers)


def stem_conv(in_channels: int, out_channels: int) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=1, padding=1, bias=False)


def check_stem_init(stem_init: str) -> str:
    if stem_init not in STEM_INITS:
        raise ValueError(f"stem_init: {stem_init!r} is not one of {list(STEM_INITS)}")
    return stem_init
