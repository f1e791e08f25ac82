import numpy as np
import pytest

from ptqlib.attacks import lira
from ptqlib.attacks import threat

from reference_lira import slow_lira


def _pool(m=8, n=300, q=2, seed=0):
    rng = np.random.default_rng(seed)
    keep = np.zeros((m, n), dtype=bool)
    for j in range(n):
        keep[rng.permutation(m)[: m // 2], j] = True
    mu = rng.normal(0, 2, n)
    scores = mu[None, :, None] + 1.5 * keep[..., None] + rng.normal(0, 1, (m, n, q))
    test = rng.normal(0, 2, (m, 50, q))
    return threat.ShadowPool(scores, keep, test)


def test_leave_one_out_never_uses_the_target_as_its_own_shadow(monkeypatch):
    pool = _pool()
    seen = []
    real = lira.fit_shadow_stats

    def spy(scores, keep, exclude=None):
        seen.append(exclude)
        return real(scores, keep, exclude=exclude)

    monkeypatch.setattr(lira, "fit_shadow_stats", spy)
    attacks = ["online", "online_fixed", "offline", "global", "rmia"]
    results = dict(threat.leave_one_out(pool, attacks))
    assert seen == list(range(len(pool.scores)))  # one fit per target, always excluding it
    monkeypatch.setattr(lira, "fit_shadow_stats", real)
    for j, by_attack in results.items():
        others = np.arange(len(pool.scores)) != j
        explicit = threat.attack_target(
            threat.ShadowPool(pool.scores[others], pool.keep[others], pool.test_scores[others]),
            pool.scores[j], attacks, pool.test_scores[j])
        for a in attacks:
            np.testing.assert_allclose(by_attack[a], explicit[a], rtol=0, atol=1e-12)


def test_attack_target_matches_the_slow_reference():
    pool = _pool(n=60, seed=1)
    target = pool.scores[0] + 0.1
    got = threat.attack_target(pool, target, ["online", "offline_fixed", "global"])
    for a in got:
        np.testing.assert_allclose(got[a], slow_lira(a, pool.scores, pool.keep, target), rtol=1e-9, atol=1e-9)


def test_rmia_needs_a_population():
    pool = _pool()
    pool.test_scores = None
    with pytest.raises(ValueError, match="held-out split"):
        threat.attack_target(pool, pool.scores[0], ["rmia"])


@pytest.mark.slow
def test_matched_equals_fp_shadows_at_8_bits(tmp_path):
    """8-bit RTN barely changes a model, so quantizing the shadows too must change almost nothing."""
    from ptqlib.study import stages as pipeline
    from ptqlib.study.config import validate

    cfg = validate(dict(num_targets=2, num_shadows=8, epochs=8, bits=[8], last_layer_bits=[None], threads=1,
                        attacks=["online", "online_fixed", "global"], store=str(tmp_path / "store"),
                        threat_models=["fp_shadows", "matched_shadows", "leave_one_out"]))
    df = pipeline.run_all(cfg)
    q = df[df["method"] == "rtn"].set_index(["target", "attack", "threat_model"])
    for target in range(cfg.num_targets):
        for attack in cfg.attacks:
            fp, matched = q.loc[(target, attack, "fp_shadows")], q.loc[(target, attack, "matched_shadows")]
            assert abs(fp["auc"] - matched["auc"]) < 0.005  # tolerance: 0.5 AUC points
            assert abs(fp["tpr@0.01"] - matched["tpr@0.01"]) < 0.01
    loo = df[df["threat_model"] == "leave_one_out"]
    assert sorted(loo["target"].unique()) == list(range(8))  # every pool model is a target once


def test_leave_one_out_fp_equals_attacking_with_a_pool_that_lacks_the_source():
    fp = _pool(seed=2)
    rng = np.random.default_rng(3)  # "quantized" models: the FP scores moved, same membership
    quantized = threat.ShadowPool(fp.scores[[1, 4]] + rng.normal(0, 0.5, fp.scores[[1, 4]].shape),
                                  fp.keep[[1, 4]], fp.test_scores[[1, 4]] + 0.1)
    attacks = ["online", "offline", "global", "rmia"]
    got = dict(threat.leave_one_out_fp(fp, quantized, [1, 4], attacks))
    assert sorted(got) == [0, 1]
    for k, i in enumerate([1, 4]):
        others = np.arange(len(fp.scores)) != i
        lacking = threat.ShadowPool(fp.scores[others], fp.keep[others], fp.test_scores[others])
        explicit = threat.attack_target(lacking, quantized.scores[k], attacks, quantized.test_scores[k])
        for a in attacks:
            np.testing.assert_allclose(got[k][a], explicit[a], rtol=0, atol=1e-12)
    # the wrong source left out gives different scores: the index matters
    wrong = dict(threat.leave_one_out_fp(fp, quantized, [0, 4], ["online"]))
    assert not np.allclose(wrong[0]["online"], got[0]["online"])


def test_leave_one_out_fp_rejects_bad_indices():
    fp = _pool()
    with pytest.raises(ValueError, match="source index 9"):
        list(threat.leave_one_out_fp(fp, fp, list(range(7)) + [9], ["online"]))
    with pytest.raises(ValueError, match="2 source indices"):
        list(threat.leave_one_out_fp(fp, fp, [0, 1], ["online"]))
