"""What the PTQ methods need to know about a model, and the one entry point that builds it.

`build_model(arch, ...)` builds any architecture of the zoo (ptqlib/zoo.py).
`quantizable_layers(model)` lists every Conv2d and Linear in forward order (the first is the
stem, the last the classifier). `reconstruction_units(model)` cuts the forward pass into a
chain of `Unit`s: feeding the input through every unit's module in turn gives the model's
output, and every quantizable layer belongs to exactly one unit. Block-wise methods (BRECQ)
reconstruct one unit at a time, carrying FP and quantized activations from unit to unit.
"""
from __future__ import annotations

from torch import nn

from . import zoo
from .zoo import DigitsCNN, Unit, unit_of  # noqa: F401  (re-exported: the names PTQ code and tests use)


def build_model(arch: str, num_classes: int, in_channels: int, image_size: int,
                stem_init: str = "kaiming_normal") -> nn.Module:
    """A freshly initialised model of the zoo (ValueError naming the valid archs otherwise)."""
    return zoo.build(arch, num_classes, in_channels, image_size, stem_init)


def quantizable_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Every Conv2d and Linear, in registration order (= forward order for our models)."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def reconstruction_units(model: nn.Module) -> list[Unit]:
    """The model's forward pass as a chain of units (see the module docstring)."""
    if not hasattr(model, "reconstruction_units"):
        raise TypeError(f"{type(model).__name__} does not define reconstruction_units()")
    return model.reconstruction_units()
