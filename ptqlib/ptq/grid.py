"""The quantizer every PTQ method shares, and round-to-nearest (RTN).

Weight-only, per-output-channel uniform grid: a channel's weights become
`w_hat = (q - z) * s` with integer codes `q in {0 .. L-1}`; L = 2^b levels, or 3 for
"1.58-bit". Scale s and zero point z are chosen per channel by shrinking [min, max] (which
always includes 0, so 0 is exactly representable) and keeping the shrink with the smallest
Lp error, p = 2.4, all channels and candidates at once.

A method's result is one `QuantizedWeight` (grid + integer codes) per layer: the grid is
fitted here, methods differ only in how they choose the codes.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ptqlib.models.zoo import quantizable_layers


def n_levels(bits: float) -> int:
    """Number of grid levels for a bit-width: 2^b, and 3 for the ternary "1.58-bit"."""
    if abs(bits - 1.58) < 1e-9:
        return 3
    if bits != int(bits) or not 2 <= bits <= 16:
        raise ValueError(f"bits must be 1.58 or an integer in 2..16, got {bits}")
    return 2 ** int(bits)


@dataclass
class Grid:
    """Per-output-channel uniform grid; `scale` and `zero` have shape (C, 1)."""
    scale: torch.Tensor
    zero: torch.Tensor
    levels: int

    def codes(self, w2d: torch.Tensor) -> torch.Tensor:
        return torch.clamp(torch.round(w2d / self.scale) + self.zero, 0, self.levels - 1)

    def dequantize(self, codes: torch.Tensor) -> torch.Tensor:
        return (codes - self.zero) * self.scale

    def round(self, w2d: torch.Tensor) -> torch.Tensor:
        """Round-to-nearest onto the grid (clipping outside the range)."""
        return self.dequantize(self.codes(w2d))


def _grid_from_range(xmin: torch.Tensor, xmax: torch.Tensor, levels: int, symmetric: bool):
    if symmetric:
        half = levels // 2
        scale = torch.maximum(xmax.abs(), xmin.abs()) / half
        scale = torch.where(scale > 0, scale, torch.ones_like(scale))
        return scale, torch.full_like(scale, float(half))
    scale = (xmax - xmin) / (levels - 1)
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    zero = torch.round(-xmin / scale)
    return scale, zero


def fit_grid(w2d: torch.Tensor, levels: int, symmetric: bool = False, norm: float = 2.4,
             candidates: int = 100, max_shrink: float = 0.8) -> Grid:
    """Per-channel grid minimising sum |w - round(w)|^norm over shrunken ranges.

    `w2d` is (C, D): one row per output channel. Candidate ranges are
    [a * min, a * max] for a = 1, 1 - max_shrink/candidates, ..., all channels at once.
    """
    w = w2d.detach().float()
    xmin = torch.clamp(w.min(dim=1, keepdim=True).values, max=0.0)
    xmax = torch.clamp(w.max(dim=1, keepdim=True).values, min=0.0)
    shrink = 1.0 - torch.arange(candidates, dtype=torch.float32) * (max_shrink / candidates)
    best_err = torch.full_like(xmin, float("inf"))
    best_scale, best_zero = _grid_from_range(xmin, xmax, levels, symmetric)
    chunk = max(1, (1 << 24) // max(1, w.numel()))  # bound memory: ~16M elements per step
    for start in range(0, candidates, chunk):
        a = shrink[start:start + chunk].view(-1, 1, 1)  # (G, 1, 1)
        scale, zero = _grid_from_range(a * xmin, a * xmax, levels, symmetric)  # (G, C, 1)
        # q - zero for q = clamp(round(w / s) + z, 0, L - 1), z an integer; in place: no (G, C, D) copies
        q = torch.div(w, scale).round_().clamp_(-zero, (levels - 1) - zero)
        err = q.mul_(scale).sub_(w).abs_().pow_(norm).sum(dim=2, keepdim=True)  # (G, C, 1)
        err_min, arg = err.min(dim=0)
        better = err_min < best_err
        best_err = torch.where(better, err_min, best_err)
        pick = arg.view(1, -1, 1)
        best_scale = torch.where(better, scale.gather(0, pick).squeeze(0), best_scale)
        best_zero = torch.where(better, zero.gather(0, pick).squeeze(0), best_zero)
    return Grid(best_scale, best_zero, levels)


@dataclass
class QuantizedWeight:
    grid: Grid
    codes: torch.Tensor  # float tensor of integers, shape of the weight viewed as (C, D)

    def weight(self, shape) -> torch.Tensor:
        return self.grid.dequantize(self.codes).view(shape)


def round_to_nearest(model: nn.Module, plan: dict[str, int], calib=None, *, symmetric: bool = False,
                     clip_norm: float = 2.4) -> dict[str, QuantizedWeight]:
    """RTN: every weight to its nearest grid point; needs no calibration data."""
    layers = dict(quantizable_layers(model))
    out = {}
    for name, levels in plan.items():
        w2d = layers[name].weight.detach().flatten(1)
        grid = fit_grid(w2d, levels, symmetric=symmetric, norm=clip_norm)
        out[name] = QuantizedWeight(grid, grid.codes(w2d))
    return out
