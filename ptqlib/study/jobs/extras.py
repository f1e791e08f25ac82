"""The job kinds of the study's controls and defences, attacked beside the quantized targets.

Does low-bit PTQ leak less because it lost accuracy, or because it quantized? A control loses
accuracy another way and is attacked the same way; a defence is what PTQ is compared with:
- `ControlJob`: weight noise of a quantized recipe's relative error (or a requested one), per layer;
- fewer training epochs: plain `TrainJob`s with other `epochs` (planned in `study.plan`);
- `PruneJob`: global magnitude pruning (quantizing it, a QuantizeJob whose source is this job,
  combines pruning with PTQ);
- `DPTrainJob`: DP-SGD training through Opacus.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
from torch import nn

from ptqlib.data.images import ImageData
from ptqlib.models.degrade import add_weight_noise, noise_seed, prune_global, sparsity_of
from ptqlib.models.dpsgd import private_architecture, train_private
from ptqlib.models.training import accuracy, pick_device
from ptqlib.models.zoo import quantizable_layers
from ptqlib.runtime.store import Store
from ptqlib.study.jobs.base import ModelJob, full_precision_recipe, load_data, new_model, save_model
from ptqlib.study.jobs.quantize import QuantizeJob
from ptqlib.study.jobs.train import TrainJob


@dataclass(frozen=True)
class ControlJob(ModelJob):
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
        return full_precision_recipe("noise")

    def requested_error(self, store: Store, model: nn.Module) -> dict[str, float]:
        if self.matched is not None:
            return store.meta(self.matched)["relative_weight_error"]
        return {n: self.relative_error for n, _ in quantizable_layers(model)}

    def compute(self, store: Store, out: Path) -> dict:
        data = load_data(self.train_job.data, store)
        model = self.source.load(store)
        requested = self.requested_error(store, model)
        salt = int(self.matched.key[:8], 16) if self.matched is not None else int(1e6 * self.relative_error)
        reached = add_weight_noise(model, requested, noise_seed(self.train_job.model_seed, salt))
        save_model(model, out)
        (out / "log.txt").write_text("".join(f"{n}: relative weight error {reached[n]:.4f} "
                                             f"(requested {requested[n]:.4f})\n" for n in reached))
        return {"test_acc": accuracy(model, data), "relative_weight_error": reached, "label": self.label}


@dataclass(frozen=True)
class PruneJob(ModelJob):
    """A trained model after global magnitude pruning of its quantizable layers."""
    kind: ClassVar[str] = "prune"
    source: TrainJob
    sparsity: float

    @property
    def label(self) -> str:
        return f"prune {100 * self.sparsity:g}%"

    @property
    def recipe(self) -> dict:
        return full_precision_recipe("prune")

    @property
    def pruned(self) -> bool:
        return True

    def compute(self, store: Store, out: Path) -> dict:
        data = load_data(self.train_job.data, store)
        model = self.source.load(store)
        per_layer = prune_global(model, self.sparsity)
        save_model(model, out)
        (out / "log.txt").write_text("".join(f"{n}: {100 * z:.1f}% zeros\n" for n, z in per_layer.items()))
        return {"test_acc": accuracy(model, data), "sparsity": sparsity_of(model), "layer_sparsity": per_layer,
                "label": self.label}


@dataclass(frozen=True)
class DPTrainJob(TrainJob):
    """Train one target or shadow with DP-SGD: a TrainJob's recipe plus Opacus's noise and clip."""
    kind: ClassVar[str] = "train_dp"
    VERSION: ClassVar[int] = 1
    noise_multiplier: float = 1.0
    max_grad_norm: float = 1.0

    @property
    def label(self) -> str:
        return f"dp-sgd sigma {self.noise_multiplier:g}"

    @property
    def recipe(self) -> dict:
        return full_precision_recipe("dp")

    def describe(self) -> str:
        return f"{self.kind} {self.role} {self.index} {self.label}"

    def new_model(self, data: ImageData) -> nn.Module:
        return private_architecture(new_model(self.arch, data, self.stem_init, self.width))

    def fit(self, model: nn.Module, data: ImageData, keep: np.ndarray, log) -> dict:
        return train_private(model, data, keep, **self.training_options(), seed=self.model_seed,
                             noise_multiplier=self.noise_multiplier, max_grad_norm=self.max_grad_norm,
                             device=pick_device(self.device), log=log)
