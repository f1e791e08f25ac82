"""The paper's architectures in CIFAR form, on torchvision's definitions (see `zoo`).

Kept apart from `zoo` so that importing torchvision (about 2.5 s, most of it torch._dynamo through
torchvision.ops) is paid only by a process that builds one of these nets, not by the digits study.
"""
from __future__ import annotations

import torch
from torch import nn
from torchvision.models import densenet as tv_densenet
from torchvision.models import resnet as tv_resnet

from ptqlib.models.units import Unit, check_stem_init, stem_conv, unit_of


class CifarResNet(tv_resnet.ResNet):
    """torchvision's ResNet with a 3x3 stride-1 stem and no max-pool."""

    def __init__(self, block, layers: list[int], num_classes: int, in_channels: int = 3,
                 stem_init: str = "kaiming_normal"):
        super().__init__(block, layers, num_classes=num_classes)
        self.conv1 = stem_conv(in_channels, 64)  # replaces the 7x7 stride-2 conv in place
        self.maxpool = nn.Identity()
        if check_stem_init(stem_init) == "kaiming_normal":
            nn.init.kaiming_normal_(self.conv1.weight, mode="fan_out", nonlinearity="relu")

    def reconstruction_units(self) -> list[Unit]:
        units = [unit_of(self, "stem", nn.Sequential(self.conv1, self.bn1, self.relu))]
        for stage in ("layer1", "layer2", "layer3", "layer4"):
            for i, block in enumerate(getattr(self, stage)):
                units.append(unit_of(self, f"{stage}.{i}", block))
        # the last block's unit ends at its feature map; pooling belongs to the classifier
        units.append(unit_of(self, "classifier", nn.Sequential(self.avgpool, nn.Flatten(1), self.fc)))
        return units


class _DenseStep(nn.Module):
    """One dense layer as a chain link: concatenated features x -> cat([x, layer(x)])."""

    def __init__(self, layer: nn.Module):
        super().__init__()
        self.layer = layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, self.layer(x)], dim=1)


class _ClassifierHead(nn.Module):
    """DenseNet's head as torchvision runs it: norm5 -> relu -> global pool -> flatten -> fc."""

    def __init__(self, norm: nn.Module, fc: nn.Linear):
        super().__init__()
        self.norm, self.fc = norm, fc

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.norm(x))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


class CifarDenseNet(tv_densenet.DenseNet):
    """torchvision's DenseNet with a 3x3 stride-1 stem and no max-pool."""

    def __init__(self, growth_rate: int, block_config: tuple, num_init_features: int,
                 num_classes: int, in_channels: int = 3, stem_init: str = "kaiming_normal"):
        super().__init__(growth_rate=growth_rate, block_config=block_config,
                         num_init_features=num_init_features, num_classes=num_classes)
        self.features.conv0 = stem_conv(in_channels, num_init_features)
        del self.features.pool0
        if check_stem_init(stem_init) == "kaiming_normal":
            nn.init.kaiming_normal_(self.features.conv0.weight)

    def reconstruction_units(self) -> list[Unit]:
        f = self.features
        units = [unit_of(self, "stem", nn.Sequential(f.conv0, f.norm0, f.relu0))]
        for name, child in f.named_children():
            if name.startswith("denseblock"):
                for layer_name, layer in child.named_children():
                    units.append(unit_of(self, f"{name}.{layer_name}", _DenseStep(layer)))
            elif name.startswith("transition"):
                units.append(unit_of(self, name, child))
        units.append(unit_of(self, "classifier", _ClassifierHead(f.norm5, self.classifier)))
        return units


def build_cifar_net(arch: str, num_classes: int, in_channels: int, stem_init: str) -> nn.Module:
    """resnet18, resnet50 or densenet121 in CIFAR form."""
    if arch == "resnet18":
        return CifarResNet(tv_resnet.BasicBlock, [2, 2, 2, 2], num_classes, in_channels, stem_init)
    if arch == "resnet50":
        return CifarResNet(tv_resnet.Bottleneck, [3, 4, 6, 3], num_classes, in_channels, stem_init)
    if arch == "densenet121":
        return CifarDenseNet(32, (6, 12, 24, 16), 64, num_classes, in_channels, stem_init)
    raise ValueError(f"arch {arch!r} is not a CIFAR-form torchvision net; use one of resnet18, resnet50, densenet121")
