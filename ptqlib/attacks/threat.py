"""Threat models: which shadows attack which target.

* fp_shadows: full-precision shadows against every (FP32 or quantized) target — the paper;
* matched_shadows: an adaptive attacker who quantizes every shadow with the target's recipe;
* leave_one_out: one balanced pool, every model the target in turn against all the others;
* leave_one_out_fp: every quantized pool model the target in turn against the full-precision
  versions of all the other pool models (the paper's threat model, over one pool).

The functions here are pure: they take score arrays (phi per model, example and query) and
membership masks, and return one membership score vector per attack. LiRA statistics of a
shadow pool are fitted once and shared by every variant and every target.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

import numpy as np

from ptqlib.attacks import lira
from ptqlib.attacks import rmia


@dataclass
class ShadowPool:
    scores: np.ndarray  # (M, N, Q) phi of every shadow on the training pool
    keep: np.ndarray  # (M, N) bool membership
    test_scores: np.ndarray | None = None  # (M, Nt, Q) on held-out data: RMIA's population
    _stats: dict = field(default_factory=dict, repr=False)

    def stats(self, exclude: int | None = None) -> lira.ShadowStats:
        """LiRA statistics of the pool (fitted once), or of the pool without model `exclude`."""
        if exclude is not None:  # leave-one-out: one fit per target, nothing worth caching
            return lira.fit_shadow_stats(self.scores, self.keep, exclude=exclude)
        if "all" not in self._stats:
            self._stats["all"] = lira.fit_shadow_stats(self.scores, self.keep)
        return self._stats["all"]


def rmia_population_size(n_test: int, requested: int = 0) -> int:
    """How many held-out points RMIA uses as population: all n_test (requested 0) or the first `requested`."""
    if requested < 0 or requested > n_test:
        raise ValueError(f"rmia_population: {requested} is invalid; use 0 (the whole held-out split) or a count "
                         f"in 1..{n_test} (the held-out split has {n_test} points)")
    return requested or n_test


def rmia_scores(pool: ShadowPool, target_scores: np.ndarray, target_test_scores: np.ndarray | None,
                exclude: int | None = None, population: int = 0, tie_break: bool = True) -> np.ndarray:
    """Offline RMIA with held-out points as population (never the target's own non-members).

    population: the first that many held-out points (0 = all of them, the default study's);
    tie_break: see `rmia.rmia_offline`. Every held-out point is a non-member of every model.
    """
    if pool.test_scores is None or target_test_scores is None:
        raise ValueError("rmia needs the models' scores on the held-out split as its population")
    use = np.ones(len(pool.scores), dtype=bool)
    if exclude is not None:
        use[exclude] = False
    n, n_test = pool.keep.shape[1], rmia_population_size(pool.test_scores.shape[1], population)
    probs = rmia.true_label_probs(np.concatenate([pool.scores[use], pool.test_scores[use, :n_test]], axis=1))
    keep = np.concatenate([pool.keep[use], np.zeros((use.sum(), n_test), dtype=bool)], axis=1)
    t_probs = rmia.true_label_probs(np.concatenate([target_scores, target_test_scores[:n_test]], axis=0))
    return rmia.rmia_offline(probs, keep, t_probs, np.arange(n, n + n_test), tie_break=tie_break)[:n]


def attack_target(pool: ShadowPool, target_scores: np.ndarray, attacks: Iterable[str],
                  target_test_scores: np.ndarray | None = None,
                  exclude: int | None = None, rmia_population: int = 0) -> dict[str, np.ndarray]:
    """Membership scores of one target under every named attack (LiRA variants and 'rmia').

    rmia_population: RMIA's population, the first that many held-out points (0 = all).
    """
    attacks = list(attacks)
    lira_names = [a for a in attacks if a != "rmia"]
    needs_stats = any(a != "global" for a in lira_names)
    out = lira.score_attacks(pool.stats(exclude) if needs_stats else None, target_scores, lira_names)
    if "rmia" in attacks:
        out["rmia"] = rmia_scores(pool, target_scores, target_test_scores, exclude, rmia_population)
    return {a: out[a] for a in attacks}


def leave_one_out(pool: ShadowPool, attacks: Iterable[str], rmia_population: int = 0):
    """Attack every model of the pool with all the other models as shadows.

    Yields (index, {attack: scores}); model `index` is never among its own shadows.
    """
    attacks = list(attacks)
    for j in range(len(pool.scores)):
        test_j = None if pool.test_scores is None else pool.test_scores[j]
        yield j, attack_target(pool, pool.scores[j], attacks, test_j, exclude=j, rmia_population=rmia_population)


def leave_one_out_fp(fp_pool: ShadowPool, targets: ShadowPool, indices, attacks: Iterable[str],
                     rmia_population: int = 0):
    """Attack quantized pool model k (scores targets.scores[k]) with the FP pool minus its own source.

    indices[k]: the position in `fp_pool` of target k's full-precision source, which is left out
    of its shadows. Yields (k, {attack: scores}).
    """
    attacks = list(attacks)
    if len(indices) != len(targets.scores):
        raise ValueError(f"leave_one_out_fp: {len(indices)} source indices for {len(targets.scores)} targets")
    for k, i in enumerate(indices):
        if not 0 <= i < len(fp_pool.scores):
            raise ValueError(f"leave_one_out_fp: source index {i} outside the FP pool of {len(fp_pool.scores)}")
        test_k = None if targets.test_scores is None else targets.test_scores[k]
        yield k, attack_target(fp_pool, targets.scores[k], attacks, test_k, exclude=int(i),
                               rmia_population=rmia_population)
