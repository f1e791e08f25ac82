"""LiRA: known answers on synthetic Gaussians, and agreement with a slow per-example reference."""
import math

import numpy as np
import pytest
from scipy.stats import norm, spearmanr

from ptqlib.attacks import lira
from ptqlib.results import metrics

from reference_lira import attack, slow_lira, split_in_out

FPR_GRID = np.array([0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5])


# ---------------------------------------------------------------- synthetic problems

def balanced_keep(rng, m, n, k_in=None):
    """Every example IN for exactly k_in (default m // 2) of the m models."""
    k_in = m // 2 if k_in is None else k_in
    return np.argsort(rng.random((m, n)), axis=0) < k_in


def gaussian_problem(m, n, d, s, seed, q=1):
    """IN ~ N(mu_i + d, s_i), OUT ~ N(mu_i, s_i), random mu_i; a target with random membership."""
    rng = np.random.default_rng(seed)
    mu = rng.normal(0.0, 3.0, n)
    keep = balanced_keep(rng, m, n)
    s = np.broadcast_to(np.asarray(s, dtype=float)[..., None], (n, q)) if np.ndim(s) else s
    shadow = (mu + d * keep)[..., None] + s * rng.normal(size=(m, n, q))
    member = rng.random(n) < 0.5
    target = (mu + d * member)[:, None] + s * rng.normal(size=(n, q))
    return shadow, keep, target, member


def tpr_at(fpr, tpr, grid):
    """The ROC (a step curve) read at each FPR of grid."""
    return tpr[np.searchsorted(fpr, grid, side="right") - 1]


# ---------------------------------------------------------------- known answers

def neyman_pearson_tpr(fpr, d_over_s):
    return 1.0 - norm.cdf(norm.ppf(1.0 - fpr) - d_over_s)


@pytest.mark.parametrize("name", ["online", "online_fixed", "online_fixed_residual"])
def test_online_approaches_neyman_pearson_roc_as_shadows_grow(name):
    # Tolerance 0.01 + 0.5 / sqrt(M): the medians of M/2 scores err by ~1.25 s / sqrt(M/2), and
    # 10,000 members and non-members add ~0.01 of sampling noise to the empirical ROC.
    deviations = {}
    for m in (16, 64, 256):
        shadow, keep, target, member = gaussian_problem(m, 20_000, d=1.0, s=1.0, seed=0)
        fpr, tpr = metrics.roc(attack(name, shadow, keep, target), member)
        deviations[m] = np.abs(tpr_at(fpr, tpr, FPR_GRID) - neyman_pearson_tpr(FPR_GRID, 1.0)).max()
        assert deviations[m] <= 0.01 + 0.5 / math.sqrt(m), (name, m, deviations[m])
    assert deviations[256] < deviations[16]


def test_online_per_example_variance_is_optimal_when_stds_differ_per_example():
    # With per-example s_i the Neyman-Pearson test thresholds LLR_i = d (t - mu_i - d/2) / s_i^2;
    # its ROC is a mean over examples, swept here over the threshold c analytically.
    n, d = 20_000, 1.0
    s = np.exp(np.random.default_rng(1).uniform(math.log(0.3), math.log(3.0), n))
    shadow, keep, target, member = gaussian_problem(256, n, d, s, seed=2)
    # expectation over log s ~ U(log 0.3, log 3) by the midpoint rule (400 nodes), not over the sample
    edges = np.linspace(math.log(0.3), math.log(3.0), 401)
    nodes = np.exp(0.5 * (edges[1:] + edges[:-1]))
    c = np.linspace(-40, 40, 8001)[:, None]
    tpr_opt = norm.cdf((d / 2 - c * nodes**2 / d) / nodes).mean(axis=1)
    fpr_opt = norm.cdf((-d / 2 - c * nodes**2 / d) / nodes).mean(axis=1)
    order = np.argsort(fpr_opt)
    analytic = np.interp(FPR_GRID, fpr_opt[order], tpr_opt[order])

    stats = lira.fit_shadow_stats(shadow, keep)
    fpr, tpr = metrics.roc(lira.score_attack(stats, target, "online"), member)
    assert np.abs(tpr_at(fpr, tpr, FPR_GRID) - analytic).max() < 0.03
    # one shared std cannot weight the examples by 1/s_i^2: clearly worse at low FPR
    fpr_f, tpr_f = metrics.roc(lira.score_attack(stats, target, "online_fixed"), member)
    assert (tpr_at(fpr, tpr, FPR_GRID[:4]) - tpr_at(fpr_f, tpr_f, FPR_GRID[:4])).min() > 0.1


