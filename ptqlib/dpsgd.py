"""DP-SGD training (Opacus), the defence PTQ is compared with at matched accuracy.

The same recipe as `training.train_model` (SGD, momentum, weight decay, cosine schedule,
batch-wise augmentation), through Opacus's privacy engine: Poisson-sampled batches,
per-example gradients clipped to `max_grad_norm`, Gaussian noise of `noise_multiplier`
times the clip. Opacus needs per-example gradients, which BatchNorm mixes across examples: the
model is `opacus.validators.ModuleValidator.fix` of the study's architecture (every
BatchNorm replaced by a GroupNorm, ReLUs made out of place). epsilon is reported at delta = 1 / (members) with the
accountant Opacus uses by default (PRV), after every epoch.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
from torch import nn

from .data import ImageData, augment_batch
from .jobs import TrainJob, _new_model
from .training import pick_device

ACCOUNTANT = "prv"  # Opacus's default accountant


def private_architecture(model: nn.Module) -> nn.Module:
    """A copy of `model` Opacus can train: every BatchNorm replaced by a GroupNorm, ReLUs out of place."""
    from opacus.validators import ModuleValidator

    fixed = ModuleValidator.fix(model)
    for m in fixed.modules():
        if isinstance(m, nn.ReLU):
            m.inplace = False  # Opacus's backward hooks forbid in-place changes of a hooked layer's output
    errors = ModuleValidator.validate(fixed, strict=False)
    if errors:
        raise TypeError(f"DP-SGD: the model still has layers Opacus cannot train: {errors}")
    return fixed


def train_private(model: nn.Module, data: ImageData, members: np.ndarray, *, epochs: int, batch_size: int,
                  lr: float, momentum: float, weight_decay: float, augment: str, seed: int,
                  noise_multiplier: float, max_grad_norm: float, device: torch.device, log=None) -> dict:
    """Train `model` (already Opacus-compatible) in place with DP-SGD on the members of the pool.

    Returns the number of members, delta, epsilon after each epoch and the last batch's loss.
    """
    from opacus import PrivacyEngine

    torch.manual_seed(seed)  # Opacus draws its Poisson batches and noise from torch's global generator
    gen = torch.Generator().manual_seed(seed)
    idx = torch.from_numpy(members).nonzero().squeeze(1)
    x, y = data.x_train[idx], data.y_train[idx]
    n = len(idx)
    delta = 1.0 / n
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=batch_size,
                                         generator=torch.Generator().manual_seed(seed))
    model.to(device).train()
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    engine = PrivacyEngine(accountant=ACCOUNTANT)
    private_model, private_opt, private_loader = engine.make_private(
        module=model, optimizer=opt, data_loader=loader, noise_multiplier=noise_multiplier,
        max_grad_norm=max_grad_norm)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(private_opt, T_max=epochs * math.ceil(n / batch_size))
    loss_fn = nn.CrossEntropyLoss()
    epsilons, loss = [], torch.tensor(float("nan"))
    for epoch in range(epochs):
        for xb, yb in private_loader:
            if len(xb) == 0:  # a Poisson batch may be empty; nothing to learn from it
                continue
            xb = data.normalize(augment_batch(xb.to(device), augment, gen))
            loss = loss_fn(private_model(xb), yb.to(device))
            private_opt.zero_grad(set_to_none=True)
            loss.backward()
            private_opt.step()
            sched.step()
        epsilons.append(float(engine.get_epsilon(delta)))
        if log is not None:
            log(f"epoch {epoch + 1}/{epochs} last-batch loss {float(loss.detach()):.4f} epsilon {epsilons[-1]:.3f} "
                f"(delta {delta:.2e}, {ACCOUNTANT} accountant)")
    model.eval()
    return {"train_examples": n, "delta": delta, "epsilon": epsilons[-1], "epsilon_by_epoch": epsilons,
            "accountant": ACCOUNTANT, "final_loss": float(loss.detach())}


@dataclass(frozen=True)
class DPTrainJob(TrainJob):
    """Train one target or shadow with DP-SGD: a TrainJob's recipe plus Opacus's noise and clip."""
    kind: ClassVar[str] = "train_dp"
    noise_multiplier: float = 1.0
    max_grad_norm: float = 1.0

    @property
    def label(self) -> str:
        return f"dp-sgd sigma {self.noise_multiplier:g}"

    @property
    def recipe(self) -> dict:
        return {"method": "dp", "bits": 32, "last_layer_bits": None}

    def new_model(self, data: ImageData) -> nn.Module:
        return private_architecture(_new_model(self.arch, data, self.stem_init))

    def fit(self, model: nn.Module, data: ImageData, keep, log) -> dict:
        return train_private(model, data, keep, **self.training_options(), seed=self.model_seed,
                             noise_multiplier=self.noise_multiplier, max_grad_norm=self.max_grad_norm,
                             device=pick_device(self.device), log=log)
