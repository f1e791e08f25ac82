"""The canary audit and the both-models comparison, recomputed from the stored attack outputs.

A privacy defence must be judged on its most vulnerable examples (Aerni, Zhang and Tramer 2024):
with `canaries: n` the pool holds n mislabeled (or noise) examples (`data.insert_canaries`), IN
for half the models like any other. `canary_table` scores every group (FP32, each recipe, each
DP-SGD setting) on the canaries alone: the ROC of canary members against canary non-members,
pooled over targets, with a 95% interval from resampling whole targets, beside the same figures on
the rest of the pool. `matched_accuracy` sets each DP-SGD row beside the recipe of closest accuracy.

`both_models_table` reads the threat model `both_models` (the attacker holds the FP32 model and
its quantized release, CompLeak's setting): per recipe, the FP32 model alone, the quantized model
alone (matched shadows) and the pair, and how much releasing the quantized model beside the FP32
one adds (pair - FP32 alone, with a paired interval over targets).

Every function takes the attack stage's table and arrays (`pipeline.load_attack_results`, and
`pipeline.load_beyond_results` for DP-SGD): nothing is recomputed from models.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from ptqlib.results import stats
from ptqlib.results.metrics import LOW_FPRS, too_few_nonmembers

POOLED_BOOTSTRAP = 200  # resamples of the targets per interval (one pooled ROC each)
METRICS = tuple(f"tpr@{x:g}" for x in LOW_FPRS) + ("auc",)


def _groups(df: pd.DataFrame, attack: str, threat_models) -> list[tuple[str, str, pd.DataFrame]]:
    """(threat model, label, rows sorted by target) of one attack, in the table's order."""
    rows = df[(df["attack"] == attack) & df["threat_model"].isin(list(threat_models))]
    return [(tm, label, g.sort_values("target", kind="stable"))
            for (tm, label), g in rows.groupby(["threat_model", "label"], sort=False)]