def test_fixed_and_per_example_variance_agree_with_one_shared_std():
    shadow, keep, target, member = gaussian_problem(256, 20_000, d=1.0, s=1.0, seed=3)
    stats = lira.fit_shadow_stats(shadow, keep)
    # the residual stds estimate the shared s (128 x 20,000 scores per side: within 1%)
    assert stats.sd_in_residual == pytest.approx(1.0, rel=0.01)
    assert stats.sd_out_residual == pytest.approx(1.0, rel=0.01)
    # the reference's fixed std also holds the spread of mu_i (std 3) between examples
    assert stats.sd_in_all == pytest.approx(math.sqrt(1 + 9), rel=0.05)
    auc = {name: metrics.attack_metrics(lira.score_attack(stats, target, name), member)["auc"]
           for name in ("online", "online_fixed", "online_fixed_residual")}
    assert max(auc.values()) - min(auc.values()) < 0.005, auc
    scores = lira.score_attacks(stats, target, ["online", "online_fixed_residual"])
    assert spearmanr(scores["online"], scores["online_fixed_residual"])[0] > 0.99


def test_offline_two_sided_and_one_sided_behave_as_named():
    rng = np.random.default_rng(4)
    n = 3
    keep = balanced_keep(rng, 64, n)
    shadow = rng.normal(size=(64, n, 1)) + 0.5 * keep[..., None]
    target = np.array([[-10.0], [0.0], [10.0]])  # very low, typical, very high
    for variance in ("", "_fixed"):
        two = attack(f"offline{variance}", shadow, keep, target)
        one = attack(f"offline_one_sided{variance}", shadow, keep, target)
        assert two[0] > two[1] and two[2] > two[1]     # a very low score looks like a member
        assert one[0] < one[1] < one[2]                # one-sided: only high scores do
        assert one[0] < -40                            # log P(Z <= -10) is about -53


# ---------------------------------------------------------------- agreement with the slow reference

def small_case(kind, seed):
    rng = np.random.default_rng(seed)
    n, q = 40, 3
    if kind == "balanced":
        m, keep = 8, balanced_keep(rng, 8, 40)
    elif kind == "balanced_odd":          # k_in = 3, k_out = 6: odd and even medians
        m, keep = 9, balanced_keep(rng, 9, 40, k_in=3)
    elif kind == "balanced_many":         # k = 48 / 49 of 97 shadows: a partition moves most of them
        m, keep = 97, balanced_keep(rng, 97, 40, k_in=48)
    else:                                 # Bernoulli masks: counts differ, truncation matters
        m = {"unbalanced_small": 7, "unbalanced": 12, "unbalanced_many": 200}[kind]
        keep = rng.random((m, n)) < 0.5
        keep[0], keep[1] = True, False    # at least one IN and one OUT per example
    mu = rng.normal(0, 2, n)
    shadow = mu[None, :, None] + keep[..., None] * 1.5 + rng.normal(size=(m, n, q))
    if seed % 2:                          # ties among the scores
        shadow = np.round(shadow, 1)
    target = mu[:, None] + rng.normal(size=(n, q))
    return shadow, keep, target


@pytest.mark.parametrize("kind", ["balanced", "balanced_odd", "unbalanced_small", "unbalanced", "balanced_many",
                                  "unbalanced_many"])
@pytest.mark.parametrize("seed", [0, 1])
def test_every_variant_matches_slow_reference(kind, seed, monkeypatch):
    monkeypatch.setattr(lira, "_BLOCK", 16)  # several blocks, the last one partial
    shadow, keep, target = small_case(kind, seed)
    stats = lira.fit_shadow_stats(shadow, keep)
    fast = lira.score_attacks(stats, target, list(lira.VARIANTS))
    for name in lira.VARIANTS:
        expected = slow_lira(name, shadow, keep, target)
        np.testing.assert_allclose(fast[name], expected, rtol=1e-9, atol=1e-9, err_msg=name)
        np.testing.assert_array_equal(attack(name, shadow, keep, target), fast[name], err_msg=name)


