"""Every architecture of the study, each able to cut its forward pass into reconstruction units.

- digits_cnn: a small CNN for scikit-learn's 8x8 digits (the offline default).
- resnet18, resnet50, densenet121: the paper's architectures in CIFAR form, built on
  torchvision's definitions with the ImageNet stem replaced by a 3x3 stride-1 conv and no
  max-pool, so 32x32 (CIFAR) and 64x64 (TinyImageNet) inputs keep their resolution in the
  first stage. `stem_init` says how that replaced stem starts: "kaiming_normal" (as torchvision
  initialises every other conv of the net) or "pytorch_default" (nn.Conv2d's own initialisation,
  uniform within 1/sqrt(fan_in): the authors' replacement conv keeps it).
- airbench_small: an airbench-style conv-pool net sized for a laptop CPU (see AirbenchSmall).

The torchvision-based nets live in `cifar_nets`, imported only when one is built.

`reconstruction_units()` cuts a model's forward pass into a chain of `Unit`s: feeding the input
through every unit's module in turn gives the model's output, and every Conv2d and Linear
belongs to exactly one unit. Block units of the CIFAR architectures end at the block's
feature map; global pooling and flattening belong to the classifier unit, as in the authors'
BRECQ (DigitsCNN's last conv unit keeps its 2x2 pooling and flattening). Registration order of the
modules is the forward order, so `quantizable_layers` lists the stem first and the
classifier last.
"""
from __future__ import annotations

import torch
from torch import nn

from ptqlib.models.units import Unit, check_stem_init, unit_of

ZOO_ARCHS = ("digits_cnn", "resnet18", "resnet50", "densenet121", "airbench_small")
REPLACED_STEMS = ("resnet18", "resnet50", "densenet121")  # the archs whose stem `stem_init` sets


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


AIRBENCH_WIDTHS = (32, 32, 64, 128)  # airbench_small at width 1: 0.29M weights


class AirbenchSmall(nn.Module):
    """An airbench-style net (KellerJordan/cifar10-airbench) narrowed for a laptop CPU.

    stem conv 3x3 (w0) - three blocks [conv 3x3 - max-pool 2 - BN - ReLU - conv 3x3 - BN - ReLU]
    of widths w1, w2, w3 - global max-pool - linear. Pooling right after each block's first conv
    runs its second conv at a quarter of the pixels (the FLOP saving airbench is built on);
    no residual connections. Inputs of 8 pixels or more (each block halves the resolution).
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 3, widths: tuple = AIRBENCH_WIDTHS):
        super().__init__()
        w0, *block_widths = widths
        self.stem = nn.Sequential(nn.Conv2d(in_channels, w0, 3, padding=1, bias=False), nn.BatchNorm2d(w0),
                                  nn.ReLU(inplace=True))
        blocks, c = [], w0
        for w in block_widths:
            blocks.append(nn.Sequential(
                nn.Conv2d(c, w, 3, padding=1, bias=False), nn.MaxPool2d(2), nn.BatchNorm2d(w), nn.ReLU(inplace=True),
                nn.Conv2d(w, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True)))
            c = w
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.Sequential(nn.AdaptiveMaxPool2d(1), nn.Flatten(1))
        self.fc = nn.Linear(c, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.blocks(self.stem(x))))

    def reconstruction_units(self) -> list[Unit]:
        units = [unit_of(self, "stem", self.stem)]
        units += [unit_of(self, f"blocks.{i}", block) for i, block in enumerate(self.blocks)]
        units.append(unit_of(self, "classifier", nn.Sequential(self.pool, self.fc)))
        return units


def scaled_widths(width: float, widths: tuple = AIRBENCH_WIDTHS) -> tuple:
    """airbench_small's layer widths times `width` (at least 1 channel); weights grow about as width²."""
    if not width > 0:
        raise ValueError(f"width: {width!r} is invalid; use a positive factor (1 = the standard widths)")
    return tuple(max(1, round(w * width)) for w in widths)


def build_model(arch: str, num_classes: int, in_channels: int = 3, image_size: int = 32,
                stem_init: str = "kaiming_normal", width: float = 1.0) -> nn.Module:
    """A model of the zoo; global pooling makes the CIFAR-form ones work for 32x32 and 64x64 inputs.

    `stem_init` applies to the archs with a replaced stem (`REPLACED_STEMS`); the others keep their own.
    `width` scales airbench_small's channels (the model-scale study); the other archs take only 1."""
    if check_stem_init(stem_init) != "kaiming_normal" and arch not in REPLACED_STEMS:
        raise ValueError(f"stem_init: {stem_init!r} applies only to {list(REPLACED_STEMS)}, not arch {arch!r}")
    if width != 1 and arch != "airbench_small":
        raise ValueError(f"width: {width!r} applies only to airbench_small, not arch {arch!r}; use 1")
    if arch == "digits_cnn":
        return DigitsCNN(num_classes, in_channels)
    if image_size < 8:
        raise ValueError(f"arch {arch!r}: images of {image_size} pixels are too small; need at least 8")
    if arch in REPLACED_STEMS:
        from ptqlib.models.cifar_nets import build_cifar_net  # torchvision only for these nets
        return build_cifar_net(arch, num_classes, in_channels, stem_init)
    if arch == "airbench_small":
        return AirbenchSmall(num_classes, in_channels, scaled_widths(width))
    raise ValueError(f"arch {arch!r} is not in the zoo; use one of {list(ZOO_ARCHS)}")


def quantizable_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Every Conv2d and Linear, in registration order (= forward order for the zoo's models)."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def reconstruction_units(model: nn.Module) -> list[Unit]:
    """The model's forward pass as a chain of units (see the module docstring)."""
    if not hasattr(model, "reconstruction_units"):
        raise TypeError(f"{type(model).__name__} does not define reconstruction_units()")
    return model.reconstruction_units()
