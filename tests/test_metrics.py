"""Attack metrics on hand-built ROCs and tiny hand-computed cases."""
import numpy as np
import pytest

from ptqlib.results import metrics


def test_tpr_at_fpr_uses_strictly_lower_fprs_only():
    fpr = np.array([0.0, 0.0005, 0.001, 0.002, 1.0])
    tpr = np.array([0.0, 0.1, 0.2, 0.3, 1.0])
    assert metrics.tpr_at_fpr(fpr, tpr, 0.001) == 0.1        # the point at exactly 0.001 is not used
    assert metrics.tpr_at_fpr(fpr, tpr, 0.0011) == 0.2
    assert metrics.tpr_at_fpr(fpr, tpr, 0.0005) == 0.0       # only FPR 0 lies strictly below
    assert metrics.tpr_at_fpr(np.array([0.01, 1.0]), np.array([0.5, 1.0]), 0.001) == 0.0  # no point below


def test_strict_rule_through_attack_metrics():
    # 1,000 non-members score 0..999; 5 members above all of them, 5 between the top two.
    # The ROC reaches TPR 1 at FPR exactly 0.001: the strict rule must report 0.5.
    nonmembers = np.arange(1000.0)
    scores = np.concatenate([nonmembers, np.full(5, 2000.0), np.full(5, 998.5)])
    member = np.r_[np.zeros(1000, bool), np.ones(10, bool)]
    m = metrics.attack_metrics(scores, member)
    assert m["tpr@0.001"] == 0.5
    assert m["tpr@0.01"] == 1.0
    assert (m["n_members"], m["n_nonmembers"]) == (10, 1000)


def test_auc_and_balanced_accuracy_on_a_tiny_case():
    # members 0.9, 0.8, 0.6; non-members 0.7, 0.5: 5 of 6 pairs ordered -> AUC 5/6.
    # Thresholds: >= 0.8 gives TPR 2/3, FPR 0 -> 1 - (0 + 1/3) / 2 = 5/6, the best.
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5])
    member = np.array([1, 1, 0, 1, 0], bool)
    m = metrics.attack_metrics(scores, member)
    assert m["auc"] == pytest.approx(5 / 6)
    assert m["balanced_acc"] == pytest.approx(5 / 6)
    # members 4, 1; non-members 3, 2: AUC 2/4; best split is >= 4 (TPR 1/2, FPR 0) -> 3/4
    m = metrics.attack_metrics(np.array([4.0, 3.0, 2.0, 1.0]), np.array([1, 0, 0, 1], bool))
    assert m["auc"] == pytest.approx(0.5)
    assert m["balanced_acc"] == pytest.approx(0.75)


def test_ties_count_half_and_inverted_scores_give_auc_zero():
    assert metrics.attack_metrics(np.array([1.0, 1.0]), np.array([1, 0], bool))["auc"] == pytest.approx(0.5)
    m = metrics.attack_metrics(np.array([0.0, 1.0, 2.0]), np.array([1, 0, 0], bool))
    assert m["auc"] == pytest.approx(0.0)
    assert m["balanced_acc"] == pytest.approx(0.5)   # thresholds at +/- infinity keep chance level


def test_too_few_nonmembers():
    assert not metrics.too_few_nonmembers(10_000, 0.001)    # exactly 10 expected false positives
    assert metrics.too_few_nonmembers(9_999, 0.001)
    assert metrics.too_few_nonmembers(449, 0.01)             # the digits default has ~450 per target
    assert not metrics.too_few_nonmembers(1_000, 0.01)


@pytest.mark.parametrize("seed", range(12))
def test_low_fpr_tprs_equals_the_full_roc_bit_for_bit(seed):
    """The bootstrap's fast path against attack_metrics (sklearn's full ROC), on sizes where x * n_out is an
    integer (the float boundary), heavy ties, members tied with nonmembers, and tiny pools."""
    rng = np.random.default_rng(seed)
    n = [1000, 48000, 2000, 7, 100, 3001][seed % 6]
    members = rng.random(n) < [0.5, 0.5, 0.1, 0.5, 0.9, 0.5][seed % 6]
    members[:2] = [True, False]  # both classes present
    scores = rng.normal(size=n) + members
    if seed % 2:
        scores = np.round(scores, 1)  # ties everywhere
    fast = metrics.low_fpr_tprs(scores, members, fprs=(0.001, 0.01, 0.1, 0.5, 1.0, 1.5))
    fpr, tpr = metrics.roc(scores, members)
    for x, value in fast.items():
        assert value == metrics.tpr_at_fpr(fpr, tpr, float(x[4:])), (n, x)
    full = metrics.attack_metrics(scores, members)
    assert all(fast[f"tpr@{x:g}"] == full[f"tpr@{x:g}"] for x in metrics.LOW_FPRS)
