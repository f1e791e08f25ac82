"""Membership masks: which pool examples each model trains on, derived from seeds, never stored first.

- `target_mask`: a target's members, a uniformly random half of the pool;
- `balanced_masks`: the reference (argsort) design, every example IN for exactly M/2 shadows;
- `paired_mask`: complementary pairs, so raising the shadow count keeps every existing shadow.
"""
from __future__ import annotations

import numpy as np


def target_mask(seed: int, index: int, n: int) -> np.ndarray:
    """Members of target `index`: a uniformly random half of the pool (exactly n // 2)."""
    rng = np.random.default_rng([seed, 1, index])
    keep = np.zeros(n, dtype=bool)
    keep[rng.permutation(n)[: n // 2]] = True
    return keep


def balanced_masks(seed: int, num_models: int, n: int) -> np.ndarray:
    """(M, N) shadow membership: every example IN for exactly M/2 models.

    Draw U ~ uniform(M, N) from the seed, rank models per example, keep rank < M/2. The
    result depends only on (seed, M, N), so independently launched jobs agree on it.
    """
    if num_models % 2:
        raise ValueError(f"num_models must be even for balanced masks, got {num_models}")
    rng = np.random.default_rng([seed, 2, num_models, n])
    u = rng.random((num_models, n))
    rank = u.argsort(axis=0).argsort(axis=0)
    return rank < num_models // 2


def paired_mask(seed: int, index: int, n: int) -> np.ndarray:
    """Members of shadow `index` under the paired design: models 2p and 2p+1 split one random
    permutation of the pool into complementary halves.

    Every example is then IN for exactly M/2 of any even number M of shadows, and a model's mask
    does not depend on M: raising M keeps every existing shadow (and its trained weights).
    """
    pair, side = divmod(index, 2)
    perm = np.random.default_rng([seed, 3, pair, n]).permutation(n)
    keep = np.zeros(n, dtype=bool)
    keep[perm[: n // 2] if side == 0 else perm[n // 2:]] = True
    return keep