def _columns(arrays: dict, rows: pd.DataFrame, subset: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """(targets, examples) scores and membership of `rows`, restricted to the `subset` examples."""
    idx = rows.index.to_numpy()
    scores, members = arrays["scores"][idx], arrays["members"][idx]
    if subset is not None:
        scores, members = scores[:, subset], members[:, subset]
    return scores, members


_CELLS = 4_000_000  # (resamples x pooled examples) per block of `resampled_metrics`: bounds its memory


def resampled_metrics(scores: np.ndarray, members: np.ndarray, picks: np.ndarray) -> dict[str, np.ndarray]:
    """The pooled ROC's TPR at each low FPR and AUC for every resample of the targets at once.

    scores, members (T, N): one row per target; picks (B, T): the targets each resample draws (with
    replacement). A resample's pooled ROC is the full pool's, each example weighted by how often its
    target was drawn: one sort, then weighted cumulative counts for all resamples together. Equal to
    `stats.pooled_metrics` of `scores[p], members[p]` for each row p of picks (tests check it).
    """
    t_count, n = scores.shape
    s, m = np.asarray(scores, dtype=np.float64).ravel(), np.asarray(members, dtype=bool).ravel()
    order = np.argsort(-s, kind="stable")
    s, m, target = s[order], m[order], np.repeat(np.arange(t_count), n)[order]
    ends = np.append(np.flatnonzero(np.diff(s) != 0), len(s) - 1)  # one ROC point per distinct score
    counts = (picks[:, :, None] == np.arange(t_count)).sum(axis=1).astype(np.float64)  # (B, T)
    out = {k: np.empty(len(picks)) for k in METRICS}
    step = max(1, _CELLS // len(s))
    for a in range(0, len(picks), step):
        w = counts[a:a + step][:, target]
        tp = np.cumsum(w * m, axis=1)[:, ends]
        fp = np.cumsum(w * ~m, axis=1)[:, ends]
        with np.errstate(invalid="ignore", divide="ignore"):
            tpr = np.hstack([np.zeros((len(w), 1)), tp / tp[:, -1:]])
            fpr = np.hstack([np.zeros((len(w), 1)), fp / fp[:, -1:]])
        rows = np.arange(len(w))
        for x in LOW_FPRS:  # the last point with FPR strictly below x (the reference's rule)
            out[f"tpr@{x:g}"][a:a + step] = tpr[rows, (fpr < x).sum(axis=1) - 1]
        out["auc"][a:a + step] = (np.diff(fpr, axis=1) * 0.5 * (tpr[:, 1:] + tpr[:, :-1])).sum(axis=1)
    return out


def _picks(n_targets: int, n_boot: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, n_targets, size=(n_boot, n_targets))


def _interval(values: np.ndarray) -> tuple[float, float]:
    low, high = np.quantile(values, [0.025, 0.975])
    return float(low), float(high)


def pooled_leakage(scores: np.ndarray, members: np.ndarray, n_boot: int = POOLED_BOOTSTRAP,
                   seed: int = 0) -> dict:
    """The pooled ROC's TPR at each low FPR and AUC over targets (rows), with a 95% percentile
    interval from resampling whole targets (`n_boot` = 0: no interval)."""
    out = stats.pooled_metrics(scores, members)
    if n_boot > 0:
        draws = resampled_metrics(scores, members, _picks(len(scores), n_boot, seed))
        for m in METRICS:
            out[f"{m}_ci_low"], out[f"{m}_ci_high"] = _interval(draws[m])
    return out


def paired_difference(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray],
                      n_boot: int = POOLED_BOOTSTRAP, seed: int = 0) -> dict:
    """Pooled metrics of a minus those of b, over the same targets (row k of a and of b: one target),
    with a 95% interval from resampling the targets of both together."""
    if a[0].shape != b[0].shape:
        raise ValueError(f"paired_difference needs the same targets and examples on both sides, got "
                         f"{a[0].shape} and {b[0].shape}")
    ma, mb = stats.pooled_metrics(*a), stats.pooled_metrics(*b)
    out = {f"{m}_diff": ma[m] - mb[m] for m in METRICS}
    if n_boot > 0:
        picks = _picks(len(a[0]), n_boot, seed)
        da, db = resampled_metrics(*a, picks), resampled_metrics(*b, picks)
        for m in METRICS:
            out[f"{m}_diff_ci_low"], out[f"{m}_diff_ci_high"] = _interval(da[m] - db[m])
    return out


def _family(rows: pd.DataFrame) -> str:
    method = rows["method"].iloc[0]
    return "fp32" if method == "fp32" else "dp" if method == "dp" else "prune" if method == "prune" else \
        "control" if method in ("noise", "epochs") else "ptq"


def canary_table(results: pd.DataFrame, arrays: dict, canaries: np.ndarray, attack: str = "online",
                 threat_models=("fp_shadows", "matched_shadows"), beyond: pd.DataFrame | None = None,
                 beyond_arrays: dict | None = None, n_boot: int = POOLED_BOOTSTRAP) -> pd.DataFrame:
    """One row per (threat model, group): leakage on the canaries alone and on the rest of the pool.

    canaries: the pool indices of the canaries (`ImageData.canaries`). Columns: family (fp32, ptq, dp,
    ...), label, test_acc (mean over targets), epsilon (DP-SGD), canary_tpr@x / canary_auc with their
    `_ci_low` / `_ci_high`, canary_members / canary_nonmembers (pooled counts), canary_thin (fewer
    than 10 expected false positives at 1% FPR), rest_tpr@x / rest_auc (the non-canary examples).
    """
    canaries = np.asarray(canaries, dtype=np.int64)
    if canaries.size == 0:
        raise ValueError("canary_table: the study has no canaries; set canaries: n (> 0) in the preset")
    rest = np.setdiff1d(np.arange(arrays["scores"].shape[1]), canaries)
    sources = [(results, arrays)]
    if beyond is not None and len(beyond):
        sources.append((beyond, beyond_arrays))
    out = []
    for df, arr in sources:
        for threat_model, label, rows in _groups(df, attack, threat_models):
            c = pooled_leakage(*_columns(arr, rows, canaries), n_boot)
            r = stats.pooled_metrics(*_columns(arr, rows, rest))
            row = {"threat_model": threat_model, "family": _family(rows), "label": label,
                   "method": rows["method"].iloc[0], "bits": rows["bits"].iloc[0], "targets": len(rows),
                   "test_acc": float(rows["test_acc"].mean()),
                   "epsilon": float(rows["epsilon"].mean()) if "epsilon" in rows else np.nan,
                   "canary_members": c["n_members"], "canary_nonmembers": c["n_nonmembers"],
                   "canary_thin": too_few_nonmembers(c["n_nonmembers"], 0.01)}
            row.update({f"canary_{k}": v for k, v in c.items() if k.startswith(("tpr@", "auc"))})
            row.update({f"rest_{m}": r[m] for m in METRICS})
            out.append(row)
    return pd.DataFrame(out)


def matched_accuracy(table: pd.DataFrame, family: str = "dp", metric: str = "canary_tpr@0.01") -> pd.DataFrame:
    """Each `family` row (e.g. DP-SGD) beside the quantized recipe of the same threat model whose mean
    test accuracy is closest: both accuracies, both leakages, and defence - recipe."""
    out = []
    for _, d in table[table["family"] == family].iterrows():
        ptq = table[(table["family"] == "ptq") & (table["threat_model"] == d["threat_model"])]
        if ptq.empty:
            continue
        q = ptq.loc[(ptq["test_acc"] - d["test_acc"]).abs().idxmin()]
        out.append({"threat_model": d["threat_model"], "defence": d["label"], "defence_acc": d["test_acc"],
                    f"defence_{metric}": d[metric], "epsilon": d.get("epsilon", np.nan), "recipe": q["label"],
                    "recipe_acc": q["test_acc"], f"recipe_{metric}": q[metric],
                    "defence_minus_recipe": d[metric] - q[metric]})
    return pd.DataFrame(out)


def both_models_table(results: pd.DataFrame, arrays: dict, attack: str = "online",
                      subset: np.ndarray | None = None, n_boot: int = POOLED_BOOTSTRAP) -> pd.DataFrame:
    """Per quantized recipe: does releasing it beside the FP32 model leak more than FP32 alone?

    Columns, each a pooled ROC over targets: fp32_<m> (the FP32 model alone, FP shadows),
    quantized_<m> (the quantized model alone, matched shadows; NaN if that threat model was not run),
    both_<m> (the pair, threat model both_models) with its interval, and <m>_diff = both - FP32 alone
    with a paired interval over targets, for m in tpr@0.001, tpr@0.01, auc. `subset`: only these
    examples (e.g. the canaries).
    """
    rows = results[results["attack"] == attack]
    pair_rows = rows[rows["threat_model"] == "both_models"]
    if pair_rows.empty:
        raise ValueError(f"no both_models results for attack {attack!r}; add both_models to threat_models "
                         f"(stored: {sorted(set(rows['threat_model']))})")
    fp_rows = pair_rows[pair_rows["label"] == "fp32"]
    if fp_rows.empty:
        fp_rows = rows[(rows["threat_model"] == "fp_shadows") & (rows["label"] == "fp32")]
    fp_rows = fp_rows.sort_values("target", kind="stable")
    fp = _columns(arrays, fp_rows, subset)
    out = []
    for label, both_rows in pair_rows[pair_rows["label"] != "fp32"].groupby("label", sort=False):
        both_rows = both_rows.sort_values("target", kind="stable")
        if list(both_rows["target"]) != list(fp_rows["target"]):
            raise ValueError(f"both_models_table: {label!r} and fp32 were attacked on different targets")
        pair = _columns(arrays, both_rows, subset)
        alone = rows[(rows["threat_model"] == "matched_shadows") & (rows["label"] == label)]
        q = stats.pooled_metrics(*_columns(arrays, alone.sort_values("target"), subset)) if len(alone) else {}
        f, b = stats.pooled_metrics(*fp), pooled_leakage(*pair, n_boot)
        row = {"label": label, "method": both_rows["method"].iloc[0], "bits": both_rows["bits"].iloc[0],
               "targets": len(both_rows), "test_acc": float(both_rows["test_acc"].mean()),
               "n_nonmembers": b["n_nonmembers"]}
        for m in METRICS:
            row.update({f"fp32_{m}": f[m], f"quantized_{m}": q.get(m, np.nan), f"both_{m}": b[m],
                        f"both_{m}_ci_low": b.get(f"{m}_ci_low", np.nan),
                        f"both_{m}_ci_high": b.get(f"{m}_ci_high", np.nan)})
        row.update(paired_difference(pair, fp, n_boot))
        out.append(row)
    return pd.DataFrame(out)
