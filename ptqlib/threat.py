"""Threat models: which shadows attack which target.

* fp_shadows: full-precision shadows against every (FP32 or quantized) target — the paper;
* matched_shadows: an adaptive attacker who quantizes every shadow with the target's recipe;
* leave_one_out: one balanced pool, every model the target in turn against all the others.

The functions here are pure: they take score arrays (phi per model, example and query) and
membership masks, and return one membership score vector per attacked model and attack.
"""
from __future__ import annotations

from typing import Callable, Iterable

import numpy as np

from .lira import ATTACKS

AttackFn = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


def attack_target(shadow_scores: np.ndarray, shadow_keep: np.ndarray, target_scores: np.ndarray,
                  attacks: Iterable[str], registry: dict[str, AttackFn] = ATTACKS) -> dict[str, np.ndarray]:
    """Membership scores of one target under every named attack."""
    return {a: registry[a](shadow_scores, shadow_keep, target_scores) for a in attacks}


def leave_one_out(pool_scores: np.ndarray, pool_keep: np.ndarray, attacks: Iterable[str],
                  registry: dict[str, AttackFn] = ATTACKS):
    """Attack every model of the pool with all the other models as shadows.

    Yields (index, {attack: scores}); model `index` is never among its own shadows.
    """
    attacks = list(attacks)
    m = len(pool_scores)
    for j in range(m):
        others = np.arange(m) != j
        yield j, attack_target(pool_scores[others], pool_keep[others], pool_scores[j], attacks, registry)
