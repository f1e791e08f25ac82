"""Full-precision models degraded by means other than quantization: the study's controls.

Does low-bit PTQ leak less because it lost accuracy, or because it quantized? A control loses
accuracy another way, and is attacked the same way (the same FP shadows):

- weight noise (`ControlJob`): seeded Gaussian noise added layer by layer so that
  ||noise|| / ||w|| equals a quantized recipe's relative weight error (read from its quantize
  job), or a requested value, in every quantizable layer;
- fewer training epochs: plain `TrainJob`s with other `epochs` (planned in `plan.py`);
- magnitude pruning (`PruneJob`): global unstructured L1 pruning of every quantizable layer's
  weights (`torch.nn.utils.prune`), a capacity reduction compared with PTQ as a defence.

`match_controls` picks, for each quantized recipe, the control of each kind whose mean test
accuracy is closest to the recipe's.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.nn.utils import prune

from .jobs import QuantizeJob, StudyJob, TrainJob, _save_model, load_data
from .models import quantizable_layers
from .store import Store
from .training import accuracy


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


@dataclass(frozen=True)
class ControlJob(StudyJob):
    """A trained model with Gaussian weight noise of a quantized recipe's (or a requested) relative error."""
    kind: ClassVar[str] = "control"
    source: TrainJob
    matched: QuantizeJob | None = None  # its per-layer relative weight errors, read from its meta
    relative_error: float = 0.0  # every layer, when no quantize job is matched

    @property
    def label(self) -> str:
        return f"noise ~ {self.matched.label}" if self.matched is not None else f"noise {self.relative_error:g}"

    @property
    def recipe(self) -> dict:
        return {"method": "noise", "bits": 32, "last_layer_bits": None}

    def requested_error(self, store: Store, model: nn.Module) -> dict[str, float]:
        if self.matched is not None:
            return store.meta(self.matched)["relative_weight_error"]
        return {n: self.relative_error for n, _ in quantizable_layers(model)}

    def compute(self, store: Store, out: Path) -> dict:
        data = load_data(self.source.data, store)
        model = self.source.load(store)
        requested = self.requested_error(store, model)
        salt = int(self.matched.key[:8], 16) if self.matched is not None else int(1e6 * self.relative_error)
        reached = add_weight_noise(model, requested, noise_seed(self.source.model_seed, salt))
        _save_model(model, out)
        (out / "log.txt").write_text("".join(f"{n}: relative weight error {reached[n]:.4f} "
                                             f"(requested {requested[n]:.4f})\n" for n in reached))
        return {"test_acc": accuracy(model, data), "relative_weight_error": reached, "label": self.label}

    def load(self, store: Store) -> nn.Module:
        from .jobs import _load_model

        return _load_model(self.source.arch, load_data(self.source.data, store), store.require(self, "model"))


@dataclass(frozen=True)
class PruneJob(StudyJob):
    """A trained model after global magnitude pruning; quantizing it (a QuantizeJob whose source
    is this job) combines pruning with PTQ."""
    kind: ClassVar[str] = "prune"
    source: TrainJob
    sparsity: float

    @property
    def label(self) -> str:
        return f"prune {100 * self.sparsity:g}%"

    @property
    def recipe(self) -> dict:
        return {"method": "prune", "bits": 32, "last_layer_bits": None}

    # what a QuantizeJob reads from its source, delegated to the trained model
    data = property(lambda self: self.source.data)
    arch = property(lambda self: self.source.arch)
    role = property(lambda self: self.source.role)
    index = property(lambda self: self.source.index)
    augment = property(lambda self: self.source.augment)
    model_seed = property(lambda self: self.source.model_seed)

    def keep(self, store: Store) -> np.ndarray:
        return self.source.keep(store)

    def compute(self, store: Store, out: Path) -> dict:
        data = load_data(self.source.data, store)
        model = self.source.load(store)
        per_layer = prune_global(model, self.sparsity)
        _save_model(model, out)
        (out / "log.txt").write_text("".join(f"{n}: {100 * z:.1f}% zeros\n" for n, z in per_layer.items()))
        return {"test_acc": accuracy(model, data), "sparsity": sparsity_of(model), "layer_sparsity": per_layer,
                "label": self.label}

    def load(self, store: Store) -> nn.Module:
        from .jobs import _load_model

        return _load_model(self.source.arch, load_data(self.source.data, store), store.require(self, "model"))


def match_controls(recipes: pd.DataFrame, controls: pd.DataFrame) -> pd.DataFrame:
    """For each quantized recipe, the control of each kind (`method`) whose test accuracy is closest.

    Both tables hold one row per label with `label` and `test_acc` (means over targets); `controls`
    also has `method` (noise, epochs, ...). Returns one row per (recipe, control kind): recipe,
    recipe_acc, control, control_method, control_acc, acc_gap (control - recipe).
    """
    rows = []
    for _, r in recipes.iterrows():
        for method, group in controls.groupby("method", sort=False):
            best = group.iloc[int(np.argmin(np.abs(group["test_acc"].to_numpy() - r["test_acc"])))]
            rows.append({"recipe": r["label"], "recipe_acc": r["test_acc"], "control": best["label"],
                         "control_method": method, "control_acc": best["test_acc"],
                         "acc_gap": best["test_acc"] - r["test_acc"]})
    return pd.DataFrame(rows)
