"""RMIA, offline (Zarifzadeh et al., "Low-Cost High-Power Membership Inference Attacks", ICML 2024).

The attack compares a target point x with population points z known not to be members:

    ratio(x) = p(x | target) / p(x),    score(x) = fraction of z with ratio(x) / ratio(z) > gamma

where p(. | model) is the model's softmax probability of the true label (averaged over query
views) and p(x) is the probability of x averaged over reference models. Offline, only
reference models that did NOT train on x exist, and p(x) is extrapolated from their mean:

    p(x) = ((1 + a) / 2) * p_out(x) + (1 - a) / 2

a = 1 trusts p_out as it is; a < 1 pulls it towards 1/2, to stand in for the IN models one does
not have (a member's p_in is higher than p_out). The paper tunes `a` by attacking one reference
model with the others; 0.3 is our default, in the range the paper's offline
experiments use for CIFAR-size models. gamma = 1 by default.

Population: the z should be points the target did not train on. The cleanest choice is held-out
data (e.g. the test split queried on every model): append those points as extra columns with
shadow_keep False for every shadow, pass their indices as population_idx, and score only the
first N columns. Using the target's own non-members as population borrows the target's labels,
which the attacker does not have; it is acceptable for a comparison of recipes but say so.

Ties. The fraction takes only |Z| + 1 values, so with a few hundred z many points share the top
value 1 (digits, 450 z: 5-21 members and 0-6 non-members per FP32 target), and an ROC at 0.1%
FPR cannot separate them. By default the score breaks those ties by the ratio itself:

    score(x) = fraction(x) + t(ratio(x)) / |Z|,    t(r) = 1/2 + arctan(ln r) / pi  in [0, 1)

t is strictly increasing, so the ranking is lexicographic by (fraction, ratio), within a target
and across targets pooled (same |Z|); the score exceeds the paper's fraction by less than 1/|Z|
(so it lies in [0, 1 + 1/|Z|)). arctan of the log keeps ratios distinguishable over the whole
float range (a plain r / (1 + r) merges every r below ~1e-13). Within one target the fraction
is a non-decreasing function of the ratio, so the tie-broken score ranks a target's points
exactly as the ratio does; the fraction matters for pooling, where it puts targets on one scale.
tie_break=False gives the paper's plain fraction.

Everything is vectorised: the population ratios are sorted once and every target point is placed
among them with one searchsorted, O((N + Z) log Z) instead of an N x Z matrix.
"""
from __future__ import annotations

import numpy as np
from scipy.special import expit

DEFAULT_A = 0.3
DEFAULT_GAMMA = 1.0


def true_label_probs(scores: np.ndarray) -> np.ndarray:
    """Softmax probability of the true label, averaged over query views, from LiRA's scores.

    phi = z_y - logsumexp_{j != y} z_j = log(p_y / (1 - p_y)), hence p_y = sigmoid(phi):
    scores (..., N, Q) -> probabilities (..., N), float64, exact even where p_y is tiny.
    """
    return expit(np.asarray(scores, dtype=np.float64)).mean(axis=-1)


def offline_reference_probs(shadow_probs: np.ndarray, shadow_keep: np.ndarray, a: float = DEFAULT_A) -> np.ndarray:
    """p(x) = ((1 + a) / 2) * mean of the OUT shadows' probabilities + (1 - a) / 2, per example."""
    probs = np.asarray(shadow_probs, dtype=np.float64)
    out = ~np.asarray(shadow_keep, dtype=bool)
    if probs.shape != out.shape or probs.ndim != 2:
        raise ValueError(f"shadow_probs and shadow_keep must both be (M, N); got {probs.shape} and {out.shape}")
    if not 0.0 <= a <= 1.0:
        raise ValueError(f"RMIA's offline a must lie in [0, 1], got {a}")
    n_out = out.sum(axis=0)
    if n_out.min() < 1:
        raise ValueError(f"RMIA offline needs at least one OUT reference model per example; example "
                         f"{int(np.argmin(n_out))} has none")
    p_out = np.where(out, probs, 0.0).sum(axis=0) / n_out
    return 0.5 * (1.0 + a) * p_out + 0.5 * (1.0 - a)


def ratio_tie_break(ratio: np.ndarray) -> np.ndarray:
    """t(r) = 1/2 + arctan(ln r) / pi: strictly increasing, (0, inf) onto (0, 1), t(0) = 0.

    Every finite float64 ratio gives t < 1 - 1/(710 pi), so k + t never rounds up to k + 1.
    """
    with np.errstate(divide="ignore"):
        return 0.5 + np.arctan(np.log(np.asarray(ratio, dtype=np.float64))) / np.pi


def rmia_offline(shadow_probs: np.ndarray, shadow_keep: np.ndarray, target_probs: np.ndarray,
                 population_idx, a: float = DEFAULT_A, gamma: float = DEFAULT_GAMMA,
                 tie_break: bool = True) -> np.ndarray:
    """RMIA scores (N,), higher = member: the fraction in [0, 1], plus t(ratio) / |Z| if tie_break.

    shadow_probs (M, N): each reference model's true-label probability of each example;
    shadow_keep (M, N): which references trained on which example (only OUT ones are used);
    target_probs (N,): the target's probabilities; population_idx: indices (or a boolean mask)
    of the population points z among the N columns. tie_break: rank points of equal fraction
    by their ratio (see the module's docstring); False gives the paper's fraction alone.
    """
    p_target = np.asarray(target_probs, dtype=np.float64)
    p_x = offline_reference_probs(shadow_probs, shadow_keep, a)
    if p_target.shape != p_x.shape:
        raise ValueError(f"target_probs must be (N,) = {p_x.shape}, got {p_target.shape}")
    if gamma <= 0:
        raise ValueError(f"gamma must be positive, got {gamma}")
    ratio = p_target / p_x
    idx = np.asarray(population_idx)
    population = np.sort(ratio[idx if idx.dtype == bool else idx.astype(np.intp)])
    if population.size == 0:
        raise ValueError("RMIA needs at least one population point z; population_idx selects none")
    # ratio(x) / ratio(z) > gamma  <=>  ratio(z) < ratio(x) / gamma (all ratios are positive)
    below = np.searchsorted(population, ratio / gamma, side="left").astype(np.float64)
    if tie_break:
        below += ratio_tie_break(ratio)  # < 1: never reaches the next fraction
    return below / population.size
