"""The canary audit (mislabeled pool examples) and the both-models attacker (FP32 + quantized release)."""
import warnings

import numpy as np
import pytest
import torch
from scipy.stats import multivariate_normal

from ptqlib.results import canaries
from ptqlib.attacks import lira
from ptqlib.results import metrics
from ptqlib.study import stages as pipeline
from ptqlib.attacks import threat
from ptqlib.errors import ConfigError
from ptqlib.study.config import validate
from ptqlib.data.masks import balanced_masks, paired_mask
from ptqlib.data.canaries import canary_index, insert_canaries
from ptqlib.data.images import load_dataset
from ptqlib.study.jobs import DataSpec, load_data
from ptqlib.study.plan import data_spec, plan_study
from ptqlib.runtime.store import Store


# ---------------------------------------------------------------- canaries in the data

@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def test_mislabel_canaries_change_only_their_labels_and_always_to_another_class(digits):
    data = insert_canaries(digits, 200, "mislabel", seed=3)
    idx = data.canaries
    assert len(idx) == 200 and len(np.unique(idx)) == 200 and np.all(np.diff(idx) > 0)
    assert (data.y_train[idx] != digits.y_train[idx]).all()  # every canary is mislabeled
    rest = np.setdiff1d(np.arange(len(digits.y_train)), idx)
    assert torch.equal(data.y_train[rest], digits.y_train[rest])
    assert torch.equal(data.x_train, digits.x_train) and torch.equal(data.y_test, digits.y_test)
    assert int(data.y_train.min()) >= 0 and int(data.y_train.max()) < data.num_classes
    # the new classes are spread over the other classes, not a fixed shift
    assert len(np.unique(((data.y_train[idx] - digits.y_train[idx]) % 10).numpy())) == 9
    # drawn from the seed: the same seed gives the same canaries, another seed others
    again = insert_canaries(digits, 200, "mislabel", seed=3)
    assert np.array_equal(again.canaries, idx) and torch.equal(again.y_train, data.y_train)
    assert not np.array_equal(insert_canaries(digits, 200, "mislabel", seed=4).canaries, idx)
    # a larger count keeps every canary of a smaller one
    assert set(canary_index(3, 50, len(digits.y_train))) <= set(idx)


def test_noise_canaries_replace_images_only_at_the_canaries(digits):
    data = insert_canaries(digits, 30, "noise", seed=0)
    idx = data.canaries
    rest = np.setdiff1d(np.arange(len(digits.y_train)), idx)
    assert torch.equal(data.x_train[rest], digits.x_train[rest])
    assert torch.equal(data.y_train[rest], digits.y_train[rest])
    assert not torch.equal(data.x_train[idx], digits.x_train[idx])
    assert data.x_train.dtype == torch.uint8 and float(data.x_train[idx].float().std()) > 50  # uniform noise


def test_zero_canaries_is_the_data_as_read(digits):
    assert insert_canaries(digits, 0, "mislabel", seed=1) is digits
    assert load_dataset("digits").canaries.size == 0


