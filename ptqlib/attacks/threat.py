"""Threat models: which shadows attack which target.

* fp_shadows: full-precision shadows against every (FP32 or quantized) target — the paper;
* matched_shadows: an adaptive attacker who quantizes every shadow with the target's recipe;
* leave_one_out: one balanced pool, every model the target in turn against all the others;
* both_models: an attacker who holds the FP32 model AND its quantized release scores the pair
  (a bivariate LiRA over FP and quantized shadows: see `fit_pair_stats`).
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


# ---------------------------------------------------------------- both models (CompLeak's setting)
#
# The released pair (FP32 model, its quantized version) gives two scores per example and query,
# x = (phi_fp, phi_q). As LiRA does for one score, fit per example an IN and an OUT Gaussian, now
# bivariate, to the pairs of the shadows (each FP shadow beside its own quantized copy) and score
# log N2(x; in) - log N2(x; out). A signal only in the difference phi_fp - phi_q (what quantization
# removed from a member), or split across both scores, is then found where either model alone
# shows little. The attacks' names are those of their one-model LiRA counterparts:

BOTH_MODELS_ATTACKS = {"online": ("online", "per_example"), "online_fixed": ("online", "fixed"),
                       "offline": ("offline", "per_example"), "offline_fixed": ("offline", "fixed")}
PAIR_RIDGE = 0.01  # every covariance + 1% of its mean variance on the diagonal: the FP and 8-bit scores
# are almost collinear, and a near-singular covariance would turn estimation noise into "signal"


@dataclass(frozen=True)
class PairStats:
    """Per example and query, the IN and OUT centres (N, Q, 2) and covariances (N, Q, 2, 2) of the
    shadows' (phi_fp, phi_q) pairs; `cov_*_all` (2, 2): residuals about the centres pooled over
    every example and query (the 'fixed' variants)."""
    mu_in: np.ndarray
    mu_out: np.ndarray
    cov_in: np.ndarray
    cov_out: np.ndarray
    cov_in_all: np.ndarray
    cov_out_all: np.ndarray


def _side_moments(x: np.ndarray, use: np.ndarray, k: int, centre: np.ndarray):
    """Per-example covariance about the mean (ddof 0) and the pooled covariance of residuals about
    `centre`, over the k shadows `use` selects. x (M, N, Q, 2), use (M, N), centre (N, Q, 2).
    Blocks of examples bound the temporaries (as `lira.fit_shadow_stats` does)."""
    n, q = centre.shape[:2]
    cov, pooled = np.empty((n, q, 2, 2)), np.zeros((2, 2))
    for a in range(0, n, lira._BLOCK):
        b = min(a + lira._BLOCK, n)
        xb, w = x[:, a:b], use[:, a:b, None, None].astype(np.float64)
        dev = (xb - (w * xb).sum(axis=0) / k) * w
        cov[a:b] = np.einsum("mnqa,mnqb->nqab", dev, dev) / k
        res = (xb - centre[a:b]) * w
        pooled += np.einsum("mnqa,mnqb->ab", res, res)
    return cov, pooled / (k * n * q)


def _ridge(cov: np.ndarray, ridge: float) -> np.ndarray:
    scale = 0.5 * (cov[..., 0, 0] + cov[..., 1, 1])
    return cov + (ridge * scale + lira._EPS)[..., None, None] * np.eye(2)


def fit_pair_stats(fp_scores: np.ndarray, q_scores: np.ndarray, keep: np.ndarray,
                   ridge: float = PAIR_RIDGE) -> PairStats:
    """IN/OUT bivariate Gaussians of the shadow pairs, as LiRA fits univariate ones.

    fp_scores, q_scores (M, N, Q): shadow m's FP and quantized scores (shadow m quantized by the
    target's recipe); keep (M, N). Centres are per-coordinate medians and the IN/OUT shadows are the
    first k of each example in model order, as in `lira.fit_shadow_stats` (whose marginals these are).
    """
    fp, q = (np.asarray(a, dtype=np.float64) for a in (fp_scores, q_scores))
    if fp.ndim == 2:
        fp, q = fp[..., None], q[..., None]
    keep = np.asarray(keep, dtype=bool)
    if fp.shape != q.shape or keep.shape != fp.shape[:2]:
        raise ValueError(f"both_models: FP scores {fp.shape}, quantized scores {q.shape} and membership "
                         f"{keep.shape} must be (M, N, Q), (M, N, Q) and (M, N) for the same shadows")
    fp_stats, q_stats = lira.fit_shadow_stats(fp, keep), lira.fit_shadow_stats(q, keep)
    k_in, k_out = fp_stats.k_in, fp_stats.k_out
    x = np.stack([fp, q], axis=-1)
    mu_in = np.stack([fp_stats.mu_in, q_stats.mu_in], axis=-1)
    mu_out = np.stack([fp_stats.mu_out, q_stats.mu_out], axis=-1)
    cov_in, all_in = _side_moments(x, lira._truncated(keep, k_in), k_in, mu_in)
    cov_out, all_out = _side_moments(x, lira._truncated(~keep, k_out), k_out, mu_out)
    return PairStats(mu_in, mu_out, _ridge(cov_in, ridge), _ridge(cov_out, ridge),
                     _ridge(all_in, ridge), _ridge(all_out, ridge))


def _log_normal2(x: np.ndarray, mu: np.ndarray, cov: np.ndarray) -> np.ndarray:
    """log N2(x; mu, cov) over the last axis (closed-form 2x2 inverse)."""
    a, b, c = cov[..., 0, 0], cov[..., 0, 1], cov[..., 1, 1]
    det = a * c - b * b
    d0, d1 = x[..., 0] - mu[..., 0], x[..., 1] - mu[..., 1]
    quad = (c * d0 * d0 - 2 * b * d0 * d1 + a * d1 * d1) / det
    return -0.5 * quad - 0.5 * np.log(det) - 2 * lira._LOG_SQRT_2PI


def score_pair(stats: PairStats, fp_target: np.ndarray, q_target: np.ndarray, name: str) -> np.ndarray:
    """One both-models attack (a key of BOTH_MODELS_ATTACKS): membership scores (N,), mean over queries.

    online: log N2(x; in) - log N2(x; out); offline: -log N2(x; out) (two-sided, as LiRA's reference).
    fixed: the pooled covariance of each side for every example.
    """
    if name not in BOTH_MODELS_ATTACKS:
        raise ValueError(f"both_models: no pair attack {name!r}; valid: {', '.join(BOTH_MODELS_ATTACKS)}")
    kind, variance = BOTH_MODELS_ATTACKS[name]
    x = np.stack([np.asarray(fp_target, dtype=np.float64), np.asarray(q_target, dtype=np.float64)], axis=-1)
    if x.ndim == 2:
        x = x[:, None, :]
    if x.shape != stats.mu_in.shape:
        raise ValueError(f"both_models: target scores {x.shape[:-1]} must be (N, Q) = {stats.mu_in.shape[:-1]}")
    cov_in, cov_out = (stats.cov_in, stats.cov_out) if variance == "per_example" else \
        (stats.cov_in_all, stats.cov_out_all)
    out = -_log_normal2(x, stats.mu_out, cov_out)
    if kind == "online":
        out = out + _log_normal2(x, stats.mu_in, cov_in)
    return out.mean(axis=-1)


def both_models_attacks(attacks: Iterable[str]) -> list[str]:
    """The named attacks that have a both-models form, in the order given."""
    return [a for a in attacks if a in BOTH_MODELS_ATTACKS]


def attack_both_models(stats: PairStats, fp_target: np.ndarray, q_target: np.ndarray,
                       attacks: Iterable[str]) -> dict[str, np.ndarray]:
    """Membership scores of one (FP32, quantized) target pair under every named attack the pair supports
    (BOTH_MODELS_ATTACKS; global and RMIA have no pair form and are skipped)."""
    return {a: score_pair(stats, fp_target, q_target, a) for a in both_models_attacks(attacks)}
