"""RMIA offline: a slow per-example reference, the signal, and power on a synthetic problem."""
import math

import numpy as np
import pytest
from scipy.special import expit

from ptqlib.attacks import lira
from ptqlib.results import metrics
from ptqlib.attacks import rmia

from reference_rmia import choose_a


def slow_rmia(shadow_probs, keep, target_probs, population, a, gamma):
    m, n = shadow_probs.shape
    p_x = []
    for j in range(n):
        outs = [shadow_probs[i, j] for i in range(m) if not keep[i, j]]
        p_x.append((1 + a) / 2 * np.mean(outs) + (1 - a) / 2)
    ratio = [target_probs[j] / p_x[j] for j in range(n)]
    return np.array([sum(1 for z in population if ratio[j] / ratio[z] > gamma) / len(population)
                     for j in range(n)])


@pytest.mark.parametrize("a, gamma", [(0.3, 1.0), (1.0, 1.0), (0.0, 2.0), (0.6, 0.5)])
def test_rmia_matches_slow_reference(a, gamma):
    rng = np.random.default_rng(0)
    m, n = 9, 60
    keep = rng.random((m, n)) < 0.5
    keep[0] = False                                     # every example has an OUT reference
    shadow_probs = rng.uniform(0.01, 1.0, size=(m, n))
    target_probs = rng.uniform(0.01, 1.0, size=n)
    target_probs[5] = target_probs[7]                   # a tie between points
    population = np.flatnonzero(rng.random(n) < 0.4)
    expected = slow_rmia(shadow_probs, keep, target_probs, population, a, gamma)
    got = rmia.rmia_offline(shadow_probs, keep, target_probs, population, a=a, gamma=gamma)
    np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-9)
    mask = np.zeros(n, bool)
    mask[population] = True                             # a boolean mask works as population_idx
    np.testing.assert_array_equal(rmia.rmia_offline(shadow_probs, keep, target_probs, mask, a=a, gamma=gamma), got)


def test_true_label_probs_is_the_softmax_probability_averaged_over_views():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(4, 3, 7)) * 5             # (N, Q, C)
    labels = rng.integers(0, 7, 4)
    z = logits - logits.max(axis=-1, keepdims=True)
    p = np.exp(z) / np.exp(z).sum(axis=-1, keepdims=True)
    expected = p[np.arange(4), :, labels].mean(axis=-1)
    got = rmia.true_label_probs(lira.logit_scores(logits, labels))
    np.testing.assert_allclose(got, expected, rtol=1e-12)


def test_rmia_beats_chance_on_a_synthetic_gaussian_problem():
    # logit-scale scores: IN ~ N(mu_i + 1, 1), OUT ~ N(mu_i, 1); population: 2,000 held-out points
    # appended as columns that no shadow and not the target trained on.
    rng = np.random.default_rng(2)
    m, n, z = 16, 4000, 2000
    mu = rng.normal(1.0, 2.0, n + z)
    keep = np.zeros((m, n + z), bool)
    keep[:, :n] = np.argsort(rng.random((m, n)), axis=0) < m // 2
    shadow = expit(mu + keep + rng.normal(size=(m, n + z)))
    member = np.r_[rng.random(n) < 0.5, np.zeros(z, bool)]
    target = expit(mu + member + rng.normal(size=n + z))
    scores = rmia.rmia_offline(shadow, keep, target, np.arange(n, n + z))[:n]
    assert scores.min() >= 0.0 and scores.max() <= 1.0
    m_ = metrics.attack_metrics(scores, member[:n])
    assert m_["auc"] > 0.6, m_
    assert m_["tpr@0.01"] > 0.02, m_     # chance is 0.01
    a = choose_a(shadow[:, :n], keep[:, :n])
    assert 0.0 <= a <= 1.0


def test_rmia_errors():
    keep = np.array([[True, False], [True, True]])
    with pytest.raises(ValueError, match="example 0"):
        rmia.rmia_offline(np.ones((2, 2)) / 2, keep, np.ones(2) / 2, [1])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        rmia.rmia_offline(np.ones((2, 2)) / 2, ~keep, np.ones(2) / 2, [1], a=1.5)
    with pytest.raises(ValueError, match="population"):
        rmia.rmia_offline(np.ones((2, 2)) / 2, np.zeros((2, 2), bool), np.ones(2) / 2, [])
