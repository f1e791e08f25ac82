"""Uncertainty over targets: bootstrap intervals, mean/std/CI summaries, pooled ROC.

A study attacks several targets; each target gives one value of a metric (TPR@0.1%FPR, AUC...).
The targets are the random units (different training subsets and seeds), so the bootstrap
resamples targets, not examples. The pooled ROC instead concatenates every target's scores and
membership labels into one ROC: it reaches lower FPRs than any single target (n non-members
times the number of targets), provided the scores are on a common scale across targets, which
holds for LiRA's log-likelihood ratios and for RMIA's fractions.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from ptqlib.results import metrics

CONFIDENCE = 0.95
BOOTSTRAP_SAMPLES = 10_000
BOOTSTRAP_SEED = 0


def bootstrap_ci(values, level: float = CONFIDENCE, n_boot: int = BOOTSTRAP_SAMPLES,
                 seed: int = BOOTSTRAP_SEED) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean over targets (one value per target).

    Resamples the targets with replacement `n_boot` times (seeded: the same values give the same
    interval) and returns the (1 - level)/2 and (1 + level)/2 quantiles of the resampled means.
    With few targets the percentile interval is somewhat too narrow (about 90% real coverage
    at 10 targets); report the number of targets next to it.
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    if v.size == 0:
        raise ValueError("bootstrap_ci needs at least one value")
    if not np.all(np.isfinite(v)):
        raise ValueError(f"bootstrap_ci got non-finite values: {v[~np.isfinite(v)][:5]}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, v.size, size=(n_boot, v.size))].mean(axis=1)
    low, high = np.quantile(means, [(1.0 - level) / 2.0, (1.0 + level) / 2.0])
    return float(low), float(high)


def summarize(values, level: float = CONFIDENCE, n_boot: int = BOOTSTRAP_SAMPLES,
              seed: int = BOOTSTRAP_SEED) -> dict:
    """Mean, std (ddof 1; 0 for one target), bootstrap interval and count of per-target values."""
    v = np.asarray(values, dtype=np.float64).ravel()
    low, high = bootstrap_ci(v, level, n_boot, seed)
    return {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if v.size > 1 else 0.0,
            "ci_low": low, "ci_high": high, "n": int(v.size)}


def summary_table(df: pd.DataFrame, by: list[str], columns: list[str], level: float = CONFIDENCE,
                  n_boot: int = BOOTSTRAP_SAMPLES, seed: int = BOOTSTRAP_SEED) -> pd.DataFrame:
    """One row per group of `by`: for every metric column c, c (mean), c_std, c_ci_low, c_ci_high.

    `df` holds one row per target (the attack stage's metrics table); `targets` counts the rows.
    """
    rows = []
    for key, group in df.groupby(by, dropna=False, sort=False):
        row = dict(zip(by, key if isinstance(key, tuple) else (key,)))
        for c in columns:
            s = summarize(group[c].to_numpy(), level, n_boot, seed)
            row.update({c: s["mean"], f"{c}_std": s["std"], f"{c}_ci_low": s["ci_low"],
                        f"{c}_ci_high": s["ci_high"]})
        row["targets"] = len(group)
        rows.append(row)
    return pd.DataFrame(rows)


def _pool(scores_per_target, members_per_target) -> tuple[np.ndarray, np.ndarray]:
    scores = [np.asarray(s, dtype=np.float64).ravel() for s in scores_per_target]
    members = [np.asarray(m, dtype=bool).ravel() for m in members_per_target]
    if len(scores) != len(members) or any(s.shape != m.shape for s, m in zip(scores, members)):
        raise ValueError("pooling needs one membership vector of the same length per target's scores")
    if not scores:
        raise ValueError("pooling needs at least one target")
    return np.concatenate(scores), np.concatenate(members)


def pooled_roc(scores_per_target, members_per_target) -> tuple[np.ndarray, np.ndarray]:
    """(fpr, tpr) of one ROC over all targets' scores and membership labels together."""
    return metrics.roc(*_pool(scores_per_target, members_per_target))


def pooled_low_fpr_tprs(scores_per_target, members_per_target) -> dict:
    """Only the pooled ROC's TPR at each low FPR (`metrics.low_fpr_tprs`): the bootstrap loops' fast path."""
    return metrics.low_fpr_tprs(*_pool(scores_per_target, members_per_target))


def pooled_metrics(scores_per_target, members_per_target) -> dict:
    """`metrics.attack_metrics` of the pooled ROC; n_nonmembers is the pooled count."""
    return metrics.attack_metrics(*_pool(scores_per_target, members_per_target))
