"""BatchNorm folding (for BRECQ) and BatchNorm re-tuning (the optional post-PTQ step).

A BatchNorm in eval mode is a per-channel affine map y = f * (x - mean) + beta with
f = gamma / sqrt(var + eps). When its input is the output of a conv, it can be folded into
that conv: W' = f * W, b' = f * (b - mean) + beta. Which BN follows which conv is found by
watching one forward pass (a BN whose input tensor *is* a conv's output), so the same code
serves every architecture; pre-activation BNs (DenseNet's norm1) are left alone.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Iterator

import torch
from torch import nn

RETUNE_SAMPLINGS = ("with_replacement", "without_replacement")


@dataclass
class Fold:
    conv: str  # model-level name of the conv
    bn: str  # model-level name of the BatchNorm folded into it
    factor: torch.Tensor  # (C_out,) gamma / sqrt(var + eps): W_folded = factor * W


def conv_bn_pairs(model: nn.Module, example: torch.Tensor) -> list[tuple[str, str]]:
    """(conv name, bn name) for every BatchNorm2d that directly consumes a Conv2d's output."""
    conv_out: dict[int, tuple[str, torch.Tensor]] = {}
    pairs = []
    hooks = []
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            hooks.append(m.register_forward_hook(
                lambda mod, inp, out, name=name: conv_out.__setitem__(id(out), (name, out))))
        elif isinstance(m, nn.BatchNorm2d):
            def watch(mod, inp, name=name):
                hit = conv_out.get(id(inp[0]))
                if hit is not None and hit[1] is inp[0]:
                    pairs.append((hit[0], name))
            hooks.append(m.register_forward_pre_hook(watch))
    try:
        with torch.no_grad():
            model.eval()(example)
    finally:
        for h in hooks:
            h.remove()
    seen, out = set(), []
    for conv, bn in pairs:  # a module reused in forward would show up twice
        if (conv, bn) not in seen:
            seen.add((conv, bn))
            out.append((conv, bn))
    return out


def _set_module(model: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, leaf = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, leaf, new)


@torch.no_grad()
def fold_batchnorm(model: nn.Module, example: torch.Tensor) -> list[Fold]:
    """Fold every conv -> BN pair of `model` in place (the BN becomes nn.Identity).

    `example` is any valid input batch (one image is enough). Returns the folds, whose
    factors let a caller express folded weights in the unfolded layer's scale.
    """
    modules = dict(model.named_modules())
    folds = []
    for conv_name, bn_name in conv_bn_pairs(model, example[:1]):
        conv, bn = modules[conv_name], modules[bn_name]
        factor = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)
        bias = conv.bias.detach() if conv.bias is not None else torch.zeros_like(bn.running_mean)
        conv.weight.mul_(factor.view(-1, *([1] * (conv.weight.dim() - 1))))
        conv.bias = nn.Parameter(factor * (bias - bn.running_mean) + bn.bias.detach())
        _set_module(model, bn_name, nn.Identity())
        folds.append(Fold(conv_name, bn_name, factor.clone()))
    return folds


@torch.no_grad()
def retune_batchnorm(model: nn.Module, batches: Iterable[torch.Tensor], momentum: float | None = 0.1) -> nn.Module:
    """Re-tune every BatchNorm's running statistics on `batches` (in place), then eval mode.

    Every BN's running stats are reset, then each batch runs forward with the BNs in train
    mode and the given momentum (0.1: the authors' BN tuning after OBC; None: the exact
    cumulative average of the batch statistics). No gradient is taken, the other modules stay
    in eval mode, and only BN buffers change; each BN's own momentum is restored after.
    """
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in bns]
    model.eval()
    for m in bns:
        m.reset_running_stats()
        m.momentum = momentum
        m.train()
    dev = next(model.parameters()).device
    try:
        for batch in batches:
            model(batch.to(dev))
    finally:
        for m, mom in zip(bns, saved):
            m.momentum = mom
    return model.eval()


def retune_indices(n: int, batch_size: int, steps: int, generator: torch.Generator,
                   sampling: str = "with_replacement") -> Iterator[torch.Tensor]:
    """The image indices of each of `steps` re-tuning batches, drawn lazily (a caller may draw
    augmentations from the same generator between batches).

    with_replacement: min(batch_size, n) independent draws per batch; without_replacement: shuffled
    passes over the n images, each pass cut into batches of batch_size (the last one smaller when
    n is not a multiple), as a shuffling DataLoader: every image once per pass (the authors' 100
    batches of 128 from 1024 images are 12.5 passes).
    """
    if sampling not in RETUNE_SAMPLINGS:
        raise ValueError(f"batch_sampling: {sampling!r} is not one of {list(RETUNE_SAMPLINGS)}")
    done = 0
    while done < steps:
        if sampling == "with_replacement":
            yield torch.randint(n, (min(batch_size, n),), generator=generator)
            done += 1
            continue
        order = torch.randperm(n, generator=generator)
        for start in range(0, n, batch_size):
            if done == steps:
                return
            yield order[start:start + batch_size]
            done += 1


def reestimate_batchnorm(model: nn.Module, images: torch.Tensor, batch_size: int = 256) -> nn.Module:
    """BN statistics as the exact average of the per-batch statistics over `images` (in batches
    of `batch_size`), independent of the old ones: `retune_batchnorm` with momentum None."""
    return retune_batchnorm(model, (images[i:i + batch_size] for i in range(0, len(images), batch_size)),
                            momentum=None)