def test_every_attack_has_a_label_and_is_a_config_value():
    # every LiRA variant plus RMIA (dispatched by ptqlib.attacks.threat) has a label and is a valid config value
    from ptqlib.study.config import ATTACKS as CONFIG_ATTACKS
    assert set(lira.ATTACK_LABELS) == set(lira.VARIANTS) | {"rmia"} == set(CONFIG_ATTACKS)
    shadow, keep, target = small_case("unbalanced", 2)
    np.testing.assert_array_equal(lira.score_attacks(None, target, ["global"])["global"], target.mean(axis=1))


@pytest.mark.parametrize("exclude", [0, 5, [1, 6]])
def test_excluding_models_equals_slicing_them_away(exclude, monkeypatch):
    # leave-one-out: the target's own scores must never be among its shadows
    monkeypatch.setattr(lira, "_BLOCK", 16)
    shadow, keep, target = small_case("balanced", 3)
    others = np.setdiff1d(np.arange(len(shadow)), exclude)
    with_exclude = lira.score_attacks(lira.fit_shadow_stats(shadow, keep, exclude=exclude), target, list(lira.VARIANTS))
    for name in lira.VARIANTS:
        np.testing.assert_allclose(with_exclude[name], slow_lira(name, shadow[others], keep[others], target),
                                   rtol=1e-9, atol=1e-9, err_msg=name)


def test_reference_split_in_out_truncates_in_model_order():
    keep = np.array([[1, 0], [0, 1], [1, 1], [1, 0], [0, 0]], dtype=bool)  # IN counts 3 and 2
    shadow = np.arange(10, dtype=float).reshape(5, 2, 1)                    # score = 2 * model + example
    dat_in, dat_out = split_in_out(shadow, keep)
    np.testing.assert_array_equal(dat_in[..., 0], [[0, 3], [4, 5]])      # models (0, 2) and (1, 2)
    np.testing.assert_array_equal(dat_out[..., 0], [[2, 1], [8, 7]])     # models (1, 4) and (0, 3)


def test_errors_say_what_is_wrong():
    keep = np.ones((4, 3), dtype=bool)
    keep[:2, 1] = False
    with pytest.raises(ValueError, match="example 0"):
        lira.fit_shadow_stats(np.zeros((4, 3, 1)), keep)
    shadow, keep, target = small_case("balanced", 0)
    stats = lira.fit_shadow_stats(shadow, keep)
    with pytest.raises(ValueError, match=r"\(N, Q\)"):
        lira.score_attacks(stats, target[:, :2])
    with pytest.raises(ValueError, match="unknown attack"):
        lira.score_attack(stats, target, "onlin")


# ---------------------------------------------------------------- the score itself

def direct_phi(z, y):
    """log(p_y / sum_{j != y} p_j) with a float64 softmax, one example at a time."""
    z = np.asarray(z, dtype=np.float64)
    p = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
    return math.log(p[y]) - math.log(sum(p[j] for j in range(len(z)) if j != y))


def test_logit_scores_match_direct_softmax():
    rng = np.random.default_rng(5)
    logits = (rng.normal(size=(3, 6, 2, 10)) * 4).astype(np.float32)   # (M, N, Q, C)
    labels = rng.integers(0, 10, 6)
    phi = lira.logit_scores(logits, labels)
    assert phi.shape == (3, 6, 2) and phi.dtype == np.float64
    for i, j, a in np.ndindex(phi.shape):
        assert phi[i, j, a] == pytest.approx(direct_phi(logits[i, j, a], labels[j]), rel=1e-10, abs=1e-10)
    np.testing.assert_array_equal(lira.logit_scores(logits[0], labels), phi[0])  # (N, Q, C) works too


def test_logit_scores_stay_exact_for_extreme_logits():
    # where the direct softmax underflows (p_rest = 0) the score stays finite and exact: no floor
    logits = np.array([[[1000.0, 0.0, -1000.0]], [[1000.0, 0.0, -1000.0]], [[30.0, 30.0, 30.0]]])
    labels = np.array([0, 2, 1])
    phi = lira.logit_scores(logits, labels)[:, 0]
    assert phi[0] == pytest.approx(1000.0 - math.log1p(math.exp(-1000.0)), rel=1e-15)
    assert phi[1] == pytest.approx(-2000.0, rel=1e-15)
    assert phi[2] == pytest.approx(-math.log(2.0), rel=1e-12)
    moderate = np.array([[[12.0, -8.0, 3.5, 0.25]]])
    assert lira.logit_scores(moderate, np.array([2]))[0, 0] == pytest.approx(direct_phi(moderate[0, 0], 2), rel=1e-12)
