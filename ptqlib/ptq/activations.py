"""Simulated activation quantization: a uniform per-tensor grid on the input of every quantized layer.

Each Conv2d and Linear gets a forward pre-hook that rounds its input onto an asymmetric
per-tensor grid of 2^b levels, `x_hat = (q - z) * s`, q in {0 .. L-1}. The range [lo, hi]
always includes 0 (so 0, and every ReLU zero, stays exact) and is calibrated layer by layer
on the calibration set, each layer seeing the already activation-quantized prefix:

- minmax: the calibration activations' min and max;
- mse: the shrink a * [min, max] (a = 1 included) with the smallest squared error;
- percentile: the 0.01% and 99.99% quantiles (outliers clipped).

The ranges are plain numbers (`{layer: (lo, hi)}`), stored beside the model's weights and
re-attached on load: the model's own state_dict is untouched.
"""
from __future__ import annotations

import torch
from torch import nn

from ptqlib.models.zoo import quantizable_layers
from .reconstruction import capture

ACT_RANGES = ("minmax", "mse", "percentile")
MSE_CANDIDATES = 80  # shrinks a = 1, 0.99, ..., 0.21 of the min-max range
PERCENTILE = 1e-4  # clipped share at each end


def act_grid(lo: float, hi: float, levels: int) -> tuple[float, float]:
    """(scale, integer zero point) of the asymmetric grid over [min(lo, 0), max(hi, 0)]."""
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    scale = (hi - lo) / (levels - 1) if hi > lo else 1.0
    return scale, float(round(-lo / scale))


def fake_quantize(x: torch.Tensor, lo: float, hi: float, levels: int) -> torch.Tensor:
    """`x` rounded onto the grid of [lo, hi] (values outside are clipped to its ends)."""
    scale, zero = act_grid(lo, hi, levels)
    return (torch.clamp(torch.round(x / scale) + zero, 0, levels - 1) - zero) * scale


def calibrate_range(x: torch.Tensor, levels: int, method: str = "minmax") -> tuple[float, float]:
    """The (lo, hi) range of one layer's calibration activations `x` (any shape)."""
    x = x.detach().float().flatten()
    lo, hi = min(float(x.min()), 0.0), max(float(x.max()), 0.0)
    if method == "minmax":
        return lo, hi
    if method == "percentile":
        k = max(1, int(PERCENTILE * x.numel()))
        low = float(x.kthvalue(k).values) if lo < 0 else 0.0
        high = float(x.kthvalue(x.numel() - k + 1).values) if hi > 0 else 0.0
        return min(low, 0.0), max(high, 0.0)
    if method == "mse":
        best, best_err = (lo, hi), float("inf")
        for a in torch.linspace(1.0, 0.21, MSE_CANDIDATES).tolist():
            err = float((fake_quantize(x, a * lo, a * hi, levels) - x).square().sum())
            if err < best_err:
                best, best_err = (a * lo, a * hi), err
        return best
    raise ValueError(f"act_range: {method!r} is not one of {list(ACT_RANGES)}")


class ActivationQuantizer:
    """Forward pre-hook: rounds a layer's input onto its calibrated per-tensor grid."""

    def __init__(self, lo: float, hi: float, levels: int):
        self.lo, self.hi, self.levels = lo, hi, levels

    def __call__(self, module: nn.Module, args: tuple) -> tuple:
        return (fake_quantize(args[0], self.lo, self.hi, self.levels),) + tuple(args[1:])


def attach_activation_quantizers(model: nn.Module, ranges: dict[str, tuple[float, float]], bits: int) -> nn.Module:
    """Hook an activation quantizer on every layer named in `ranges` (in place); returns `model`."""
    layers = dict(quantizable_layers(model))
    unknown = sorted(set(ranges) - set(layers))
    if unknown:
        raise KeyError(f"activation ranges: unknown layers {unknown}; quantizable layers are {list(layers)}")
    for name, (lo, hi) in ranges.items():
        layers[name].register_forward_pre_hook(ActivationQuantizer(lo, hi, 2 ** int(bits)))
    return model


def _layer_input(model: nn.Module, layer: nn.Module, calib: torch.Tensor, batch: int = 256) -> torch.Tensor:
    """What `layer` receives while `model` runs on the calibration images (after earlier layers' quantizers)."""
    return capture(model, layer, calib, "input", chunk=batch)


@torch.no_grad()
def quantize_activations(model: nn.Module, bits: int, calib: torch.Tensor,
                         method: str = "minmax") -> dict[str, tuple[float, float]]:
    """Calibrate and attach activation quantizers on every quantizable layer, first to last (in place).

    Each layer's range is fitted on its inputs from the model with the earlier layers'
    activation quantizers already attached. Returns `{layer: (lo, hi)}`.
    """
    if method not in ACT_RANGES:
        raise ValueError(f"act_range: {method!r} is not one of {list(ACT_RANGES)}")
    model.eval()
    ranges = {}
    for name, layer in quantizable_layers(model):
        ranges[name] = calibrate_range(_layer_input(model, layer, calib), 2 ** int(bits), method)
        attach_activation_quantizers(model, {name: ranges[name]}, bits)
    return ranges
