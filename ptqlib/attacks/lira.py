"""LiRA (Carlini et al., S&P 2022) and the global-threshold baseline, vectorised.

Inputs are per-query scores phi = z_y - logsumexp_{j != y} z_j:
  shadow_scores (M, N, Q), shadow_keep (M, N) bool, target_scores (N, Q).
Every attack returns one membership score per example, higher = more likely a member.

As in the reference code, for every example the IN (OUT) scores are the first
min_j |IN_j| (min_j |OUT_j|) shadows in model order, so the arrays are rectangular and the
number of references cannot itself reveal membership; centres are medians over models,
spreads are standard deviations (ddof = 0).

One way to run the attacks, for any number of named variants and targets against one pool:
      stats = fit_shadow_stats(shadow_scores, shadow_keep)       # once: medians, stds
      scores = score_attacks(stats, target_scores, names)           # per target: cheap
Leave-one-out: fit_shadow_stats(pool_scores, pool_keep, exclude=j), then score pool_scores[j]
(`ptqlib.attacks.threat` builds both threat models on this). Attack names: `VARIANTS`.

Variance options (the `variance` of a variant):
- "per_example": the std over shadows of each example and query (the paper's default).
- "fixed": the reference code's fixed variance, one global std of all IN scores for both
  sides online (all OUT scores offline). It is not centred per example, so it contains the
  spread between examples too.
- "fixed_residual": one std per side, of the residuals around each example's centre, taken
  separately for IN and OUT (as tf-privacy's advanced_mia does): the pooled within-example
  spread, the natural estimate when all examples share one std.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.special import log_ndtr, logsumexp

_EPS = 1e-30  # the reference adds this to every std
_BLOCK = 4096  # examples per block when fitting: bounds the extra memory (a few MB at M = 64, Q = 2)
_LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)


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


def _counts(keep: np.ndarray, use_in: np.ndarray | None = None, use_out: np.ndarray | None = None) -> tuple[int, int]:
    use_in = keep if use_in is None else use_in
    use_out = ~keep if use_out is None else use_out
    n_in, n_out = use_in.sum(axis=0), use_out.sum(axis=0)
    k_in, k_out = int(n_in.min()), int(n_out.min())
    if k_in < 1 or k_out < 1:
        bad = int(np.argmin(n_in) if k_in < 1 else np.argmin(n_out))
        raise ValueError(f"every example needs at least one IN and one OUT shadow model; example {bad} "
                         f"is IN for {int(n_in[bad])} and OUT for {int(n_out[bad])} shadows (use more shadows "
                         f"or balanced masks)")
    return k_in, k_out


# ---------------------------------------------------------------- shared shadow statistics

@dataclass(frozen=True)
class ShadowStats:
    """Everything the LiRA variants need from the shadows, computed once.

    Arrays are (N, Q); spreads are without the reference's 1e-30 (added when scoring).
    """
    mu_in: np.ndarray        # median of the IN scores
    mu_out: np.ndarray       # median of the OUT scores
    sd_in: np.ndarray        # std of the IN scores (ddof 0)
    sd_out: np.ndarray
    sd_in_all: float         # std of all IN scores together (the reference's fixed variance)
    sd_out_all: float        # std of all OUT scores together (the reference's offline fixed variance)
    sd_in_residual: float    # std of all IN residuals x - mu_in (tf-privacy style fixed variance)
    sd_out_residual: float
    k_in: int                # IN / OUT shadows used per example after truncation
    k_out: int

    @property
    def shape(self) -> tuple[int, int]:
        return self.mu_in.shape


def _truncated(use: np.ndarray, k: int) -> np.ndarray:
    """The first k selected shadows of each example, in model order (use itself if all have k)."""
    n = use.sum(axis=0)
    return use if n.min() == n.max() else use & (np.cumsum(use, axis=0) <= k)


def _side_block(scores_nqm: np.ndarray, use: np.ndarray, k: int):
    """Median, mean and sum of squared deviations over the k selected shadows of each (n, q).

    scores_nqm: (b, Q, M) view; use: (b, M) with exactly k Trues per row. The unused shadows are
    set to +inf, so one partition finds the median without a gather or a sort. The mean and the sum
    of squares are masked sums in model order: a partition leaves only its kth slots in place (the
    other finite scores may sit beyond slot k among the infs), and its order differs between NumPy
    releases, so nothing but the median is read from it.
    """
    mask = use[:, None, :]
    buf = np.where(mask, scores_nqm, np.inf)
    half = k // 2
    buf.partition(half, axis=-1)  # one kth: a list [half - 1, half] is ~4.5x slower
    med = buf[..., half].copy() if k % 2 else 0.5 * (buf[..., half] + buf[..., :half].max(axis=-1))
    vals = np.where(mask, scores_nqm, 0.0)
    mean = vals.sum(axis=-1) / k
    vals -= mean[..., None]
    vals *= mask
    np.square(vals, out=vals)
    return med, mean, vals.sum(axis=-1)


def _pooled_std(cell_means: np.ndarray, cell_ss: np.ndarray, k: int) -> float:
    """Std of all values of equally sized cells, from each cell's mean and sum of squares."""
    grand = cell_means.mean()
    total = cell_ss.sum() + k * np.square(cell_means - grand).sum()
    return float(np.sqrt(total / (k * cell_means.size)))


