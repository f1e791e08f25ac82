import numpy as np
import pandas as pd
import pytest

from ptqlib.results import metrics, resolved, tables


def test_interval_status_disjoint_is_resolved_overlap_is_indicative():
    assert resolved.interval_status(0.01, 0.02, 0.03, 0.05) == "resolved"
    assert resolved.interval_status(0.03, 0.05, 0.01, 0.02) == "resolved"
    assert resolved.interval_status(0.01, 0.03, 0.02, 0.05) == "indicative"
    assert resolved.interval_status(0.01, 0.02, 0.02, 0.05) == "indicative"  # touching: not disjoint
    with pytest.raises(ValueError, match="empty"):
        resolved.interval_status(0.2, 0.1, 0.0, 0.1)


def _targets(rng, shift, n_targets=6, n=4000):  # 12,000 pooled non-members: 0.1% FPR resolvable
    """Per target: member scores shifted by `shift` above the non-members'."""
    scores, members = [], []
    for _ in range(n_targets):
        m = rng.random(n) < 0.5
        scores.append(rng.normal(0, 1, n) + shift * m)
        members.append(m)
    return scores, members


def test_versus_fp32_on_a_known_case_of_each():
    rng = np.random.default_rng(0)
    groups = {"fp32": 3.0, "strong change": 0.3, "tiny change": 2.97}  # FP32 leaks most
    rows, scores, members = [], [], []
    for label, shift in groups.items():
        s, m = _targets(rng, shift)
        for k in range(len(s)):
            rows.append({"threat_model": "fp_shadows", "target": k, "label": label, "method": label,
                         "bits": 32, "last_layer_bits": None, "attack": "online", "test_acc": 0.5,
                         **metrics.attack_metrics(s[k], m[k])})
        scores += s
        members += m
    df = pd.DataFrame(rows)
    table = tables.leakage_table(df, {"scores": np.stack(scores), "members": np.stack(members)}, n_boot=200)
    out = resolved.versus_fp32(table).set_index("label")
    for x in ("0.001", "0.01"):
        assert out.loc["strong change", f"status@{x}"] == "resolved"
        assert out.loc["tiny change", f"status@{x}"] == "indicative"
        assert out.loc["strong change", f"diff tpr@{x}"] < 0
    one = table.copy()
    one.loc[one["label"] == "strong change", "targets"] = 1  # a one-target interval is a point: never resolved
    assert (resolved.versus_fp32(one).set_index("label").loc["strong change", ["status@0.001", "status@0.01"]]
            == "indicative").all()
    thin = table.assign(n_nonmembers=5392)  # digits: 5.4 expected false positives at 0.1% FPR, 54 at 1%
    status = resolved.versus_fp32(thin).set_index("label").loc["strong change"]
    assert status["status@0.001"] == "indicative" and status["status@0.01"] == "resolved"
    with pytest.raises(ValueError, match="exactly one 'fp32'"):
        resolved.versus_fp32(table[table["label"] != "fp32"])
