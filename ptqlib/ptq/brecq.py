"""BRECQ (Li et al. 2021): AdaRound's rounding optimised per reconstruction unit.

Units come from `models.reconstruction_units` (a residual block, a DenseNet layer or
transition; stem and classifier alone). BatchNorm is folded into the preceding conv first,
so the unit's rounding sees the weights that actually act. Every layer of the unit gets its
own `Rounding`; the unit output, with every layer's soft weights in place, is matched to the
FP unit output on inputs from the already-quantized prefix.

The rounding regulariser's weight is `brecq_lambda` (AdaRound's is `adaround_lambda`).

Loss: "mse", or "fisher": the squared error weighted element-wise by the squared gradient of
the cross-entropy (against the FP model's own prediction) with respect to the unit output,
computed on the FP network and normalised to mean 1 so that lambda keeps its meaning.

The result is stated for the original (unfolded) layers: with fold factor f per output
channel, the folded grid (s, z) becomes s / |f| (codes mirrored when f < 0), so the stored
model, BatchNorm kept, computes exactly the folded quantized network BRECQ optimised.
"""
from __future__ import annotations

import copy
from contextlib import contextmanager

import torch
from torch import nn
from torch.nn import functional as F

from ptqlib.models.zoo import Unit
from .bn import fold_batchnorm
from .grid import CLIP_NORM, Grid, QuantizedWeight, reconstruction_grid
from .reconstruction import (CHUNK, Rounding, calibration_input, layer_loss_and_grads, paired_units, reconstruct,
                             rounding_options, run_chunked)


@contextmanager
def soft_weights(layers: list[nn.Module]):
    """Let the caller assign plain tensors to `layer.weight` (the Parameters come back after)."""
    saved = [layer._parameters.pop("weight") for layer in layers]
    try:
        yield
    finally:
        for layer, p in zip(layers, saved):
            if "weight" in layer.__dict__:
                del layer.__dict__["weight"]
            layer._parameters["weight"] = p


def bare_layer_gradient(unit: Unit, layers: list[nn.Module]):
    """The closed-form gradient for a unit that is one bare layer (the classifier), else None (autograd)."""
    return layer_loss_and_grads(layers[0]) if len(layers) == 1 and unit.module is layers[0] else None


def fisher_weights(units_fp, k: int, x_fp: torch.Tensor, chunk: int = CHUNK) -> torch.Tensor:
    """Squared d CE(logits, FP prediction) / d (output of unit k), per calibration image, mean 1."""
    grads = []
    for i in range(0, len(x_fp), chunk):
        with torch.no_grad():
            z = units_fp[k].module(x_fp[i:i + chunk])
        z.requires_grad_(True)
        h = z
        for u in units_fp[k + 1:]:
            h = u.module(h)
        loss = F.cross_entropy(h, h.detach().argmax(1), reduction="sum")
        (g,) = torch.autograd.grad(loss, z)
        grads.append(g.square())
    g2 = torch.cat(grads)
    return g2 / g2.mean().clamp_min(1e-30)


def unfold_result(qw: QuantizedWeight, factor: torch.Tensor | None, original: torch.Tensor,
                  symmetric: bool, clip_norm: float, grid_search: str = "fine") -> QuantizedWeight:
    """Express a folded layer's codes on a grid for the unfolded weights (same dequantized net)."""
    if factor is None:
        return qw
    g, L = qw.grid, qw.grid.levels
    f = factor.view(-1, 1).to(g.scale)
    neg = f < 0
    scale = g.scale / f.abs().clamp_min(1e-30)
    zero = torch.where(neg, (L - 1) - g.zero, g.zero)
    codes = torch.where(neg, (L - 1) - qw.codes, qw.codes)
    dead = f == 0  # gamma = 0: the channel's output ignores its weights; keep RTN codes
    if dead.any():
        w2d = original.flatten(1).float()
        rtn = reconstruction_grid(w2d, L, symmetric, clip_norm, grid_search)
        scale, zero = torch.where(dead, rtn.scale, scale), torch.where(dead, rtn.zero, zero)
        codes = torch.where(dead, rtn.codes(w2d), codes)
    out = QuantizedWeight(Grid(scale, zero, L), codes)
    out.stats = getattr(qw, "stats", None)
    return out


def brecq(model: nn.Module, plan: dict[str, int], calib, *, brecq_loss: str = "mse", brecq_lambda: float = 0.01, seed: int = 0, grid_search: str = "fine",
          **rounding) -> dict[str, QuantizedWeight]:
    """BRECQ unit by unit; `brecq_lambda` weighs the rounding regulariser, `rounding` holds the
    rounding options shared with AdaRound (`reconstruction.ROUNDING_OPTIONS`)."""
    if brecq_loss not in ("mse", "fisher"):
        raise ValueError(f"brecq_loss: {brecq_loss!r} is not one of ['mse', 'fisher']")
    ropts = rounding_options(brecq_lambda, **rounding)
    x = calibration_input(model, calib)
    original = {n: m.weight.detach().clone() for n, m in model.named_modules() if n in plan}
    work = copy.deepcopy(model).eval()  # folded copy that gets quantized unit by unit
    folds = {f.conv: f.factor for f in fold_batchnorm(work, x)}
    fp = copy.deepcopy(work).eval()  # folded FP reference
    pairs = paired_units(work, fp, plan)
    fp_units = [u for _, u in pairs]
    modules = dict(work.named_modules())
    x_q, x_fp = x, x
    out = {}
    for k, (unit, fp_unit) in enumerate(pairs):
        names = [n for n in unit.layers if n in plan]
        layers = [modules[n] for n in names]
        roundings = []
        for n, layer in zip(names, layers):
            w = layer.weight.detach()
            roundings.append(Rounding(w, reconstruction_grid(w.flatten(1), plan[n], False, CLIP_NORM, grid_search)))
        if names:
            target = run_chunked(fp_unit.module, x_fp)
            weight = fisher_weights(fp_units, k, x_fp) if brecq_loss == "fisher" else None

            def forward(xb, ws, unit=unit, layers=layers):
                for layer, w in zip(layers, ws):
                    layer.weight = w
                return unit.module(xb)
            with soft_weights(layers):
                stats = reconstruct(forward, roundings, x_q, target, weight=weight, seed=seed,
                                    loss_and_grads=bare_layer_gradient(unit, layers), **ropts)
            for n, layer, r in zip(names, layers, roundings):
                q = r.quantized()
                q.stats = stats
                out[n] = q
                with torch.no_grad():
                    layer.weight.copy_(q.weight(layer.weight.shape))
        x_q, x_fp = run_chunked(unit.module, x_q), run_chunked(fp_unit.module, x_fp)
    return {n: unfold_result(q, folds.get(n), original[n], False, CLIP_NORM, grid_search) for n, q in out.items()}
