"""Tables of the study, each recomputable from the stored attack results (per-target metrics and the
score arrays): summaries over targets, the pooled-ROC leakage table, the headline table, the paper's
reference points and the extras' tables (controls, activation bits, frontier)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ptqlib.attacks.lira import ATTACK_LABELS
from ptqlib.ptq import QUANTIZERS
from ptqlib.results import resolved, stats
from ptqlib.results.metrics import LOW_FPRS, too_few_nonmembers

METHOD_ORDER = tuple(QUANTIZERS)  # rtn, adaround, brecq, obc, gptq: the order of rows and legends


METRICS = ["test_acc", "tpr@0.001", "tpr@0.01", "auc", "balanced_acc"]

RECIPE_KEYS = ["label", "method", "bits", "last_layer_bits"]

THREAT_LABELS = {"fp_shadows": "FP shadows (paper)", "matched_shadows": "matched shadows (adaptive)",
                 "leave_one_out": "leave-one-out (matched shadows)", "leave_one_out_fp": "leave-one-out (FP shadows)",
                 "both_models": "FP32 + quantized (both models)"}

def primary_threat_model(df: pd.DataFrame) -> str:
    """The threat model the headline shows: the paper's fp_shadows, else its leave-one-out form, else the first."""
    present = list(dict.fromkeys(df["threat_model"]))
    for t in ("fp_shadows", "leave_one_out_fp"):
        if t in present:
            return t
    if not present:
        raise ValueError("primary_threat_model: no attack results")
    return present[0]

def _recipe_order(df: pd.DataFrame) -> pd.DataFrame:
    """By threat model, then FP32 first, by method, descending bits, plain before decoupled."""
    threat_rank = {t: k for k, t in enumerate(THREAT_LABELS)}
    method_rank = {m: k for k, m in enumerate(("fp32",) + METHOD_ORDER)}
    key = df.assign(_threat=df["threat_model"].map(threat_rank), _method=df["method"].map(method_rank),
                    _last=df["last_layer_bits"].fillna(0))
    return key.sort_values(["_threat", "_method", "bits", "_last"],
                           ascending=[True, True, False, True], kind="stable").drop(
        columns=["_threat", "_method", "_last"]).reset_index(drop=True)

GROUP_KEYS = ["threat_model"] + RECIPE_KEYS + ["attack"]

def summary(df: pd.DataFrame, n_boot: int = 1000) -> pd.DataFrame:
    """Per (threat model, recipe, attack): mean, std and bootstrap 95% interval over targets of
    every metric, the number of targets and of non-members per target."""
    out = stats.summary_table(df, GROUP_KEYS, METRICS, n_boot=max(1, n_boot))
    n_out = df.groupby(GROUP_KEYS, dropna=False, sort=False)["n_nonmembers"].min().reset_index()
    out = out.merge(n_out, on=GROUP_KEYS, how="left")
    return _recipe_order(out)

def pooled(df: pd.DataFrame, arrays: dict) -> pd.DataFrame:
    """One ROC over all targets of each group: reaches FPRs that a single target cannot."""
    rows = []
    for key, group in df.groupby(GROUP_KEYS, dropna=False, sort=False):
        idx = group.index.to_numpy()
        m = stats.pooled_metrics(arrays["scores"][idx], arrays["members"][idx])
        rows.append({**dict(zip(GROUP_KEYS, key)), **m})
    return _recipe_order(pd.DataFrame(rows))

def mean_std_cells(rows: pd.DataFrame, metric: str) -> list[str]:
    """'mean ± std' of a metric over targets, in percent, one string per row."""
    return [f"{100 * m:.2f} ± {100 * s:.2f}" for m, s in zip(rows[metric], rows[metric + "_std"])]

def formatted(summary_df: pd.DataFrame, attack: str | None = None,
              threat_model: str | None = "fp_shadows") -> pd.DataFrame:
    """Human-readable 'mean ± std' table, percentages, a warning mark on thin low-FPR figures."""
    rows = summary_df if attack is None else summary_df[summary_df["attack"] == attack]
    if threat_model is not None:
        rows = rows[rows["threat_model"] == threat_model]
    table = pd.DataFrame({
        "threat model": rows["threat_model"].map(THREAT_LABELS),
        "recipe": rows["label"],
        "last layer": rows["last_layer_bits"].map(lambda b: "same" if pd.isna(b) else f"{b:g}-bit"),
        "attack": rows["attack"].map(ATTACK_LABELS),
    })
    for col, name in [("test_acc", "test acc %"), ("tpr@0.001", "TPR@0.1%FPR %"),
                      ("tpr@0.01", "TPR@1%FPR %"), ("auc", "AUC %")]:
        cells = mean_std_cells(rows, col)
        if col != "test_acc":  # bootstrap 95% interval over targets
            cells = [f"{c} [{100 * lo:.2f}, {100 * hi:.2f}]"
                     for c, lo, hi in zip(cells, rows[col + "_ci_low"], rows[col + "_ci_high"])]
        if col.startswith("tpr@"):
            fpr = float(col.split("@")[1])
            cells = [c + (" ⚠" if too_few_nonmembers(n, fpr) else "") for c, n in zip(cells, rows["n_nonmembers"])]
        table[name] = cells
    table["targets"] = rows["targets"].values
    return table.reset_index(drop=True)

