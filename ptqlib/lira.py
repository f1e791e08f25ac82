"""LiRA (Carlini et al., S&P 2022) and the global-threshold baseline, vectorised.

Inputs are per-query scores phi = z_y - logsumexp_{j != y} z_j:
  shadow_scores (M, N, Q), shadow_keep (M, N) bool, target_scores (N, Q).
Every attack returns one membership score per example, higher = more likely a member.

As in the reference code, for every example the IN (OUT) scores are the first
min_j |IN_j| (min_j |OUT_j|) shadows in model order, so the arrays are rectangular and the
number of references cannot itself reveal membership; centres are medians over models,
spreads are standard deviations (ddof = 0).
"""
from __future__ import annotations

import math

import numpy as np
from scipy.special import log_ndtr, logsumexp

_EPS = 1e-30  # the reference adds this to every std


def logit_scores(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """phi = z_y - logsumexp_{j != y} z_j in float64; logits (..., N, Q, C), labels (N,)."""
    z = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(labels)
    shape = z.shape[:-1]
    y = np.broadcast_to(labels.reshape((1,) * (z.ndim - 3) + (-1, 1)), shape)
    z_y = np.take_along_axis(z, y[..., None], axis=-1)[..., 0]
    others = z.copy()
    np.put_along_axis(others, y[..., None], -np.inf, axis=-1)
    return z_y - logsumexp(others, axis=-1)


def split_in_out(shadow_scores: np.ndarray, shadow_keep: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """IN and OUT score arrays (k_in, N, Q) and (k_out, N, Q), truncated to equal counts."""
    keep = np.asarray(shadow_keep, dtype=bool)
    k_in, k_out = int(keep.sum(0).min()), int((~keep).sum(0).min())
    if k_in < 1 or k_out < 1:
        raise ValueError("every example needs at least one IN and one OUT shadow model")
    in_first = np.argsort(~keep, axis=0, kind="stable")[:k_in]   # model ids, IN models first
    out_first = np.argsort(keep, axis=0, kind="stable")[:k_out]
    dat_in = np.take_along_axis(shadow_scores, in_first[..., None], axis=0)
    dat_out = np.take_along_axis(shadow_scores, out_first[..., None], axis=0)
    return dat_in, dat_out


def _log_normal(x, mu, sd):
    return -0.5 * ((x - mu) / sd) ** 2 - np.log(sd) - 0.5 * math.log(2 * math.pi)


def lira_online(shadow_scores, shadow_keep, target_scores, fixed_variance: bool = False) -> np.ndarray:
    """Online LiRA: mean over queries of log N(phi; in) - log N(phi; out).

    With `fixed_variance`, both spreads are one global std of all IN scores (the reference's
    choice: better with fewer than ~64 shadows).
    """
    dat_in, dat_out = split_in_out(shadow_scores, shadow_keep)
    mu_in, mu_out = np.median(dat_in, axis=0), np.median(dat_out, axis=0)
    if fixed_variance:
        sd_in = sd_out = np.std(dat_in)
    else:
        sd_in, sd_out = np.std(dat_in, axis=0), np.std(dat_out, axis=0)
    llr = _log_normal(target_scores, mu_in, sd_in + _EPS) - _log_normal(target_scores, mu_out, sd_out + _EPS)
    return llr.mean(axis=-1)


def _out_gaussian(shadow_scores, shadow_keep, fixed_variance):
    _, dat_out = split_in_out(shadow_scores, shadow_keep)
    sd = np.std(dat_out) if fixed_variance else np.std(dat_out, axis=0)
    return np.median(dat_out, axis=0), sd + _EPS


def lira_offline(shadow_scores, shadow_keep, target_scores, fixed_variance: bool = False) -> np.ndarray:
    """Offline LiRA as the reference code scores it: minus the mean OUT log-likelihood.

    Two-sided: an unusually low score is also called a member.
    """
    mu, sd = _out_gaussian(shadow_scores, shadow_keep, fixed_variance)
    return -_log_normal(target_scores, mu, sd).mean(axis=-1)


def lira_offline_one_sided(shadow_scores, shadow_keep, target_scores, fixed_variance: bool = False) -> np.ndarray:
    """Offline LiRA as the paper describes it: mean over queries of log P(phi_out <= phi)."""
    mu, sd = _out_gaussian(shadow_scores, shadow_keep, fixed_variance)
    return log_ndtr((target_scores - mu) / sd).mean(axis=-1)


def global_threshold(shadow_scores, shadow_keep, target_scores) -> np.ndarray:
    """The classic confidence attack: the target's own mean score, no shadows needed."""
    return np.asarray(target_scores, dtype=np.float64).mean(axis=-1)


ATTACKS = {
    "online": lambda s, k, t: lira_online(s, k, t, fixed_variance=False),
    "online_fixed": lambda s, k, t: lira_online(s, k, t, fixed_variance=True),
    "offline": lambda s, k, t: lira_offline(s, k, t, fixed_variance=False),
    "offline_fixed": lambda s, k, t: lira_offline(s, k, t, fixed_variance=True),
    "offline_one_sided": lambda s, k, t: lira_offline_one_sided(s, k, t, fixed_variance=False),
    "global": global_threshold,
}

ATTACK_LABELS = {
    "online": "LiRA online",
    "online_fixed": "LiRA online, fixed var.",
    "offline": "LiRA offline (two-sided)",
    "offline_fixed": "LiRA offline, fixed var.",
    "offline_one_sided": "LiRA offline (one-sided)",
    "global": "global threshold",
}
