"""Bootstrap intervals over targets and pooled ROCs."""
import math

import numpy as np
import pandas as pd
import pytest
from scipy.stats import norm, rankdata

from ptqlib.results import metrics
from ptqlib.results import stats


def per_target_auc(rng, reps, targets, n, d):
    """Empirical AUC (Mann-Whitney, unbiased for Phi(d / sqrt 2)) of reps x targets synthetic attacks."""
    members = rng.normal(d, 1.0, size=(reps, targets, n))
    nonmembers = rng.normal(0.0, 1.0, size=(reps, targets, n))
    ranks = rankdata(np.concatenate([members, nonmembers], axis=-1), axis=-1)[..., :n]
    return (ranks.sum(axis=-1) - n * (n + 1) / 2) / (n * n)


def test_bootstrap_interval_covers_the_true_auc_about_95_percent_of_the_time():
    # 200 repetitions of a 40-target study; the true per-target mean AUC is Phi(d / sqrt 2).
    # Tolerance: coverage in [0.90, 0.99] (binomial sd at 95% and 200 repetitions: 0.015; the
    # percentile bootstrap runs slightly narrow at 40 targets).
    d, reps = 0.5, 200
    truth = norm.cdf(d / math.sqrt(2))
    aucs = per_target_auc(np.random.default_rng(0), reps, 40, 100, d)
    covered = []
    for r in range(reps):
        low, high = stats.bootstrap_ci(aucs[r], n_boot=2000, seed=r)
        covered.append(low <= truth <= high)
    assert 0.90 <= np.mean(covered) <= 0.99, np.mean(covered)


def test_bootstrap_interval_covers_a_skewed_tpr_metric():
    # per-target TPR at a fixed threshold (members scoring above 2.5 with d = 1): skewed, near 0
    reps, targets, n = 200, 30, 200
    rng = np.random.default_rng(1)
    truth = 1 - norm.cdf(2.5 - 1.0)
    tpr = (rng.normal(1.0, 1.0, size=(reps, targets, n)) > 2.5).mean(axis=-1)
    covered = [stats.bootstrap_ci(tpr[r], n_boot=2000, seed=r) for r in range(reps)]
    coverage = np.mean([low <= truth <= high for low, high in covered])
    assert 0.90 <= coverage <= 0.99, coverage


def test_bootstrap_is_seeded_and_sensible():
    v = np.random.default_rng(2).normal(size=12)
    assert stats.bootstrap_ci(v, seed=3) == stats.bootstrap_ci(v, seed=3)
    low, high = stats.bootstrap_ci(v)
    assert low < v.mean() < high
    low99, high99 = stats.bootstrap_ci(v, level=0.99)
    assert low99 < low and high < high99
    assert stats.bootstrap_ci([0.25, 0.25, 0.25]) == (0.25, 0.25)
    with pytest.raises(ValueError, match="non-finite"):
        stats.bootstrap_ci([0.1, np.nan])


def test_summarize_and_summary_table():
    s = stats.summarize([0.1, 0.2, 0.3, 0.4])
    assert s["mean"] == pytest.approx(0.25) and s["std"] == pytest.approx(np.std([0.1, 0.2, 0.3, 0.4], ddof=1))
    assert s["n"] == 4 and s["ci_low"] < 0.25 < s["ci_high"]
    assert stats.summarize([0.7])["std"] == 0.0
    df = pd.DataFrame({"label": ["fp32"] * 3 + ["rtn 2-bit"] * 2, "attack": "online",
                       "auc": [0.6, 0.62, 0.64, 0.5, 0.52]})
    table = stats.summary_table(df, ["label", "attack"], ["auc"])
    assert list(table["label"]) == ["fp32", "rtn 2-bit"]
    assert table["auc"].tolist() == pytest.approx([0.62, 0.51])
    assert table["targets"].tolist() == [3, 2]
    assert (table["auc_ci_low"] <= table["auc"]).all() and (table["auc"] <= table["auc_ci_high"]).all()


def test_pooled_roc_concatenates_targets():
    # target A ranks its member first (AUC 1), target B ranks it last (AUC 0); pooled:
    # members {3, 2} vs non-members {1, 4}: 2 of 4 pairs ordered -> AUC 0.5
    scores = [np.array([3.0, 1.0]), np.array([2.0, 4.0])]
    members = [np.array([True, False]), np.array([True, False])]
    assert metrics.attack_metrics(scores[0], members[0])["auc"] == 1.0
    pooled = stats.pooled_metrics(scores, members)
    assert pooled["auc"] == pytest.approx(0.5)
    assert pooled["n_nonmembers"] == 2
    fpr, tpr = stats.pooled_roc(scores, members)
    np.testing.assert_array_equal(fpr, [0.0, 0.5, 0.5, 0.5, 1.0])
    np.testing.assert_array_equal(tpr, [0.0, 0.0, 0.5, 1.0, 1.0])
    with pytest.raises(ValueError, match="same length"):
        stats.pooled_roc(scores, [np.array([True])] * 2)