def resolution_warnings(df: pd.DataFrame) -> list[str]:
    """One sentence per low FPR whose TPR rests on fewer than 10 expected false positives."""
    n = int(df["n_nonmembers"].min())
    out = []
    for fpr in LOW_FPRS:
        if too_few_nonmembers(n, fpr):
            out.append(f"⚠ TPR at {100 * fpr:g}% FPR rests on {n} non-members per target: n × FPR = "
                       f"{n * fpr:.2f} false positives (< 10). Read these figures as indicative only; "
                       f"pool targets or use a larger dataset for a reliable value.")
    return out

def threat_model_table(summary_df: pd.DataFrame, attack: str, metric: str = "tpr@0.01") -> pd.DataFrame:
    """One row per recipe, one column per threat model: 'mean ± std' of `metric` in %."""
    rows = summary_df[summary_df["attack"] == attack]
    cells = rows.assign(cell=mean_std_cells(rows, metric))
    table = cells.pivot_table(index="label", columns="threat_model", values="cell", aggfunc="first", sort=False)
    table = table[[t for t in THREAT_LABELS if t in table.columns]].rename(columns=THREAT_LABELS)
    table.columns.name = f"{metric} (%), {ATTACK_LABELS[attack]}"
    return table

DISPLAY_NAMES = {"fp32": "FP32", "rtn": "RTN", "adaround": "AdaRound", "brecq": "BRECQ", "obc": "OBC",
                "gptq": "GPTQ"}

POOLED_BOOTSTRAP = 200  # resamples of the targets for the pooled ROC's interval (one ROC each)

def _pooled_ci(scores: np.ndarray, members: np.ndarray, n_boot: int, seed: int = 0) -> dict:
    """Percentile 95% interval of each pooled low-FPR TPR, resampling whole targets."""
    rng = np.random.default_rng(seed)
    k = len(scores)
    draws = [stats.pooled_low_fpr_tprs(scores[pick], members[pick])
             for pick in rng.integers(0, k, size=(n_boot, k))]
    out = {}
    for x in LOW_FPRS:
        values = [d[f"tpr@{x:g}"] for d in draws]
        out[f"tpr@{x:g}_ci_low"], out[f"tpr@{x:g}_ci_high"] = np.quantile(values, [0.025, 0.975])
    return out

def leakage_table(df: pd.DataFrame, arrays: dict, attack: str = "online", threat_model: str = "fp_shadows",
                  n_boot: int = POOLED_BOOTSTRAP) -> pd.DataFrame:
    """One row per recipe of one attack and threat model, every number the headline shows.

    tpr@x, auc, n_nonmembers: the pooled ROC over all targets (with a 95% interval from
    resampling targets); tpr@x_target_mean/_std: per target; test_acc: mean, std, CI over targets.
    """
    rows = df[(df["attack"] == attack) & (df["threat_model"] == threat_model)]
    if rows.empty:
        raise ValueError(f"no attack results for attack={attack!r}, threat_model={threat_model!r}; "
                         f"stored: {sorted(set(zip(df['attack'], df['threat_model'])))}")
    out = []
    for key, group in rows.groupby(RECIPE_KEYS, dropna=False, sort=False):
        idx = group.index.to_numpy()
        scores, members = arrays["scores"][idx], arrays["members"][idx]
        acc = stats.summarize(group["test_acc"].to_numpy())
        row = {"attack": attack, "threat_model": threat_model, **dict(zip(RECIPE_KEYS, key)),
               "targets": len(group), "test_acc": acc["mean"], "test_acc_std": acc["std"],
               "test_acc_ci_low": acc["ci_low"], "test_acc_ci_high": acc["ci_high"],
               **stats.pooled_metrics(scores, members),
               "n_nonmembers_per_target": int(group["n_nonmembers"].min())}
        if n_boot > 0:
            row.update(_pooled_ci(scores, members, n_boot))
        for x in LOW_FPRS:
            per_target = group[f"tpr@{x:g}"].to_numpy()
            row[f"tpr@{x:g}_target_mean"] = float(per_target.mean())
            row[f"tpr@{x:g}_target_std"] = float(per_target.std(ddof=1)) if len(per_target) > 1 else 0.0
        out.append(row)
    return _recipe_order(pd.DataFrame(out).assign(threat_model=threat_model))