def fit_shadow_stats(shadow_scores: np.ndarray, shadow_keep: np.ndarray, exclude=None) -> ShadowStats:
    """IN and OUT medians and spreads of every example and query, for all LiRA variants at once.

    shadow_scores (M, N, Q) (or (M, N) for one query), shadow_keep (M, N) bool. `exclude`: model
    indices (an int or a list) left out of the shadows, e.g. the target in leave-one-out; the same
    as slicing them away, without copying the score array. Works on blocks of examples, so the
    extra memory is a small fraction of the score array.
    """
    scores = np.asarray(shadow_scores, dtype=np.float64)
    if scores.ndim == 2:
        scores = scores[..., None]
    keep = np.asarray(shadow_keep, dtype=bool)
    if scores.ndim != 3 or keep.shape != scores.shape[:2]:
        raise ValueError(f"shadow_scores must be (M, N, Q) and shadow_keep (M, N); got {scores.shape} "
                         f"and {keep.shape}")
    m, n, q = scores.shape
    if exclude is None:
        use_in, use_out = keep, ~keep
    else:
        shadow = np.ones(m, dtype=bool)
        shadow[np.asarray(exclude, dtype=np.intp)] = False
        use_in, use_out = keep & shadow[:, None], ~keep & shadow[:, None]
    k_in, k_out = _counts(keep, use_in, use_out)
    use_in, use_out = _truncated(use_in, k_in), _truncated(use_out, k_out)
    out = {name: np.empty((n, q)) for name in
           ("mu_in", "mean_in", "ss_in", "mu_out", "mean_out", "ss_out")}
    for a in range(0, n, _BLOCK):
        b = min(a + _BLOCK, n)
        block = np.moveaxis(scores[:, a:b, :], 0, -1)  # (b, Q, M) view
        for side, use, k in (("in", use_in, k_in), ("out", use_out, k_out)):
            med, mean, ss = _side_block(block, use[:, a:b].T, k)
            out[f"mu_{side}"][a:b], out[f"mean_{side}"][a:b], out[f"ss_{side}"][a:b] = med, mean, ss
    return ShadowStats(
        mu_in=out["mu_in"], mu_out=out["mu_out"],
        sd_in=np.sqrt(out["ss_in"] / k_in), sd_out=np.sqrt(out["ss_out"] / k_out),
        sd_in_all=_pooled_std(out["mean_in"], out["ss_in"], k_in),
        sd_out_all=_pooled_std(out["mean_out"], out["ss_out"], k_out),
        # residual x - mu has cell mean (mean - mu) and the same sum of squares as x
        sd_in_residual=_pooled_std(out["mean_in"] - out["mu_in"], out["ss_in"], k_in),
        sd_out_residual=_pooled_std(out["mean_out"] - out["mu_out"], out["ss_out"], k_out),
        k_in=k_in, k_out=k_out)


# ---------------------------------------------------------------- scoring from the statistics

def _log_normal(x, mu, sd):
    return -0.5 * np.square((x - mu) / sd) - np.log(sd) - _LOG_SQRT_2PI


