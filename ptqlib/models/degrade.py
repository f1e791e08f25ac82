"""Full-precision models degraded by means other than quantization: the study's controls.

- `add_weight_noise`: seeded Gaussian noise added layer by layer so that ||noise|| / ||w|| equals a
  requested relative error in every quantizable layer (a quantized recipe's, to match it);
- `prune_global`: global unstructured L1 magnitude pruning of every quantizable layer's weights
  (`torch.nn.utils.prune`), a capacity reduction compared with PTQ as a defence.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn.utils import prune

from ptqlib.models.zoo import quantizable_layers


def noise_seed(model_seed: int, salt: int) -> int:
    """The seed of one control's noise: its model's seed, mixed with the control's own salt."""
    return int(np.random.SeedSequence([model_seed, 3, salt]).generate_state(1)[0])


@torch.no_grad()
def add_weight_noise(model: nn.Module, relative_error: dict[str, float], seed: int) -> dict[str, float]:
    """Add Gaussian noise to each named layer's weight so ||noise|| / ||w|| = its relative error (in place).

    The noise is drawn i.i.d. N(0, 1) from a seeded generator and rescaled to the exact norm.
    Returns the relative error reached in every layer.
    """
    layers = dict(quantizable_layers(model))
    unknown = sorted(set(relative_error) - set(layers))
    if unknown:
        raise KeyError(f"weight noise: unknown layers {unknown}; quantizable layers are {list(layers)}")
    gen = torch.Generator().manual_seed(seed)
    reached = {}
    for name, err in relative_error.items():
        w = layers[name].weight
        noise = torch.randn(w.shape, generator=gen, dtype=torch.float64)
        noise *= float(err) * float(w.double().norm()) / float(noise.norm())
        original = w.detach().clone()
        w.add_(noise.to(w.dtype))
        reached[name] = float((w.double() - original.double()).norm() / original.double().norm())
    return reached


def prune_global(model: nn.Module, sparsity: float) -> dict[str, float]:
    """Global unstructured L1 pruning of every quantizable layer's weight, made permanent (in place).

    Exactly round(sparsity * total weights) weights, the smallest in magnitude over all layers
    together, are set to zero. Returns each layer's share of zeros.
    """
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"prune_sparsity: {sparsity} must lie in [0, 1)")
    layers = quantizable_layers(model)
    prune.global_unstructured([(m, "weight") for _, m in layers], pruning_method=prune.L1Unstructured,
                              amount=int(round(sparsity * sum(m.weight.numel() for _, m in layers))))
    for _, m in layers:
        prune.remove(m, "weight")
    return {n: float((m.weight == 0).float().mean()) for n, m in layers}


def sparsity_of(model: nn.Module) -> float:
    """Share of zero weights over every quantizable layer."""
    layers = quantizable_layers(model)
    return sum(int((m.weight == 0).sum()) for _, m in layers) / sum(m.weight.numel() for _, m in layers)