def recipe_name(method: str, bits: float, last_layer_bits=None) -> str:
    """A recipe in words: '1.58-bit AdaRound', '1.58-bit RTN with an 8-bit last layer', 'FP32'."""
    if method == "fp32":
        return "FP32"
    name = f"{bits:g}-bit {DISPLAY_NAMES.get(method, method)}"
    return name if pd.isna(last_layer_bits) else name + f" with an {last_layer_bits:g}-bit last layer"

def headline(table: pd.DataFrame) -> pd.DataFrame:
    """The report's table from a `leakage_table`, one row per recipe, numbers in % (2 decimals):
    test accuracy mean and std over models, pooled TPR at 0.1% and 1% FPR with their 95% interval
    from resampling models and 'resolved' / 'indicative' against FP32 (disjoint intervals or not),
    pooled AUC, models and pooled non-members. The index page draws its tables from this file."""
    out = pd.DataFrame({
        "attack": table["attack"], "threat model": table["threat_model"],
        "recipe": table["label"], "method": table["method"], "bits": table["bits"],
        "last layer bits": table["last_layer_bits"], "models": table["targets"].to_numpy(),
        "non-members": table["n_nonmembers"].to_numpy(),
        "test acc %": (100 * table["test_acc"]).round(2), "test acc std": (100 * table["test_acc_std"]).round(2),
    })
    has_ci = all(f"tpr@{x:g}_ci_low" in table for x in LOW_FPRS)
    status = resolved.versus_fp32(table).set_index("label") if has_ci and (table["label"] == "fp32").sum() == 1 else None
    for x in LOW_FPRS:
        c, name = f"tpr@{x:g}", f"TPR@{100 * x:g}%FPR"
        out[f"{name} %"] = (100 * table[c]).round(2)
        if has_ci:
            out[f"{name} low"] = (100 * table[c + "_ci_low"]).round(2)
            out[f"{name} high"] = (100 * table[c + "_ci_high"]).round(2)
        if status is not None:
            out[f"vs FP32 @{100 * x:g}%"] = table["label"].map(status[f"status@{x:g}"]).fillna("")
        out[f"{name} resolves"] = ~table["n_nonmembers"].map(lambda n, x=x: too_few_nonmembers(int(n), x))
    out["AUC %"] = (100 * table["auc"]).round(2)
    return out.reset_index(drop=True)

REFERENCE_DIR = Path(__file__).parent / "reference_data"

def paper_reference(dataset: str, arch: str, attack: str = "lira_online") -> pd.DataFrame | None:
    """The paper's published Fig. 1 points for this dataset, architecture and attack, or None.

    Read from `ptqlib/reference_data/*.csv` (columns dataset, arch, attack, method, bits,
    test_acc_pct, tpr_at_0.1pct_fpr as a fraction); the paper publishes CIFAR-100 ResNet-18.
    """
    frames = [pd.read_csv(f) for f in sorted(REFERENCE_DIR.glob("*.csv"))]
    if not frames:
        return None
    ref = pd.concat(frames, ignore_index=True)
    ref = ref[(ref["dataset"] == dataset) & (ref["arch"] == arch) & (ref["attack"] == attack)]
    return ref.reset_index(drop=True) if len(ref) else None

ACT_LABEL = r" a\d+$"  # the suffix of a recipe with quantized activations, e.g. "rtn 4b a8"

FRONTIER_METRIC = "tpr@0.01"  # pooled TPR at 1% FPR: resolved by the digits study's pooled non-members

FAMILY_NAMES = {"noise": "weight noise", "epochs": "fewer epochs", "dp": "DP-SGD", "prune": "pruning"}

def _leakage_rows(df: pd.DataFrame, arrays: dict, attack: str, threat_model: str, n_boot: int) -> pd.DataFrame:
    rows = df[(df["attack"] == attack) & (df["threat_model"] == threat_model)]
    return pd.DataFrame() if rows.empty else leakage_table(df, arrays, attack, threat_model, n_boot)

