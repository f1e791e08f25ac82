"""Train one target or shadow model on its members of the pool (`TrainJob`)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch

from ptqlib.data.images import ImageData
from ptqlib.data.masks import balanced_masks, paired_mask, target_mask
from ptqlib.models.training import accuracy, pick_device, train_model
from ptqlib.runtime.store import Store
from ptqlib.study.jobs.base import (FP32_LABEL, DataSpec, ModelJob, full_precision_recipe, load_data, new_model,
                                    save_model)


def model_seed(seed: int, role: str, index: int) -> int:
    """The seed of one model's initialisation, batches and calibration draws."""
    role_id = {"target": 1, "shadow": 2}[role]
    return int(np.random.SeedSequence([seed, role_id, index]).generate_state(1)[0])


@dataclass(frozen=True)
class TrainJob(ModelJob):
    """Train one target or shadow model on its members of the pool."""
    kind: ClassVar[str] = "train"
    VERSION: ClassVar[int] = 2
    NOT_IN_KEY: ClassVar[tuple[str, ...]] = ("device",)
    KEY_ONLY_WHEN_SET: ClassVar[tuple[str, ...]] = ("stem_init", "lr_schedule", "width")
    data: DataSpec
    arch: str
    role: str  # target | shadow
    index: int
    seed: int
    masks: str  # target (a random half) | argsort (balanced over num_models shadows) | paired
    num_models: int  # argsort: the pool size M the balanced masks are drawn for; else 0
    epochs: int
    batch_size: int
    lr: float
    momentum: float
    weight_decay: float
    augment: str
    precision: str = "bf16"  # CUDA autocast; the CPU always trains in fp32
    torch_compile: bool = False
    device: str = "auto"
    stem_init: str = "kaiming_normal"  # CIFAR-form archs: kaiming_normal | pytorch_default
    lr_schedule: str = "per_step"  # per_step | per_epoch
    width: float = 1.0  # airbench_small's channels times this factor (the model-scale study)

    @property
    def train_job(self) -> TrainJob:
        return self

    @property
    def label(self) -> str:
        return FP32_LABEL

    @property
    def recipe(self) -> dict:
        return full_precision_recipe(FP32_LABEL)

    @property
    def pruned(self) -> bool:
        return False

    def describe(self) -> str:
        return f"train {self.role} {self.index}"

    def members(self, n: int) -> np.ndarray:
        """The model's membership mask over a pool of n examples (derived, never drawn at random)."""
        if self.masks == "target":
            return target_mask(self.seed, self.index, n)
        if self.masks == "paired":
            return paired_mask(self.seed, self.index, n)
        return balanced_masks(self.seed, self.num_models, n)[self.index]

    @property
    def model_seed(self) -> int:
        return model_seed(self.seed, self.role, self.index)

    def training_options(self) -> dict:
        """The training recipe, as `training.train_model` takes it."""
        return {"epochs": self.epochs, "batch_size": self.batch_size, "lr": self.lr, "momentum": self.momentum,
                "weight_decay": self.weight_decay, "augment": self.augment}

    def new_model(self, data: ImageData) -> torch.nn.Module:
        """The untrained architecture (a DP-SGD job swaps BatchNorm for GroupNorm)."""
        return new_model(self.arch, data, self.stem_init, self.width)

    def compute(self, store: Store, out: Path) -> dict:
        data = load_data(self.data, store)
        keep = self.members(len(data.y_train))
        torch.manual_seed(self.model_seed)
        model = self.new_model(data)
        with open(out / "log.txt", "w") as log:
            stats = self.fit(model, data, keep, log=lambda line: print(line, file=log))
        model.cpu()
        np.save(out / "keep.npy", keep)
        save_model(model, out)
        return {**stats, "train_acc": accuracy(model, data, "train", keep), "test_acc": accuracy(model, data),
                "num_classes": data.num_classes}

    def fit(self, model: torch.nn.Module, data: ImageData, keep: np.ndarray, log) -> dict:
        """Train `model` in place on its members (a DP-SGD job trains differently)."""
        return train_model(model, data, keep, **self.training_options(), seed=self.model_seed,
                           device=pick_device(self.device), compile_model=self.torch_compile,
                           precision=self.precision, lr_schedule=self.lr_schedule, log=log)

    def keep(self, store: Store) -> np.ndarray:
        return np.load(store.require(self, "model") / "keep.npy")
