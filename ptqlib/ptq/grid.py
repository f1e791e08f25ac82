"""The quantizer every PTQ method shares, and round-to-nearest (RTN).

Weight-only, per-output-channel uniform grid: a channel's weights become
`w_hat = (q - z) * s` with integer codes `q in {0 .. L-1}`; L = 2^b levels, or 3 for
"1.58-bit". Scale s and zero point z are chosen per channel by shrinking [min, max] (which
always includes 0, so 0 is exactly representable) and keeping the shrink with the smallest
Lp error, p = 2.4, all channels and candidates at once.

Which shrinks are tried is `grid_search`: "fine" (100 shrinks 1 - 0.008 i) or "authors" (80
shrinks 1 - 0.01 i, the Quant-MIA code's AdaRound/BRECQ and OBC quantizers alike). Their
AdaRound/BRECQ quantizer also searches from the channel's raw [min, max], which need not hold 0
(`raw_range`); their OBC quantizer, like ptqlib, widens it to include 0.

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


CLIP_NORM = 2.4  # the grid search minimises the L2.4 error (the paper's); the grid is always asymmetric


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


GRID_SEARCHES = ("fine", "authors")


def shrink_factors(search: str = "fine", candidates: int = 100, max_shrink: float = 0.8) -> torch.Tensor:
    """The range shrinks a grid search tries, largest (1) first, float32.

    fine: 1 - i * max_shrink / candidates, i < candidates (1, 0.992, ..., 0.208 by default);
    authors: 1 - 0.01 i, i < 80 (1, 0.99, ..., 0.21), computed in float64 as their Python loops do.
    """
    if search == "fine":
        return 1.0 - torch.arange(candidates, dtype=torch.float32) * (max_shrink / candidates)
    if search == "authors":
        return (1.0 - torch.arange(80, dtype=torch.float64) * 0.01).float()
    raise ValueError(f"grid_search: {search!r} is not one of {list(GRID_SEARCHES)}")


def fit_grid(w2d: torch.Tensor, levels: int, symmetric: bool = False, norm: float = 2.4,
             candidates: int = 100, max_shrink: float = 0.8, search: str = "fine",
             raw_range: bool = False) -> Grid:
    """Per-channel grid minimising sum |w - round(w)|^norm over shrunken ranges.

    `w2d` is (C, D): one row per output channel. Candidate ranges are [a * min, a * max] for
    the shrinks a of `shrink_factors(search, candidates, max_shrink)`, all channels at once; the
    first of equal errors wins. [min, max] includes 0 unless `raw_range` (the authors'
    AdaRound/BRECQ quantizer: a channel of one sign then has no 0 level). A channel whose range
    is empty (all weights equal) gets scale 1.
    """
    w = w2d.detach().float()
    xmin = w.min(dim=1, keepdim=True).values
    xmax = w.max(dim=1, keepdim=True).values
    if not raw_range:
        xmin, xmax = torch.clamp(xmin, max=0.0), torch.clamp(xmax, min=0.0)
    shrink = shrink_factors(search, candidates, max_shrink)
    candidates = len(shrink)
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


def reconstruction_grid(w2d: torch.Tensor, levels: int, symmetric: bool, clip_norm: float,
                        grid_search: str) -> Grid:
    """The grid of RTN, AdaRound and BRECQ: with grid_search "authors", their AdaRound/BRECQ
    quantizer's (80 shrinks of 1% from the raw [min, max])."""
    return fit_grid(w2d, levels, symmetric=symmetric, norm=clip_norm, search=grid_search,
                    raw_range=grid_search == "authors")


def round_to_nearest(model: nn.Module, plan: dict[str, int], calib=None, *,
                     grid_search: str = "fine") -> dict[str, QuantizedWeight]:
    """RTN: every weight to its nearest grid point; needs no calibration data."""
    layers = dict(quantizable_layers(model))
    out = {}
    for name, levels in plan.items():
        w2d = layers[name].weight.detach().flatten(1)
        grid = reconstruction_grid(w2d, levels, False, CLIP_NORM, grid_search)
        out[name] = QuantizedWeight(grid, grid.codes(w2d))
    return out