def controls_table(results: pd.DataFrame, arrays: dict, beyond: pd.DataFrame, beyond_arrays: dict,
                   attack: str = "online", n_boot: int = POOLED_BOOTSTRAP) -> pd.DataFrame:
    """Each weight-only quantized recipe beside its accuracy-matched controls (all against FP shadows).

    One row per (recipe, control kind): test accuracy (mean over targets) and pooled TPR@1%FPR
    with its 95% interval, for the recipe and for the control of that kind whose mean accuracy
    is closest (`controls.match_controls`); `leak_gap` = recipe - control.
    """
    quantized = leakage_table(results, arrays, attack, "fp_shadows", n_boot)
    quantized = quantized[(quantized["method"] != "fp32") & ~quantized["label"].str.contains(ACT_LABEL)]
    controls = _leakage_rows(beyond[beyond["method"].isin(["noise", "epochs"])], beyond_arrays, attack,
                             "fp_shadows", n_boot)
    if controls.empty:
        raise ValueError("no control results: turn on control_noise or control_epochs and run the analysis stage")
    matched = match_controls(quantized, controls)
    m = FRONTIER_METRIC
    leak = {r["label"]: r for _, r in pd.concat([quantized, controls]).iterrows()}
    for side, col in (("recipe", "recipe"), ("control", "control")):
        matched[f"{side}_{m}"] = [leak[name][m] for name in matched[col]]
        for end in ("ci_low", "ci_high"):
            matched[f"{side}_{m}_{end}"] = [leak[name].get(f"{m}_{end}", np.nan) for name in matched[col]]
    matched["leak_gap"] = matched[f"recipe_{m}"] - matched[f"control_{m}"]
    return matched

def activation_table(results: pd.DataFrame, arrays: dict, attack: str = "online",
                     n_boot: int = POOLED_BOOTSTRAP) -> pd.DataFrame:
    """Weight x activation bit-widths: one row per recipe, with its weight label and act_bits
    (None = FP activations), test accuracy and pooled leakage (FP shadows)."""
    table = leakage_table(results, arrays, attack, "fp_shadows", n_boot)
    parts = table["label"].str.extract(r"^(?P<weights>.*?)(?: a(?P<act_bits>\d+))?$")
    table = table.assign(weights=parts["weights"], act_bits=pd.to_numeric(parts["act_bits"]))
    cols = ["weights", "act_bits", "test_acc", "test_acc_std", "tpr@0.001", "tpr@0.01", "tpr@0.01_ci_low",
            "tpr@0.01_ci_high", "auc", "targets"]
    return table[[c for c in cols if c in table.columns]]

def frontier_table(results: pd.DataFrame, arrays: dict, beyond: pd.DataFrame, beyond_arrays: dict,
                   attack: str = "online", n_boot: int = POOLED_BOOTSTRAP) -> pd.DataFrame:
    """PTQ recipes (FP shadows, as the paper), DP-SGD and pruning (each against shadows trained or
    pruned the same way, and against FP shadows): accuracy, pooled leakage, epsilon for DP-SGD."""
    parts = [leakage_table(results, arrays, attack, "fp_shadows", n_boot).assign(family="ptq")]
    defences = beyond[beyond["method"].isin(["dp", "prune"])]
    for threat_model in ("matched_shadows", "fp_shadows"):
        rows = _leakage_rows(defences, beyond_arrays, attack, threat_model, n_boot)
        if not rows.empty:
            parts.append(rows.assign(family=rows["method"]))
    table = pd.concat(parts, ignore_index=True)
    if "epsilon" in defences:
        eps = defences.groupby("label")["epsilon"].mean()
        table["epsilon"] = table["label"].map(eps)
    return table


def match_controls(recipes: pd.DataFrame, controls: pd.DataFrame) -> pd.DataFrame:
    """For each quantized recipe, the control of each kind (`method`) whose test accuracy is closest.

    Both tables hold one row per label with `label` and `test_acc` (means over targets); `controls`
    also has `method` (noise, epochs, ...). Returns one row per (recipe, control kind): recipe,
    recipe_acc, control, control_method, control_acc, acc_gap (control - recipe).
    """
    rows = []
    for _, r in recipes.iterrows():
        for method, group in controls.groupby("method", sort=False):
            best = group.iloc[int(np.argmin(np.abs(group["test_acc"].to_numpy() - r["test_acc"])))]
            rows.append({"recipe": r["label"], "recipe_acc": r["test_acc"], "control": best["label"],
                         "control_method": method, "control_acc": best["test_acc"],
                         "acc_gap": best["test_acc"] - r["test_acc"]})
    return pd.DataFrame(rows)


