"""Model zoo, and what the PTQ methods need to know about each model.

`quantizable_layers(model)` lists every Conv2d and Linear in forward order (the first is the
stem, the last the classifier); `reconstruction_units(model)` groups them into the units that
block-wise methods (BRECQ) reconstruct together.
"""
from __future__ import annotations

import torch
from torch import nn


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

    def reconstruction_units(self) -> list[list[str]]:
        return [[name] for name, _ in quantizable_layers(self)]


def build_model(arch: str, num_classes: int, in_channels: int, image_size: int) -> nn.Module:
    if arch == "digits_cnn":
        return DigitsCNN(num_classes, in_channels)
    from . import zoo  # CIFAR-form ResNets and DenseNet

    return zoo.build(arch, num_classes, in_channels, image_size)


def quantizable_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Every Conv2d and Linear, in registration order (= forward order for our models)."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def reconstruction_units(model: nn.Module) -> list[list[str]]:
    """Groups of layer names optimised together by block-wise reconstruction."""
    if hasattr(model, "reconstruction_units"):
        return model.reconstruction_units()
    return [[name] for name, _ in quantizable_layers(model)]
