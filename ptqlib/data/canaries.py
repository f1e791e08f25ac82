"""Canaries: an audit's most vulnerable examples, inserted into the pool once, as the data is loaded,
so training, calibration, queries and the attack's labels all see the same canary labels
(Aerni, Zhang and Tramer 2024: a defence must be audited on its most vulnerable samples)."""
from __future__ import annotations

import dataclasses

import numpy as np
import torch

from ptqlib.data.images import ImageData

CANARY_KINDS = ("mislabel", "noise")


def canary_index(seed: int, count: int, n: int) -> np.ndarray:
    """The pool indices of `count` canaries (sorted), drawn from the seed; a larger count keeps
    every canary of a smaller one (the first `count` of one permutation of the pool)."""
    if not 0 <= count <= n:
        raise ValueError(f"canaries: {count} must lie in 0..{n} (the pool size)")
    return np.sort(np.random.default_rng([seed, 4, n]).permutation(n)[:count])


def insert_canaries(data: ImageData, count: int, kind: str = "mislabel", seed: int = 0) -> ImageData:
    """`data` with `count` pool examples turned into canaries (`data` itself when count is 0).

    mislabel: the label replaced by a different class, drawn from the seed (the canary of Aerni
    et al. 2024: a mislabeled example can only be fitted by memorising it). noise: the image
    replaced by uniform random pixels and the label by a random class (an out-of-distribution
    canary). A canary is a pool example like any other: IN for the models whose mask holds it.
    Mean and std stay those of the pool as read. The test split is never changed.
    """
    if count == 0:
        return data
    if kind not in CANARY_KINDS:
        raise ValueError(f"canary_kind: {kind!r} is not one of {list(CANARY_KINDS)}")
    n, classes = len(data.y_train), data.num_classes
    idx = canary_index(seed, count, n)
    rng = np.random.default_rng([seed, 5, n])
    y = data.y_train.clone()
    x = data.x_train
    if kind == "mislabel":  # an offset in 1..C-1 never lands on the true class
        offset = rng.integers(1, classes, size=n)[idx]
        y[idx] = (y[idx] + torch.from_numpy(offset)) % classes
    else:
        x = x.clone()
        x[idx] = torch.from_numpy(rng.integers(0, 256, size=(count, *x.shape[1:]), dtype=np.uint8))
        y[idx] = torch.from_numpy(rng.integers(0, classes, size=count))
    return dataclasses.replace(data, x_train=x, y_train=y, canaries=idx)