def attack_overview(results: pd.DataFrame) -> str:
    """The attack stage in one or two sentences: how many targets, recipes, attacks and threat
    models were scored, and the RMIA population where RMIA ran (its `rmia_population` column)."""
    def count(col: str, what: str) -> str:
        n = results[col].nunique()
        return f"{n} {what}{'' if n == 1 else 's'}"
    threats = "; ".join(THREAT_LABELS.get(t, t) for t in dict.fromkeys(results["threat_model"]))
    text = (f"Scored {count('target', 'target model')} x {count('label', 'recipe')} x {count('attack', 'attack')} "
            f"({len(results)} results) under {threats}.")
    if "rmia_population" in results and results["rmia_population"].notna().any():
        sizes = sorted({int(v) for v in results["rmia_population"].dropna()})
        text += (f" RMIA compared each example with a population of {' / '.join(map(str, sizes))} held-out "
                 "points (rmia_population; 0 in the preset = the whole held-out split).")
    return text


def display_table(table: pd.DataFrame) -> "pd.io.formats.style.Styler":
    """A table as a report shows it: no pandas index, cells on one line."""
    return table.style.hide(axis="index").set_table_styles([{"selector": "td, th",
                                                             "props": "white-space: nowrap; text-align: right"}])


def models_table(models: pd.DataFrame) -> pd.DataFrame:
    """A stage's trained models as a report shows them: model, members, train and test accuracy in %."""
    return pd.DataFrame({"model": models["model"], "members": models["members"],
                         "train accuracy %": [f"{100 * a:.2f}" for a in models["train_acc"]],
                         "test accuracy %": [f"{100 * a:.2f}" for a in models["test_acc"]]})


def accuracy_sentence(models: pd.DataFrame, what: str) -> str:
    """'16 shadows: train 94.48 ± 10.03% (min 57.24%), test 49.03 ± 1.39% (44.90-51.00%).' (std over models)."""
    def spread(col: str) -> str:
        v = 100 * models[col].to_numpy()
        std = f" ± {v.std(ddof=1):.2f}" if len(v) > 1 else ""
        return f"{v.mean():.2f}{std}% ({v.min():.2f}-{v.max():.2f}%)"
    return f"{len(models)} {what}: train accuracy {spread('train_acc')}, test accuracy {spread('test_acc')}."


def quantized_table(quantized: pd.DataFrame) -> pd.DataFrame:
    """Per recipe: models, test accuracy mean ± std and its change from FP32, mean relative weight error, in %."""
    rows = []
    for label, g in quantized.groupby("label", sort=False):
        acc, drop = 100 * g["test_acc"], 100 * (g["test_acc"] - g["fp32_test_acc"])
        rows.append({"recipe": label, "models": len(g),
                     "test accuracy %": f"{acc.mean():.2f} ± {acc.std(ddof=1):.2f}" if len(g) > 1 else f"{acc.mean():.2f}",
                     "vs FP32 (points)": f"{drop.mean():+.2f}".replace("-", "\u2212"),
                     "weight error %": f"{100 * g['mean_rel_weight_error'].mean():.1f}"})
    return pd.DataFrame(rows)


def threat_model_pooled(results: pd.DataFrame, arrays: dict, attack: str, fpr: float,
                        n_boot: int = POOLED_BOOTSTRAP) -> pd.DataFrame:
    """One row per recipe, one column per threat model: pooled TPR at `fpr` in % with its 95% interval
    from resampling targets, and '(k models)' where a recipe ran on fewer models than FP32."""
    c = f"tpr@{fpr:g}"
    columns = {}
    for t in [t for t in THREAT_LABELS if t in set(results["threat_model"])]:
        rows = results[(results["attack"] == attack) & (results["threat_model"] == t)]
        if rows.empty:
            continue
        table = leakage_table(results, arrays, attack, t, n_boot).set_index("label")
        interval = (lambda r: f" [{100 * r[c + '_ci_low']:.2f}, {100 * r[c + '_ci_high']:.2f}]") if n_boot else (lambda r: "")
        columns[THREAT_LABELS[t]] = {label: f"{100 * r[c]:.2f}{interval(r)}" for label, r in table.iterrows()}
    out = pd.DataFrame(columns)
    out.index.name = "recipe"
    return out.fillna("–").reset_index()


def attacks_pooled(pooled_df: pd.DataFrame, threat_model: str, fpr: float) -> pd.DataFrame:
    """From `pooled`: one row per recipe, one column per attack, pooled TPR at `fpr` in %."""
    rows = pooled_df[pooled_df["threat_model"] == threat_model]
    table = rows.pivot_table(index="label", columns="attack", values=f"tpr@{fpr:g}", aggfunc="first", sort=False)
    table = (100 * table).round(2).rename(columns=lambda a: ATTACK_LABELS.get(a, a))
    table.index.name = "recipe"
    return table.reset_index()