def test_canaries_are_balanced_like_every_pool_example():
    n, m = 1347, 16
    idx = canary_index(0, 100, n)
    assert (balanced_masks(0, m, n)[:, idx].sum(axis=0) == m // 2).all()
    paired = np.stack([paired_mask(0, j, n) for j in range(m)])
    assert (paired[:, idx].sum(axis=0) == m // 2).all()
    # the shadows' own masks, as the planned jobs derive them
    cfg = validate({"canaries": 100, "num_shadows": m, "num_targets": 8})
    keep = np.stack([s.members(n) for s in plan_study(cfg).shadows])
    assert (keep[:, idx].sum(axis=0) == m // 2).all()
    targets = np.stack([t.members(n) for t in plan_study(cfg).targets])
    assert 0.4 < targets[:, idx].mean() < 0.6  # each target: a random half


def test_every_stage_reads_the_canary_labels_through_the_data_spec(tmp_path):
    """One way in: the job's DataSpec loads the canaried labels (training, calibration, queries and the
    attack all call `jobs.load_data`), and the pipeline's dataset is the same one."""
    cfg = validate({"canaries": 40, "seed": 5, "store": str(tmp_path)})
    spec = plan_study(cfg).targets[0].data
    assert (spec.canaries, spec.canary_kind, spec.canary_seed) == (40, "mislabel", 5)
    store = Store(cfg.store_path)
    data = load_data(spec, store)
    expected = insert_canaries(load_dataset("digits"), 40, "mislabel", seed=5)
    assert np.array_equal(data.canaries, expected.canaries) and torch.equal(data.y_train, expected.y_train)
    assert pipeline.dataset(cfg, store) is data
    assert torch.equal(load_data(data_spec(cfg), store).y_train, expected.y_train)  # the study path: the same data


# ---------------------------------------------------------------- job keys

def _keys(cfg):
    return [j.key for jobs in plan_study(cfg).stages.values() for j in jobs]


def test_canaries_off_leaves_every_job_key_as_it_was():
    base = validate({"dp_noise": [1.0], "threat_models": ["fp_shadows", "matched_shadows"]})
    off = validate({"dp_noise": [1.0], "threat_models": ["fp_shadows", "matched_shadows"], "canaries": 0,
                    "canary_kind": "noise"})
    assert _keys(base) == _keys(off)
    # the data identity is exactly the one it was before canaries existed
    assert plan_study(base).targets[0].params["data"] == {"dataset": "digits", "test_fraction": 0.25}
    assert plan_study(off).targets[0].data == plan_study(base).targets[0].data
    on = validate({"dp_noise": [1.0], "threat_models": ["fp_shadows", "matched_shadows"], "canaries": 10})
    keys_on = set(_keys(on))
    assert not keys_on & set(_keys(base))  # every job reads the canaried data, directly or through its inputs
    kinds = validate({"canaries": 10, "canary_kind": "noise"})
    assert plan_study(kinds).targets[0].key != plan_study(validate({"canaries": 10})).targets[0].key


def test_the_spec_identity_names_the_canaries_only_when_there_are_some():
    spec = DataSpec("digits", "data", 0.25, 0, 0, 0)
    assert spec.identity() == {"dataset": "digits", "test_fraction": 0.25}
    on = DataSpec("digits", "data", 0.25, 0, 0, 0, canaries=5, canary_kind="noise", canary_seed=2)
    assert on.identity() == {"dataset": "digits", "test_fraction": 0.25, "canaries": 5, "canary_kind": "noise",
                             "canary_seed": 2}


def test_both_models_plans_quantized_shadows_and_adds_no_job_to_the_default():
    cfg = validate({"threat_models": ["fp_shadows", "both_models"], "methods": ["rtn"], "bits": [2],
                    "last_layer_bits": [None], "num_targets": 2, "num_shadows": 4})
    p = plan_study(cfg)
    assert len(p.quantized_shadows) == 4 and p.attack.threat_models == ("fp_shadows", "both_models")
    plain = plan_study(validate({"methods": ["rtn"], "bits": [2], "last_layer_bits": [None], "num_targets": 2,
                           "num_shadows": 4}))
    assert plain.quantized_shadows == () and [j.key for j in plain.targets] == [j.key for j in p.targets]


# ---------------------------------------------------------------- config errors name the key

@pytest.mark.parametrize("raw,message", [
    ({"canaries": -1}, "canaries: -1 must be >= 0"),
    ({"canaries": 700}, "canaries: 700 is more than half the training pool (1347 examples on digits)"),
    ({"canaries": "ten"}, "canaries: expected an integer"),
    ({"canary_kind": "flip"}, "canary_kind: 'flip' is not one of ['mislabel', 'noise']"),
    ({"threat_models": ["both_model"]}, "threat_models: 'both_model' is not one of"),
    ({"threat_models": ["both_models"], "attacks": ["global", "rmia"]},
     "threat_models: both_models scores only the attacks ['online', 'online_fixed', 'offline', 'offline_fixed']"),
])
def test_bad_canary_and_both_models_keys_name_the_key(raw, message):
    with pytest.raises(ConfigError) as err:
        validate(raw)
    assert str(err.value).startswith(message.split(":")[0] + ":") and message in str(err.value)


def test_config_and_data_agree_on_the_canary_kinds():
    from ptqlib.study import config
    from ptqlib.data import canaries as data
    assert config.RULES["canary_kind"]["choices"] == data.CANARY_KINDS
    assert config._PAIR_ATTACKS == tuple(threat.BOTH_MODELS_ATTACKS)


# ---------------------------------------------------------------- the both-models attack

def _planted(signal: str, m=32, n=4000, seed=0, delta=1.0, shared=3.0):
    """Shadows and one target, each a (FP, quantized) pair of scores per example (Q = 1).

    Every model has a large noise c shared by its FP and quantized scores (the quantized model is a
    copy of the FP one). difference: a member's quantized score drops by delta (quantization removed
    what the model memorised): FP alone sees nothing, quantized alone sees delta against the shared
    noise, the difference sees delta against small noise only. split: +delta on both scores, with
    the shared noise of opposite sign in the two, so only their sum is sharp.
    """
    rng = np.random.default_rng(seed)
    keep = np.vstack([balanced_masks(seed, m, n), rng.random(n) < 0.5])  # model m is the target
    base = rng.normal(0, 2, n)
    c = rng.normal(0, shared, (m + 1, n))
    e = rng.normal(0, 0.3, (2, m + 1, n))
    if signal == "difference":
        fp = base + c + e[0]
        q = base + c - delta * keep + e[1]
    else:
        fp = base + c + delta * keep + e[0]
        q = base - c + delta * keep + e[1]
    return fp[:m, :, None], q[:m, :, None], keep[:m], fp[m][:, None], q[m][:, None], keep[m]


@pytest.mark.parametrize("signal", ["difference", "split"])
def test_both_models_beats_either_model_alone_on_a_planted_signal(signal):
    fp, q, keep, t_fp, t_q, members = _planted(signal)
    alone = {}
    for name, shadows, target in (("fp", fp, t_fp), ("quantized", q, t_q)):
        scores = threat.attack_target(threat.ShadowPool(shadows, keep), target, ["online"])["online"]
        alone[name] = metrics.attack_metrics(scores, members)
    pair = threat.attack_both_models(threat.fit_pair_stats(fp, q, keep), t_fp, t_q, ["online", "online_fixed",
                                                                                     "global"])
    assert set(pair) == {"online", "online_fixed"}  # global has no pair form
    for attack, scores in pair.items():
        both = metrics.attack_metrics(scores, members)
        best = max(a["auc"] for a in alone.values())
        assert both["auc"] > best + 0.15, (attack, both["auc"], alone)
        assert both["tpr@0.01"] > 3 * max(a["tpr@0.01"] for a in alone.values()) and both["tpr@0.01"] > 0.1
    if signal == "difference":
        assert abs(alone["fp"]["auc"] - 0.5) < 0.05  # no signal in the FP scores at all


def _slow_pair_lira(fp, q, keep, t_fp, t_q, ridge, online=True, fixed=False):
    """Example by example with scipy: medians as centres, covariances about the mean (ddof 0) plus ridge."""
    m, n, nq = fp.shape
    x = np.stack([fp, q], axis=-1)
    centres, covs, pooled = {}, {}, {}
    for side, use in (("in", keep), ("out", ~keep)):
        k = int(use.sum(axis=0).min())
        chosen = [np.flatnonzero(use[:, j])[:k] for j in range(n)]
        centres[side] = np.array([[np.median(x[chosen[j], j, t], axis=0) for t in range(nq)] for j in range(n)])
        covs[side] = np.array([[np.cov(x[chosen[j], j, t].T, bias=True) for t in range(nq)] for j in range(n)])
        res = np.concatenate([x[chosen[j], j, t] - centres[side][j, t] for j in range(n) for t in range(nq)])
        pooled[side] = res.T @ res / len(res)
    reg = lambda c: c + (ridge * np.trace(c) / 2 + 1e-30) * np.eye(2)  # noqa: E731
    out = np.zeros(n)
    for j in range(n):
        for t in range(nq):
            point = [t_fp[j, t], t_q[j, t]]
            cov_in = reg(pooled["in"] if fixed else covs["in"][j, t])
            cov_out = reg(pooled["out"] if fixed else covs["out"][j, t])
            s = -multivariate_normal(centres["out"][j, t], cov_out).logpdf(point)
            if online:
                s += multivariate_normal(centres["in"][j, t], cov_in).logpdf(point)
            out[j] += s / nq
    return out


@pytest.mark.parametrize("attack", list(threat.BOTH_MODELS_ATTACKS))
def test_pair_lira_matches_a_slow_scipy_reference(attack):
    rng = np.random.default_rng(1)
    m, n, nq = 9, 40, 2  # odd M: unequal IN / OUT counts exercise the truncation to the first k
    keep = rng.random((m, n)) < 0.5
    keep[:2], keep[2:4] = True, False  # at least two IN and two OUT shadows everywhere
    fp = rng.normal(0, 1, (m, n, nq)) + keep[..., None]
    q = 0.7 * fp + rng.normal(0, 0.5, (m, n, nq))
    t_fp, t_q = rng.normal(0.5, 1, (n, nq)), rng.normal(0.3, 1, (n, nq))
    kind, variance = threat.BOTH_MODELS_ATTACKS[attack]
    got = threat.score_pair(threat.fit_pair_stats(fp, q, keep, ridge=0.05), t_fp, t_q, attack)
    want = _slow_pair_lira(fp, q, keep, t_fp, t_q, 0.05, online=kind == "online", fixed=variance == "fixed")
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-9)


def test_pair_statistics_have_lira_marginals():
    fp, q, keep, *_ = _planted("split", m=8, n=50)
    st = threat.fit_pair_stats(fp, q, keep, ridge=0.0)
    for coord, scores in ((0, fp), (1, q)):
        one = lira.fit_shadow_stats(scores, keep)
        np.testing.assert_allclose(st.mu_in[..., coord], one.mu_in)
        np.testing.assert_allclose(np.sqrt(st.cov_out[..., coord, coord]), one.sd_out, rtol=1e-12)


def test_pair_attack_rejects_mismatched_shapes():
    fp, q, keep, t_fp, t_q, _ = _planted("split", m=8, n=50)
    with pytest.raises(ValueError, match="both_models"):
        threat.fit_pair_stats(fp, q[:, :40], keep)
    with pytest.raises(ValueError, match="both_models"):
        threat.score_pair(threat.fit_pair_stats(fp, q, keep), t_fp[:40], t_q[:40], "online")


# ---------------------------------------------------------------- the analysis tables

def _results(labels_scores, members, targets=4):
    """A stored-results stand-in: one row per (threat model, label, target), its scores and membership."""
    import pandas as pd
    rows, scores, keep = [], [], []
    for (threat_model, label, method), per_target in labels_scores.items():
        for k in range(targets):
            rows.append({"threat_model": threat_model, "label": label, "method": method, "bits": 32 if
                         method in ("fp32", "dp") else 2, "attack": "online", "target": k, "test_acc": 0.9,
                         **metrics.attack_metrics(per_target[k], members[k])})
            scores.append(per_target[k])
            keep.append(members[k])
    return pd.DataFrame(rows), {"scores": np.stack(scores), "members": np.stack(keep)}


def test_canary_table_scores_the_canaries_alone():
    rng = np.random.default_rng(0)
    n, targets = 400, 4
    canary = np.arange(0, n, 10)  # 40 canaries
    members = rng.random((targets, n)) < 0.5
    noise = rng.normal(0, 1, (targets, n))
    loud = noise + 6.0 * members * np.isin(np.arange(n), canary)  # only the canaries leak: perfectly
    results, arrays = _results({("fp_shadows", "fp32", "fp32"): loud, ("fp_shadows", "rtn 2b", "rtn"): noise},
                               members, targets)
    table = canaries.canary_table(results, arrays, canary, n_boot=50).set_index("label")
    assert table.loc["fp32", "canary_auc"] > 0.99 and table.loc["fp32", "canary_tpr@0.01"] > 0.9
    assert abs(table.loc["fp32", "rest_auc"] - 0.5) < 0.1  # the rest of the pool: chance
    assert table.loc["rtn 2b", "canary_tpr@0.01"] < 0.3
    assert table.loc["fp32", "canary_members"] + table.loc["fp32", "canary_nonmembers"] == targets * len(canary)
    assert bool(table.loc["fp32", "canary_thin"])  # 80-ish pooled non-members cannot resolve 1% FPR
    lo, hi = table.loc["rtn 2b", ["canary_tpr@0.01_ci_low", "canary_tpr@0.01_ci_high"]]
    assert lo <= table.loc["rtn 2b", "canary_tpr@0.01"] <= hi
    with pytest.raises(ValueError, match="canaries: n"):
        canaries.canary_table(results, arrays, np.array([], dtype=int))


def test_matched_accuracy_pairs_each_defence_with_the_closest_recipe():
    import pandas as pd
    table = pd.DataFrame({"threat_model": ["matched_shadows"] * 4, "family": ["ptq", "ptq", "dp", "fp32"],
                          "label": ["rtn 4b", "rtn 2b", "dp-sgd sigma 1", "fp32"], "test_acc": [0.99, 0.94, 0.93, 0.99],
                          "canary_tpr@0.01": [0.8, 0.2, 0.05, 0.9], "epsilon": [np.nan, np.nan, 6.0, np.nan]})
    out = canaries.matched_accuracy(table)
    assert list(out["recipe"]) == ["rtn 2b"] and out["defence_minus_recipe"].iloc[0] == pytest.approx(-0.15)


def test_both_models_table_reads_pair_against_fp32_alone():
    rng = np.random.default_rng(2)
    n, targets = 500, 6
    members = rng.random((targets, n)) < 0.5
    weak = rng.normal(0, 1, (targets, n)) + 0.3 * members
    strong = rng.normal(0, 1, (targets, n)) + 3.0 * members
    results, arrays = _results({("both_models", "fp32", "fp32"): weak, ("both_models", "rtn 2b", "rtn"): strong,
                                ("matched_shadows", "rtn 2b", "rtn"): weak}, members, targets)
    row = canaries.both_models_table(results, arrays, n_boot=50).iloc[0]
    assert row["label"] == "rtn 2b" and row["both_tpr@0.01"] > 0.5 > row["fp32_tpr@0.01"]
    assert row["tpr@0.01_diff"] == pytest.approx(row["both_tpr@0.01"] - row["fp32_tpr@0.01"])
    assert 0 < row["tpr@0.01_diff_ci_low"] <= row["tpr@0.01_diff"] <= row["tpr@0.01_diff_ci_high"]
    assert row["quantized_auc"] == pytest.approx(row["fp32_auc"])  # the same scores, stored twice
    with pytest.raises(ValueError, match="add both_models"):
        canaries.both_models_table(results[results["threat_model"] != "both_models"], arrays)


# ---------------------------------------------------------------- end to end on a tiny study

@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    cfg = validate(dict(num_targets=2, num_shadows=4, epochs=3, methods=["rtn"], bits=[2], last_layer_bits=[None],
                        canaries=40, executor="serial", attacks=["online", "global"],
                        threat_models=["fp_shadows", "matched_shadows", "both_models"],
                        store=str(tmp_path_factory.mktemp("store"))))
    store = Store(cfg.store_path)
    pipeline.run_all(cfg, store)
    return (cfg, store, *pipeline.load_attack_results(cfg, store))


def test_the_attack_stage_scores_both_models_from_the_stored_queries(tiny):
    cfg, store, results, arrays = tiny
    pair_rows = results[results["threat_model"] == "both_models"]
    assert set(pair_rows["attack"]) == {"online"}  # global has no pair form
    assert set(pair_rows["label"]) == {"fp32", "rtn 2b"}
    # the FP32 row of both_models is the FP32 model alone against FP shadows
    fp = results[(results["label"] == "fp32") & (results["attack"] == "online")]
    a = fp[fp["threat_model"] == "both_models"].sort_values("target").index
    b = fp[fp["threat_model"] == "fp_shadows"].sort_values("target").index
    np.testing.assert_array_equal(arrays["scores"][a], arrays["scores"][b])
    # the pair's scores, recomputed by hand from the stored queries (with the canary labels)
    p = plan_study(cfg)
    labels = pipeline.dataset(cfg, store).y_train.numpy()
    shadows = [q for q in p.queries if q.train_job.role == "shadow"]
    fp_sh = np.stack([q.scores(store, labels) for q in shadows if q.label == "fp32"])
    q_sh = np.stack([q.scores(store, labels) for q in shadows if q.label == "rtn 2b"])
    keep = np.stack([s.members(len(labels)) for s in p.shadows])
    stats = threat.fit_pair_stats(fp_sh, q_sh, keep)
    targets = [q for q in p.queries if q.train_job.role == "target"]
    row = pair_rows[(pair_rows["label"] == "rtn 2b") & (pair_rows["target"] == 1)].index[0]
    t_fp = next(q for q in targets if q.label == "fp32" and q.train_job.index == 1).scores(store, labels)
    t_q = next(q for q in targets if q.label == "rtn 2b" and q.train_job.index == 1).scores(store, labels)
    np.testing.assert_allclose(arrays["scores"][row], threat.score_pair(stats, t_fp, t_q, "online"))


def test_the_tables_build_from_a_tiny_canary_study(tiny):
    cfg, store, results, arrays = tiny
    data = pipeline.dataset(cfg, store)
    assert len(data.canaries) == 40
    table = canaries.canary_table(results, arrays, data.canaries, n_boot=5)
    assert set(table["label"]) == {"fp32", "rtn 2b"} and set(table["threat_model"]) == {"fp_shadows", "matched_shadows"}
    assert (table["canary_members"] + table["canary_nonmembers"] == 2 * 40).all()
    pair = canaries.both_models_table(results, arrays, subset=data.canaries, n_boot=5)
    assert list(pair["label"]) == ["rtn 2b"] and pair["n_nonmembers"].iloc[0] == table["canary_nonmembers"].iloc[0]


def test_resampled_metrics_equal_the_pooled_roc_of_each_resample():
    rng = np.random.default_rng(4)
    t, n = 5, 300
    members = rng.random((t, n)) < 0.5
    scores = np.round(rng.normal(0, 1, (t, n)) + 0.8 * members, 1)  # rounded: many ties
    picks = rng.integers(0, t, size=(40, t))
    got = canaries.resampled_metrics(scores, members, picks)
    canaries._CELLS = 3 * t * n  # several blocks of resamples give the same numbers
    try:
        blocked = canaries.resampled_metrics(scores, members, picks)
    finally:
        canaries._CELLS = 4_000_000
    from ptqlib.results import stats
    for k, p in enumerate(picks):
        want = stats.pooled_metrics(scores[p], members[p])
        for m in canaries.METRICS:
            assert got[m][k] == pytest.approx(want[m], abs=1e-12), (m, k)
            assert blocked[m][k] == got[m][k]
