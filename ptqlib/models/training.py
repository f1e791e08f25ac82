"""Training and evaluation of one model on tensors held in memory.

The recipe is the paper's: SGD with momentum and weight decay, cosine annealing, cross-entropy.
The cosine runs over all steps, stepped per batch ("per_step"), or over the epochs, stepped
after each epoch ("per_epoch": the authors' train.py, every batch of epoch e at
lr (1 + cos(pi e / epochs)) / 2). Batches are drawn from a seeded generator, so on the CPU a run is
bit-for-bit reproducible.
"""
from __future__ import annotations

import math

import numpy as np

import torch
from torch import nn
from tqdm.std import tqdm

from ptqlib.data.images import ImageData
from ptqlib.data.views import augment_batch


def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def set_threads(threads: int) -> None:
    if threads > 0:
        torch.set_num_threads(threads)


LR_SCHEDULES = ("per_step", "per_epoch")


def cosine_schedule(opt: torch.optim.Optimizer, schedule: str, epochs: int, steps_per_epoch: int):
    """(torch's CosineAnnealingLR for `opt`, whether it steps after every batch rather than every epoch)."""
    if schedule not in LR_SCHEDULES:
        raise ValueError(f"lr_schedule: {schedule!r} is not one of {list(LR_SCHEDULES)}")
    per_step = schedule == "per_step"
    t_max = epochs * steps_per_epoch if per_step else epochs
    return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=t_max), per_step


def train_model(model: nn.Module, data: ImageData, members, *, epochs: int, batch_size: int,
                lr: float, momentum: float, weight_decay: float, augment: str, seed: int,
                device: torch.device, progress: bool = False, desc: str = "train",
                log=None, compile_model: bool = False, precision: str = "bf16",
                lr_schedule: str = "per_step") -> dict:
    """Train `model` in place on the training-pool examples selected by the bool mask `members`.

    Images stay uint8 on the device; each batch is augmented (zero padding, as for the raw
    images) and normalised as whole-tensor operations. `log(line)` receives one line per epoch.
    `compile_model` trains through `torch.compile(model)`: the same parameters, fused kernels.
    `precision`: "bf16" autocasts the forward pass on CUDA (faster; weights differ in the last bits),
    "fp32" never does; the CPU always trains in fp32. `lr_schedule`: see `cosine_schedule`.
    """
    gen = torch.Generator().manual_seed(seed)
    idx = torch.from_numpy(members).nonzero().squeeze(1)
    x = data.x_train[idx].to(device)
    y = data.y_train[idx].to(device)
    n = len(idx)
    steps_per_epoch = math.ceil(n / batch_size)
    model.to(device).train()
    channels_last = device.type == "cuda"  # NHWC lets cuDNN use tensor cores for convs; same numbers, CPU gains nothing
    if channels_last:
        model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    sched, per_step = cosine_schedule(opt, lr_schedule, epochs, steps_per_epoch)
    loss_fn = nn.CrossEntropyLoss()
    forward = torch.compile(model) if compile_model else model
    use_amp = device.type == "cuda" and precision == "bf16"
    for epoch in tqdm(range(epochs), desc=desc, disable=not progress, leave=False):
        order = torch.randperm(n, generator=gen).to(device)
        for s in range(steps_per_epoch):
            b = order[s * batch_size:(s + 1) * batch_size]
            xb = data.normalize(augment_batch(x[b], augment, gen))
            if channels_last:
                xb = xb.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
                loss = loss_fn(forward(xb), y[b])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if per_step:
                sched.step()
        if not per_step:
            sched.step()
        if log is not None:
            log(f"epoch {epoch + 1}/{epochs} last-batch loss {float(loss.detach()):.4f} lr {sched.get_last_lr()[0]:.5f}")
    model.eval()
    return {"train_examples": n, "final_loss": float(loss.detach())}


@torch.no_grad()
def predict_logits(model: nn.Module, x: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    """Logits for already-normalised inputs, in eval mode (BatchNorm uses running stats)."""
    model.eval()
    dev = next(model.parameters()).device
    return torch.cat([model(x[i:i + batch_size].to(dev)).float().cpu() for i in range(0, len(x), batch_size)])


def accuracy(model: nn.Module, data: ImageData, split: str = "test", mask=None) -> float:
    x, y = (data.x_test, data.y_test) if split == "test" else (data.x_train, data.y_train)
    if mask is not None:
        sel = torch.from_numpy(mask)
        x, y = x[sel], y[sel]
    logits = predict_logits(model, data.normalize(x))
    return float((logits.argmax(1) == y).float().mean())


# fit_warning thresholds: a model is "not learning" when its training accuracy is within
# CHANCE_MARGIN of chance, and "not memorising" when it has not fitted its members
# (training accuracy below MEMORISED) and scores them less than GAP_MIN above unseen images.
# A model that fits its members (digits: train 100%, test ~99%) still leaks through its
# confidence, so a small accuracy gap alone does not fire.
CHANCE_MARGIN = 0.10
MEMORISED = 0.90
GAP_MIN = 0.10


POOL_OUTLIER = 0.15  # a model this far (15 points) below its pool's median training accuracy did not fit like the rest


def pool_outliers(train_accs: dict, margin: float = POOL_OUTLIER) -> dict:
    """The models (name -> train accuracy) whose training accuracy lies more than `margin` below the
    median of all of them: trained like the others, they did not fit like the others."""
    if len(train_accs) < 3:
        return {}
    median = float(np.median(list(train_accs.values())))
    return {name: acc for name, acc in train_accs.items() if acc < median - margin}


def fit_warning(train_acc: float, test_acc: float, num_classes: int) -> str | None:
    """One line warning that the FP32 targets give membership inference nothing to find, or None.

    `train_acc` (accuracy on the members) and `test_acc` are means over the targets, in 0..1.
    Fires when train_acc < chance + CHANCE_MARGIN, or when train_acc < MEMORISED and
    train_acc - test_acc < GAP_MIN.
    """
    chance = 1.0 / num_classes
    near_chance = train_acc < chance + CHANCE_MARGIN
    not_memorised = train_acc < MEMORISED and train_acc - test_acc < GAP_MIN
    if not (near_chance or not_memorised):
        return None
    return (f"the FP32 targets did not learn/memorise (train {100 * train_acc:.1f}%, test {100 * test_acc:.1f}%, "
            f"chance {100 * chance:.1f}%): membership inference will find nothing; train longer, on fewer "
            "members or with less augmentation")
