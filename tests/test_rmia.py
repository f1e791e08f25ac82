"""RMIA offline: a slow per-example reference, ties broken by the ratio, the population key, power."""
import math

import numpy as np
import pytest
from scipy.special import expit

from ptqlib.attacks import lira
from ptqlib.results import metrics
from ptqlib.attacks import rmia
from ptqlib.attacks import threat
from ptqlib.errors import ConfigError
from ptqlib.study.config import validate
from ptqlib.study.plan import plan_study

from reference_rmia import choose_a


def slow_ratio(shadow_probs, keep, target_probs, a):
    m, n = shadow_probs.shape
    p_x = []
    for j in range(n):
        outs = [shadow_probs[i, j] for i in range(m) if not keep[i, j]]
        p_x.append((1 + a) / 2 * np.mean(outs) + (1 - a) / 2)
    return np.array([target_probs[j] / p_x[j] for j in range(n)])


def slow_rmia(shadow_probs, keep, target_probs, population, a, gamma):
    ratio = slow_ratio(shadow_probs, keep, target_probs, a)
    return np.array([sum(1 for z in population if ratio[j] / ratio[z] > gamma) / len(population)
                     for j in range(len(ratio))])


def slow_rank(*keys):
    """Each point's place (0 = lowest) when sorted by keys[0], then keys[1], ... (Python's sort)."""
    order = sorted(range(len(keys[0])), key=lambda j: tuple(k[j] for k in keys))
    rank = np.empty(len(order), int)
    rank[order] = np.arange(len(order))
    return rank


def planted(seed=0, m=8, n=4000, z=40, signal=2.0):
    """Logit-scale scores, IN ~ N(mu + signal, 1), OUT ~ N(mu, 1); z held-out columns as population."""
    rng = np.random.default_rng(seed)
    mu = rng.normal(1.0, 2.0, n + z)
    keep = np.zeros((m, n + z), bool)
    keep[:, :n] = np.argsort(rng.random((m, n)), axis=0) < m // 2
    shadow = expit(mu + signal * keep + rng.normal(size=(m, n + z)))
    member = np.r_[rng.random(n) < 0.5, np.zeros(z, bool)]
    target = expit(mu + signal * member + rng.normal(size=n + z))
    return shadow, keep, target, member[:n], np.arange(n, n + z)


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
    got = rmia.rmia_offline(shadow_probs, keep, target_probs, population, a=a, gamma=gamma, tie_break=False)
    np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-9)
    mask = np.zeros(n, bool)
    mask[population] = True                             # a boolean mask works as population_idx
    np.testing.assert_array_equal(rmia.rmia_offline(shadow_probs, keep, target_probs, mask, a=a, gamma=gamma,
                                                    tie_break=False), got)
    # the tie-broken score: the fraction plus less than 1 / |Z|, ranked by (fraction, ratio)
    broken = rmia.rmia_offline(shadow_probs, keep, target_probs, population, a=a, gamma=gamma)
    assert np.all(broken - got >= 0) and np.all(broken - got < 1 / len(population))
    ratio = slow_ratio(shadow_probs, keep, target_probs, a)
    np.testing.assert_array_equal(slow_rank(broken, np.arange(n)), slow_rank(expected, ratio, np.arange(n)))


def test_tie_break_ranks_by_fraction_then_ratio_across_pooled_targets():
    # two targets on one population, pooled: ties in fraction are broken by the ratio even between
    # targets, over ratios from 1e-200 to 1e200 (where a plain r / (1 + r) would tie)
    rng = np.random.default_rng(3)
    m, n, z = 6, 200, 7                                 # a tiny population: many ties
    keep = rng.random((m, n)) < 0.5
    keep[0] = False
    shadow = rng.uniform(0.05, 1.0, size=(m, n))
    scores, fractions, ratios = [], [], []
    for t in range(2):
        target = 10.0 ** rng.uniform(-200, 0, size=n)
        target[:10] = rng.uniform(0.5, 1.0, 10)
        population = np.arange(n - z, n)
        scores.append(rmia.rmia_offline(shadow, keep, target, population, a=1.0))
        fractions.append(slow_rmia(shadow, keep, target, population, 1.0, 1.0))
        ratios.append(slow_ratio(shadow, keep, target, 1.0))
    score, fraction, ratio = map(np.concatenate, (scores, fractions, ratios))
    assert len(np.unique(fraction)) <= z + 1 < len(np.unique(score)) == 2 * n
    np.testing.assert_array_equal(slow_rank(score), slow_rank(fraction, ratio))


