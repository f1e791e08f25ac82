"""Model zoo, and what the PTQ methods need to know about each model.

`quantizable_layers(model)` lists every Conv2d and Linear in forward order (the first is the
stem, the last the classifier). `reconstruction_units(model)` cuts the forward pass into a
chain of `Unit`s: feeding the input through every unit's module in turn gives the model's
output, and every quantizable layer belongs to exactly one unit. Block-wise methods (BRECQ)
reconstruct one unit at a time, carrying FP and quantized activations from unit to unit.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


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


class DigitsCNN(nn.Module):
    """A small CNN with BatchNorm for 8x8 digits: big enough to memorise its members.

    conv 3x3 (32) - conv 3x3 (64) - maxpool - conv 3x3 (64) - flatten - linear.
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 1, width: int = 32):
        super().__init__()
        w = width
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True),
            nn.Conv2d(w, 2 * w, 3, padding=1, bias=False), nn.BatchNorm2d(2 * w), nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(2 * w, 2 * w, 3, padding=1, bias=False), nn.BatchNorm2d(2 * w), nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d(2),
        )
        self.classifier = nn.Linear(2 * w * 4, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))

    def reconstruction_units(self) -> list[Unit]:
        f = self.features
        return [unit_of(self, "conv1", nn.Sequential(f[0], f[1], f[2])),
                unit_of(self, "conv2", nn.Sequential(f[3], f[4], f[5], f[6])),
                unit_of(self, "conv3", nn.Sequential(f[7], f[8], f[9], f[10], nn.Flatten(1))),
                unit_of(self, "classifier", self.classifier)]


def build_model(arch: str, num_classes: int, in_channels: int, image_size: int) -> nn.Module:
    if arch == "digits_cnn":
        return DigitsCNN(num_classes, in_channels)
    from . import zoo  # CIFAR-form ResNets and DenseNet

    return zoo.build(arch, num_classes, in_channels, image_size)


def quantizable_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Every Conv2d and Linear, in registration order (= forward order for our models)."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def reconstruction_units(model: nn.Module) -> list[Unit]:
    """The model's forward pass as a chain of units (see the module docstring)."""
    if not hasattr(model, "reconstruction_units"):
        raise TypeError(f"{type(model).__name__} does not define reconstruction_units()")
    return model.reconstruction_units()