def _spreads(stats: ShadowStats, variance: str, online: bool):
    if variance == "per_example":
        return stats.sd_in + _EPS, stats.sd_out + _EPS
    if variance == "fixed":  # the reference: IN std for both sides online, OUT std offline
        sd = stats.sd_in_all if online else stats.sd_out_all
        return sd + _EPS, sd + _EPS
    if variance == "fixed_residual":
        return stats.sd_in_residual + _EPS, stats.sd_out_residual + _EPS
    raise ValueError(f"variance must be 'per_example', 'fixed' or 'fixed_residual', not {variance!r}")


def _check_target(stats: ShadowStats, target_scores) -> np.ndarray:
    t = np.asarray(target_scores, dtype=np.float64)
    if t.ndim == 1:
        t = t[:, None]
    if t.shape != stats.shape:
        raise ValueError(f"target_scores must be (N, Q) = {stats.shape} like the shadows, got {t.shape}")
    return t


def _score_online(stats: ShadowStats, target_scores, variance: str = "per_example") -> np.ndarray:
    """Online LiRA: mean over queries of log N(phi; in) - log N(phi; out)."""
    t = _check_target(stats, target_scores)
    sd_in, sd_out = _spreads(stats, variance, online=True)
    return (_log_normal(t, stats.mu_in, sd_in) - _log_normal(t, stats.mu_out, sd_out)).mean(axis=-1)


def _score_offline(stats: ShadowStats, target_scores, variance: str = "per_example",
                  one_sided: bool = False) -> np.ndarray:
    """Offline LiRA, OUT Gaussians only.

    Two-sided (the reference code): minus the mean OUT log-likelihood, so an unusually low score
    is also called a member. One-sided (the paper): mean over queries of log P(phi_out <= phi).
    """
    t = _check_target(stats, target_scores)
    _, sd = _spreads(stats, variance, online=False)
    if one_sided:
        return log_ndtr((t - stats.mu_out) / sd).mean(axis=-1)
    return -_log_normal(t, stats.mu_out, sd).mean(axis=-1)


def _score_global(target_scores) -> np.ndarray:
    """The classic confidence attack: the target's own mean score, no shadows needed."""
    t = np.asarray(target_scores, dtype=np.float64)
    return t if t.ndim == 1 else t.mean(axis=-1)


# name -> (kind, variance, one_sided)
VARIANTS = {
    "online": ("online", "per_example", False),
    "online_fixed": ("online", "fixed", False),
    "online_fixed_residual": ("online", "fixed_residual", False),
    "offline": ("offline", "per_example", False),
    "offline_fixed": ("offline", "fixed", False),
    "offline_fixed_residual": ("offline", "fixed_residual", False),
    "offline_one_sided": ("offline", "per_example", True),
    "offline_one_sided_fixed": ("offline", "fixed", True),
    "global": ("global", None, False),
}

MAIN_ATTACKS = ("online", "online_fixed", "offline", "offline_fixed", "global")


def score_attack(stats: ShadowStats | None, target_scores, name: str) -> np.ndarray:
    """One named LiRA variant from precomputed statistics (`stats` may be None for 'global')."""
    if name not in VARIANTS:
        raise ValueError(f"unknown attack {name!r}; valid: {', '.join(VARIANTS)}")
    kind, variance, one_sided = VARIANTS[name]
    if kind == "global":
        return _score_global(target_scores)
    if kind == "online":
        return _score_online(stats, target_scores, variance)
    return _score_offline(stats, target_scores, variance, one_sided)


def score_attacks(stats: ShadowStats, target_scores, names=MAIN_ATTACKS) -> dict[str, np.ndarray]:
    """{name: membership scores (N,)} for every named variant, sharing one set of statistics."""
    return {name: score_attack(stats, target_scores, name) for name in names}


ATTACK_LABELS = {
    "online": "LiRA online",
    "online_fixed": "LiRA online, fixed var.",
    "online_fixed_residual": "LiRA online, fixed var. (IN/OUT residual)",
    "offline": "LiRA offline (two-sided)",
    "offline_fixed": "LiRA offline, fixed var.",
    "offline_fixed_residual": "LiRA offline, fixed var. (residual)",
    "offline_one_sided": "LiRA offline (one-sided)",
    "offline_one_sided_fixed": "LiRA offline (one-sided), fixed var.",
    "global": "global threshold",
    "rmia": "RMIA offline",  # ptqlib.attacks.rmia; dispatched by ptqlib.attacks.threat
}