def test_tie_break_gives_the_ratio_its_tpr_at_low_fpr_where_the_fraction_gives_zero():
    shadow, keep, target, member, population = planted()
    n = len(member)
    old = rmia.rmia_offline(shadow, keep, target, population, tie_break=False)[:n]
    new = rmia.rmia_offline(shadow, keep, target, population)[:n]
    ratio = slow_ratio(shadow, keep, target, rmia.DEFAULT_A)[:n]
    assert (old[~member] == 1).sum() >= 2               # non-members tie with members at the top
    tpr = {name: metrics.attack_metrics(s, member)["tpr@0.001"] for name, s in
           (("old", old), ("new", new), ("ratio", ratio))}
    assert tpr["old"] == 0.0 and tpr["new"] == tpr["ratio"] > 0.01, tpr
    for fpr in ("tpr@0.01", "auc"):                     # the whole ROC is the ratio's
        assert metrics.attack_metrics(new, member)[fpr] == metrics.attack_metrics(ratio, member)[fpr]


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
    assert scores.min() >= 0.0 and scores.max() < 1.0 + 1.0 / z
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


def test_population_is_the_first_n_held_out_points():
    rng = np.random.default_rng(4)
    m, n, nt, q = 6, 80, 30, 2
    keep = rng.random((m, n)) < 0.5
    keep[0] = False
    pool = threat.ShadowPool(rng.normal(size=(m, n, q)), keep, rng.normal(size=(m, nt, q)))
    target, target_test = rng.normal(size=(n, q)), rng.normal(size=(nt, q))
    for k in (1, 12, nt):
        probs = rmia.true_label_probs(np.concatenate([pool.scores, pool.test_scores[:, :k]], axis=1))
        t_probs = rmia.true_label_probs(np.concatenate([target, target_test[:k]]))
        expected = rmia.rmia_offline(probs, np.c_[keep, np.zeros((m, k), bool)], t_probs, np.arange(n, n + k))[:n]
        got = threat.attack_target(pool, target, ["rmia"], target_test, rmia_population=k)["rmia"]
        np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(threat.attack_target(pool, target, ["rmia"], target_test)["rmia"], got)  # 0 = all
    with pytest.raises(ValueError, match=r"rmia_population: 31 is invalid; .* 1\.\.30"):
        threat.attack_target(pool, target, ["rmia"], target_test, rmia_population=31)
    from ptqlib.study.jobs.attack import rmia_row_fields
    assert rmia_row_fields("rmia", nt, 0) == {"rmia_population": nt}
    assert rmia_row_fields("rmia", nt, 12) == {"rmia_population": 12} and rmia_row_fields("online", nt, 12) == {}


@pytest.mark.parametrize("value, message", [
    (451, "rmia_population: 451 is invalid; use 0 (the whole test split: 450 points on digits) or a count in 1..450"),
    (-1, "rmia_population: -1 is invalid; use 0 (the whole test split: 450 points on digits) or a count in 1..450"),
    ("all", "rmia_population: expected an integer, got 'all'"),
    (2.5, "rmia_population: expected an integer, got 2.5"),
])
def test_rmia_population_key_rejects_bad_values_in_one_line(value, message):
    with pytest.raises(ConfigError) as err:
        validate({"rmia_population": value})
    assert str(err.value) == message


def test_rmia_population_key_reaches_the_attack_jobs_only_when_it_matters():
    small = {"num_targets": 1, "num_shadows": 4, "dp_noise": [1.0]}  # the DP group's GroupAttackJob too
    jobs = lambda cfg: [plan_study(cfg).attack, *plan_study(cfg).extras.attacks]  # noqa: E731
    default = jobs(validate(small))
    assert all("rmia_population" not in j.params for j in default)  # the default adds nothing to the key
    assert [j.key for j in jobs(validate({**small, "rmia_population": 450}))] == [j.key for j in default]  # = all
    fewer = jobs(validate({**small, "rmia_population": 100}))
    assert all(j.rmia_population == 100 and j.params["rmia_population"] == 100 for j in fewer)
    assert all(a.key != b.key for a, b in zip(fewer, default))
    no_rmia = {**small, "attacks": ["online"]}
    assert [j.key for j in jobs(validate({**no_rmia, "rmia_population": 100}))] == \
        [j.key for j in jobs(validate(no_rmia))]
