"""Tables and figures of the study, each recomputable from the stored attack results."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from . import stats
from .config import METHODS as METHOD_ORDER
from .lira import ATTACK_LABELS
from .metrics import LOW_FPRS, too_few_nonmembers

METRICS = ["test_acc", "tpr@0.001", "tpr@0.01", "auc", "balanced_acc"]
RECIPE_KEYS = ["label", "method", "bits", "last_layer_bits"]
THREAT_LABELS = {"fp_shadows": "FP shadows (paper)", "matched_shadows": "matched shadows (adaptive)",
                 "leave_one_out": "leave-one-out", "both_models": "FP32 + quantized (both models)"}


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


# ---------------------------------------------------------------- the headline: one row per recipe

METHOD_NAMES = {"fp32": "FP32", "rtn": "RTN", "adaround": "AdaRound", "brecq": "BRECQ", "obc": "OBC",
                "gptq": "GPTQ"}
POOLED_BOOTSTRAP = 200  # resamples of the targets for the pooled ROC's interval (one ROC each)


def _pooled_ci(scores: np.ndarray, members: np.ndarray, n_boot: int, seed: int = 0) -> dict:
    """Percentile 95% interval of each pooled low-FPR TPR, resampling whole targets."""
    rng = np.random.default_rng(seed)
    k = len(scores)
    draws = [stats.pooled_metrics(scores[pick], members[pick])
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


def headline_fpr(table: pd.DataFrame) -> tuple[float, bool]:
    """The lowest FPR of LOW_FPRS the pooled ROC resolves, and whether the figure is only
    indicative (even the largest rests on fewer than 10 expected false positives)."""
    n = int(table["n_nonmembers"].min())
    for x in sorted(LOW_FPRS):
        if not too_few_nonmembers(n, x):
            return x, False
    return max(LOW_FPRS), True


def recipe_name(method: str, bits: float, last_layer_bits=None) -> str:
    """A recipe in words: '1.58-bit AdaRound', '1.58-bit RTN with an 8-bit last layer', 'FP32'."""
    if method == "fp32":
        return "FP32"
    name = f"{bits:g}-bit {METHOD_NAMES.get(method, method)}"
    return name if pd.isna(last_layer_bits) else name + f" with an {last_layer_bits:g}-bit last layer"


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _points(delta: float) -> str:
    return f"{100 * delta:+.1f} pt".replace("-", "\u2212")


def finding(table: pd.DataFrame, max_accuracy_loss: float = 0.01) -> str:
    """One or two sentences from a `leakage_table`: the recipe that cuts the pooled low-FPR TPR
    most while losing at most `max_accuracy_loss` accuracy, then the lowest leak at any cost.
    Says 'indicative' when the pooled non-members cannot resolve the FPR."""
    fpr, indicative = headline_fpr(table)
    col, what = f"tpr@{fpr:g}", f"TPR@{100 * fpr:g}%FPR"
    fp = table[table["method"] == "fp32"]
    quantized = table[table["method"] != "fp32"]
    if fp.empty or quantized.empty:
        raise ValueError("finding needs the FP32 row and at least one quantized recipe in the table")
    fp = fp.iloc[0]
    loss = fp["test_acc"] - quantized["test_acc"]
    affordable = quantized[loss <= max_accuracy_loss]
    attack = ATTACK_LABELS.get(fp["attack"], fp["attack"])
    pooled_over = f"pooled over {int(fp['targets'])} targets"
    sentences = []
    if len(affordable):
        best = affordable.sort_values(col, kind="stable").iloc[0]
        name, cost = recipe_name(best["method"], best["bits"], best["last_layer_bits"]), _points(
            best["test_acc"] - fp["test_acc"])
        if best[col] < fp[col]:
            sentences.append(f"Under {attack}, {name} cuts {what} from {_pct(fp[col])} (FP32) to "
                             f"{_pct(best[col])} ({pooled_over}) at {cost} accuracy.")
        else:
            sentences.append(f"Under {attack}, no recipe within {100 * max_accuracy_loss:g} pt of FP32 accuracy "
                             f"lowers {what}: FP32 {_pct(fp[col])}, {name} {_pct(best[col])} ({pooled_over}) "
                             f"at {cost} accuracy.")
    else:
        best = None
        sentences.append(f"Under {attack}, every quantized recipe loses more than "
                         f"{100 * max_accuracy_loss:g} pt of accuracy; FP32 reaches {what} {_pct(fp[col])} "
                         f"({pooled_over}).")
    lowest = quantized.sort_values([col, "test_acc"], ascending=[True, False], kind="stable").iloc[0]
    if best is None or (lowest["label"] != best["label"] and lowest[col] < best[col]):
        sentences.append(f"The lowest leak, {_pct(lowest[col])}, comes from "
                         f"{recipe_name(lowest['method'], lowest['bits'], lowest['last_layer_bits'])} at "
                         f"{_points(lowest['test_acc'] - fp['test_acc'])} accuracy.")
    if indicative:
        n = int(table["n_nonmembers"].min())
        sentences.append(f"These figures are indicative only: {n} pooled non-members give "
                         f"{n * fpr:.1f} expected false positives at {100 * fpr:g}% FPR (fewer than 10).")
    return " ".join(sentences)


def headline(table: pd.DataFrame) -> pd.DataFrame:
    """The report's table from a `leakage_table`: pooled TPRs with their interval, and the
    per-target mean ± std beside them (⚠ where a target's non-members cannot resolve the FPR)."""
    out = pd.DataFrame({
        "recipe": table["label"],
        "last layer": table["last_layer_bits"].map(lambda b: "same" if pd.isna(b) else f"{b:g}-bit"),
        "test acc %": mean_std_cells(table, "test_acc"),
    })
    for x in LOW_FPRS:
        c = f"tpr@{x:g}"
        pooled_cells = [f"{100 * v:.2f}" for v in table[c]]
        if c + "_ci_low" in table:
            pooled_cells = [f"{p} [{100 * lo:.2f}, {100 * hi:.2f}]"
                            for p, lo, hi in zip(pooled_cells, table[c + "_ci_low"], table[c + "_ci_high"])]
        flag = " ⚠" if too_few_nonmembers(int(table["n_nonmembers"].min()), x) else ""
        out[f"TPR@{100 * x:g}%FPR % pooled"] = [p + flag for p in pooled_cells]
        thin = " ⚠" if too_few_nonmembers(int(table["n_nonmembers_per_target"].min()), x) else ""
        out[f"TPR@{100 * x:g}%FPR % per target"] = [
            f"{100 * m:.2f} ± {100 * s:.2f}{thin}" for m, s in zip(table[c + "_target_mean"], table[c + "_target_std"])]
    out["AUC % pooled"] = [f"{100 * v:.1f}" for v in table["auc"]]
    out["targets"] = table["targets"].to_numpy()
    out["non-members pooled"] = table["n_nonmembers"].to_numpy()
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


def _nearby(points: list[tuple[float, float]], names: list[str], dx: float = 1.0, dlog: float = 0.05):
    """Group (accuracy %, TPR) points that would overlap on the plot: one label per group."""
    groups: list[tuple[tuple[float, float], list[str]]] = []
    for (x, y), name in zip(points, names):
        for (gx, gy), members in groups:
            if abs(x - gx) < dx and abs(np.log10(y) - np.log10(gy)) < dlog:
                members.append(name)
                break
        else:
            groups.append(((x, y), [name]))
    return groups


# ---------------------------------------------------------------- figures (each returns a Figure)

BIT_COLOURS = {8: "#1b9e77", 6: "#66a61e", 5: "#a6761d", 4: "#7570b3", 3: "#e6ab02", 2: "#d95f02",
               1.58: "#e7298a"}  # one colour per bit width, the same in every figure
MAX_LEGEND_ENTRIES = 10


def _method_colours(methods) -> dict:
    import seaborn as sns

    order = [m for m in METHOD_ORDER if m in set(methods)] + sorted(set(methods) - set(METHOD_ORDER))
    return dict(zip(order, sns.color_palette("colorblind", len(order))))


def _bits_axis(ax, bits: list[float]) -> dict:
    """Bit widths as evenly spaced categories, most precise on the left; returns bits -> x."""
    ax.set_xticks(range(len(bits)), [f"{b:g}" for b in bits])
    ax.set_xlim(-0.4, len(bits) - 0.6)
    ax.set_xlabel("weight bit width (1.58 = ternary)")
    return {b: k for k, b in enumerate(bits)}


def leakage_by_bits(df: pd.DataFrame, arrays: dict, attack: str = "online", threat_model: str = "fp_shadows",
                    table: pd.DataFrame | None = None):
    """The headline: leakage (pooled TPR at the lowest resolvable FPR) and test accuracy against
    bit width, one line per method (dashed: 8-bit last layer), FP32 as a black line in a grey band,
    95% intervals as shaded bands around the solid lines. `table` (a `leakage_table`) is recomputed from the results when omitted."""
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    table = leakage_table(df, arrays, attack, threat_model) if table is None else table
    fpr, indicative = headline_fpr(table)
    col = f"tpr@{fpr:g}"
    fp = table[table["method"] == "fp32"].iloc[0]
    quantized = table[table["method"] != "fp32"]
    bits = sorted(quantized["bits"].unique(), reverse=True)
    colours = _method_colours(quantized["method"])
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2))
    panels = [(axes[0], col, f"leakage: TPR at {100 * fpr:g}% FPR (%), pooled"),
              (axes[1], "test_acc", "utility: test accuracy (%)")]
    for ax, metric, ylabel in panels:
        x_of = _bits_axis(ax, bits)
        low, high = (metric + "_ci_low", metric + "_ci_high")
        if low in fp:
            ax.axhspan(100 * fp[low], 100 * fp[high], color="grey", alpha=0.2, lw=0)
        ax.axhline(100 * fp[metric], color="black", lw=1.2)
        for (method, last), line in quantized.groupby(["method", "last_layer_bits"], dropna=False, sort=False):
            line = line.sort_values("bits", ascending=False)
            x = [x_of[b] for b in line["bits"]]
            dashed = not pd.isna(last)
            ax.plot(x, 100 * line[metric], marker="o", ls="--" if dashed else "-", color=colours[method],
                    mfc="white" if dashed else colours[method], lw=1.8)
            if low in line and not dashed:  # one band per method: eight overlapping bands hide the lines
                ax.fill_between(x, 100 * line[low], 100 * line[high], color=colours[method], alpha=0.12, lw=0)
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
    axes[0].axhline(100 * fpr, color="grey", ls=":", lw=1)  # a random guess has TPR = FPR
    axes[0].set_ylim(bottom=0)
    handles = [Line2D([], [], color=c, marker="o", lw=1.8, label=METHOD_NAMES.get(m, m)) for m, c in colours.items()]
    if quantized["last_layer_bits"].notna().any():
        handles.append(Line2D([], [], color="grey", ls="--", marker="o", mfc="white", label="8-bit last layer"
                              if set(quantized["last_layer_bits"].dropna()) == {8} else "decoupled last layer"))
    handles += [Patch(color="grey", alpha=0.35, label="FP32 (line) and its 95% interval"),
                Line2D([], [], color="grey", ls=":", label="chance (TPR = FPR)")]
    # below both panels: inside, it would hide the FP32 band and the 4-bit points it is compared with
    fig.legend(handles=handles, fontsize=8, loc="upper center", ncol=min(len(handles), 4), frameon=False,
               bbox_to_anchor=(0.5, 0.0))
    note = " — indicative: too few non-members for this FPR" if indicative else ""
    fig.suptitle(f"{ATTACK_LABELS.get(attack, attack)}, {THREAT_LABELS.get(threat_model, threat_model)}: "
                 f"fewer bits, less leakage?{note}", fontsize=11)
    fig.text(0.5, -0.13, f"pooled ROC over {int(fp['targets'])} targets ({int(fp['n_nonmembers'])} non-members); "
             "bands: 95% intervals from resampling targets (solid lines)", ha="center", fontsize=8, color="dimgrey")
    fig.tight_layout()
    return fig


def privacy_utility_plot(summary_df: pd.DataFrame, attack: str, reference: pd.DataFrame | None = None):
    """The paper's Fig. 1 on a readable scale: accuracy lost vs FP32 (x, log) against
    TPR@0.1%FPR (y, log), mean ± std over targets; colour = method, marker = bits, open marker =
    8-bit last layer. The paper's points (grey crosses) are drawn against the paper's FP32."""
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    rows = summary_df[(summary_df["attack"] == attack) & (summary_df["threat_model"] == "fp_shadows")]
    fp = rows[rows["method"] == "fp32"]
    quantized = rows[rows["method"] != "fp32"]
    fp_acc = float(fp["test_acc"].iloc[0]) if len(fp) else float(quantized["test_acc"].max())
    fig, ax = plt.subplots(figsize=(8.4, 4.8))
    has_ref = reference is not None and len(reference) > 0
    positive = pd.concat([rows["tpr@0.001"], reference["tpr_at_0.1pct_fpr"] if has_ref else pd.Series(dtype=float)])
    positive = positive[positive > 0]
    floor = 0.5 * (positive.min() if len(positive) else 1e-3)  # where a zero TPR is drawn on the log axis
    min_loss = 0.05  # pt: a recipe as accurate as FP32 (or better) is drawn at this loss on the log axis
    colours = _method_colours(quantized["method"])
    markers = {8: "o", 6: "p", 5: "h", 4: "s", 3: "P", 2: "D", 1.58: "v"}
    if len(fp):
        y = max(float(fp["tpr@0.001"].iloc[0]), floor)
        ax.axhline(100 * y, color="black", lw=1.2, label="FP32")
        ax.axhspan(100 * max(y - fp["tpr@0.001_std"].iloc[0], floor), 100 * (y + fp["tpr@0.001_std"].iloc[0]),
                   color="grey", alpha=0.15, lw=0)
    for _, r in quantized.iterrows():
        colour = colours[r["method"]]
        ax.errorbar(max(100 * (fp_acc - r["test_acc"]), min_loss), 100 * max(r["tpr@0.001"], floor),
                    yerr=100 * r["tpr@0.001_std"], fmt=markers.get(r["bits"], "o"), ms=8, capsize=3,
                    color=colour, mfc="white" if not pd.isna(r["last_layer_bits"]) else colour)
    if has_ref:
        ref_fp = reference.loc[reference["method"] == "fp32", "test_acc_pct"]
        ref_x = (float(ref_fp.iloc[0]) - reference["test_acc_pct"]).clip(lower=min_loss) if len(ref_fp) else \
            pd.Series(min_loss, index=reference.index)
        ref_y = reference["tpr_at_0.1pct_fpr"].clip(lower=floor)
        ax.scatter(ref_x, 100 * ref_y, marker="x", color="grey", label="the paper's Fig. 1")
        names = ["FP32" if m == "fp32" else f"{m} {b:g}b" for m, b in zip(reference["method"], reference["bits"])]
        for (x, y), group in _nearby(list(zip(np.log10(ref_x), ref_y)), names, dx=0.05):
            ax.annotate(", ".join(group), (10 ** x, 100 * y), fontsize=6, color="grey", xytext=(4, 3),
                        textcoords="offset points", ha="left")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(f"accuracy lost vs FP32 (percentage points, log scale; ≤ {min_loss:g} drawn at {min_loss:g})")
    ax.set_ylabel("TPR at 0.1% FPR (%), log scale")
    ax.set_title(f"Privacy vs. utility ({ATTACK_LABELS[attack]}), mean ± std over targets", fontsize=10)
    handles = [Line2D([], [], ls="", marker="o", color=c, label=METHOD_NAMES.get(m, m)) for m, c in colours.items()]
    handles += [Line2D([], [], ls="", marker=markers.get(b, "o"), color="dimgrey", label=f"{b:g}-bit")
                for b in sorted(quantized["bits"].unique(), reverse=True)]
    if quantized["last_layer_bits"].notna().any():
        handles.append(Line2D([], [], ls="", marker="o", color="dimgrey", mfc="white", label="8-bit last layer"))
    extra, extra_labels = ax.get_legend_handles_labels()
    ax.legend(handles=handles + extra, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    ax.grid(True, which="both", alpha=0.3)
    if has_ref:
        fig.text(0.01, -0.02, PAPER_VARIANT, fontsize=7, color="dimgrey", ha="left", va="top", wrap=True)
    fig.tight_layout()
    return fig


# Which variant of the authors' protocol the published points are (the paper presets run both sides).
PAPER_VARIANT = ("The paper's points (grey x) come from the authors' code: OBC is followed by BN re-tuning on the "
                 "whole pool; with --auto_last_8bit every point below 2 bits has an 8-bit last layer (compare with "
                 "the open markers); BRECQ is per-tensor unless --use_config, ptqlib's per-channel.")


def roc_panels(df: pd.DataFrame, arrays: dict, attack: str = "online", threat_model: str = "fp_shadows"):
    """Pooled log-log ROC curves, one panel per method: a colour per bit width (dashed: 8-bit
    last layer), FP32 in black in every panel, the chance diagonal in grey."""
    import matplotlib.pyplot as plt

    rows = df[(df["attack"] == attack) & (df["threat_model"] == threat_model)]
    methods = [m for m in dict.fromkeys(_recipe_order(rows.drop_duplicates("label"))["method"]) if m != "fp32"]
    fig, axes = plt.subplots(1, len(methods), figsize=(4.2 * len(methods), 4.0), squeeze=False, sharey=True)
    fp_curve = None
    n = 0
    for label, group in rows.groupby("label", sort=False):
        idx = group.index.to_numpy()
        curve = stats.pooled_roc(arrays["scores"][idx], arrays["members"][idx])
        n = max(n, int((~arrays["members"][idx]).sum()))
        if group["method"].iloc[0] == "fp32":
            fp_curve = curve
            continue
        r = group.iloc[0]
        ax = axes[0][methods.index(r["method"])]
        decoupled = not pd.isna(r["last_layer_bits"])
        ax.plot(*curve, color=BIT_COLOURS.get(r["bits"]), ls="--" if decoupled else "-", lw=1.5,
                label=f"{r['bits']:g}-bit" + (f", {r['last_layer_bits']:g}-bit last" if decoupled else ""))
    for ax, method in zip(axes[0], methods):
        if fp_curve is not None:
            ax.plot(*fp_curve, color="black", lw=2, label="FP32", zorder=0)
        ax.plot([1e-6, 1], [1e-6, 1], ls=":", color="grey", lw=1, label="chance")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlim(0.5 / n, 1)
        ax.set_ylim(0.5 / n, 1)
        ax.set_xlabel("false positive rate")
        ax.set_title(METHOD_NAMES.get(method, method), fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    axes[0][0].set_ylabel("true positive rate")
    fig.suptitle(f"ROC, {ATTACK_LABELS.get(attack, attack)}, pooled over targets ({n} non-members)", fontsize=10)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------- beyond the paper

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
    from .controls import match_controls

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


def controls_plot(results: pd.DataFrame, arrays: dict, beyond: pd.DataFrame, beyond_arrays: dict,
                  attack: str = "online"):
    """Leakage (pooled TPR@1%FPR) against test accuracy: quantized recipes (colour = method) and the
    controls (open markers); a thin line joins each recipe to its accuracy-matched controls."""
    import matplotlib.pyplot as plt

    m = FRONTIER_METRIC
    table = controls_table(results, arrays, beyond, beyond_arrays, attack)
    quantized = leakage_table(results, arrays, attack, "fp_shadows", 0)
    controls = leakage_table(beyond[beyond["method"].isin(["noise", "epochs"])], beyond_arrays, attack,
                             "fp_shadows", 0)
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    colours = _method_colours(quantized.loc[quantized["method"] != "fp32", "method"])
    for _, r in quantized.iterrows():
        if r["method"] == "fp32":
            ax.scatter(100 * r["test_acc"], 100 * r[m], marker="*", s=160, color="black", zorder=3, label="FP32")
        elif not re.search(ACT_LABEL, r["label"]):
            ax.scatter(100 * r["test_acc"], 100 * r[m], color=colours[r["method"]], s=40, zorder=3)
            ax.annotate(r["label"], (100 * r["test_acc"], 100 * r[m]), fontsize=6, xytext=(3, 3),
                        textcoords="offset points")
    for family, marker in (("noise", "o"), ("epochs", "^")):
        rows = controls[controls["method"] == family]
        ax.scatter(100 * rows["test_acc"], 100 * rows[m], marker=marker, facecolors="white", edgecolors="dimgrey",
                   s=40, zorder=2, label=f"control: {FAMILY_NAMES[family]}")
    by_label = {r["label"]: r for _, r in pd.concat([quantized, controls]).iterrows()}
    for _, r in table.iterrows():
        a, b = by_label[r["recipe"]], by_label[r["control"]]
        ax.plot([100 * a["test_acc"], 100 * b["test_acc"]], [100 * a[m], 100 * b[m]], color="grey", lw=0.6, zorder=1)
    for method, colour in colours.items():
        ax.scatter([], [], color=colour, label=METHOD_NAMES.get(method, method))
    return _leakage_vs_accuracy_axes(
        fig, ax, f"Quantization vs accuracy-matched controls ({ATTACK_LABELS.get(attack, attack)}, FP shadows)")


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


def frontier_plot(results: pd.DataFrame, arrays: dict, beyond: pd.DataFrame, beyond_arrays: dict,
                  attack: str = "online"):
    """Leakage (pooled TPR@1%FPR) vs test accuracy: PTQ recipes, DP-SGD (epsilon beside each point)
    and pruning, each defence against its own kind of shadows; FP32 as a star."""
    import matplotlib.pyplot as plt

    m = FRONTIER_METRIC
    table = frontier_table(results, arrays, beyond, beyond_arrays, attack, n_boot=0)
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    ptq = table[table["family"] == "ptq"]
    fp = ptq[ptq["method"] == "fp32"]
    ax.scatter(100 * fp["test_acc"], 100 * fp[m], marker="*", s=160, color="black", label="FP32", zorder=3)
    q = ptq[ptq["method"] != "fp32"]
    ax.scatter(100 * q["test_acc"], 100 * q[m], color="tab:blue", s=30, label="PTQ recipes (FP shadows)")
    styles = {"dp": ("s", "tab:red"), "prune": ("D", "tab:green")}
    for family, (marker, colour) in styles.items():
        rows = table[(table["family"] == family) & (table["threat_model"] == "matched_shadows")]
        if rows.empty:
            continue
        rows = rows.sort_values("test_acc")
        ax.plot(100 * rows["test_acc"], 100 * rows[m], marker=marker, color=colour, lw=1,
                label=f"{FAMILY_NAMES[family]} (same-defence shadows)")
        for _, r in rows.iterrows():
            note = f"ε={r['epsilon']:.1f}" if family == "dp" and pd.notna(r.get("epsilon")) else r["label"]
            ax.annotate(note, (100 * r["test_acc"], 100 * r[m]), fontsize=6, xytext=(3, -8), textcoords="offset points")
    ax.axhline(100 * 0.01, color="grey", ls=":", lw=1, label="chance (TPR = FPR)")
    return _leakage_vs_accuracy_axes(
        fig, ax, f"Privacy-utility frontier: PTQ vs DP-SGD vs pruning ({ATTACK_LABELS.get(attack, attack)})")


def _leakage_vs_accuracy_axes(fig, ax, title: str):
    """Labels, grid and legend shared by the pooled-leakage vs accuracy figures."""
    ax.set_xlabel("test accuracy (%), mean over targets")
    ax.set_ylabel("TPR at 1% FPR (%), pooled over targets")
    ax.set_title(title, fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    return fig


def per_example_plot(view: pd.DataFrame, labels: list[str] | None = None):
    """FP32's most vulnerable members: atypicality (x) against their LiRA score under each recipe (y),
    one panel per recipe; filled = still detected at the same FPR, grey dots = the FP32 score."""
    import matplotlib.pyplot as plt

    labels = labels or [label for label in dict.fromkeys(view["label"]) if label != "fp32"][:6]
    fig, axes = plt.subplots(1, len(labels), figsize=(3.2 * len(labels), 3.4), sharey=True, squeeze=False)
    for ax, label in zip(axes[0], labels):
        g = view[view["label"] == label]
        ax.scatter(g["gap_z"], g["fp32_score"], s=8, color="lightgrey", label="FP32")
        hit = g["detected"].to_numpy(dtype=bool)
        ax.scatter(g["gap_z"][hit], g["score"][hit], s=12, color="tab:red", label="still detected")
        ax.scatter(g["gap_z"][~hit], g["score"][~hit], s=12, facecolors="white", edgecolors="tab:red",
                   label="no longer detected")
        ax.set_title(label, fontsize=9)
        ax.set_yscale("symlog")  # LiRA log-likelihood ratios span orders of magnitude, both signs
        ax.set_xlabel("atypicality (IN-OUT gap, z)")
        ax.grid(True, alpha=0.3)
    axes[0][0].set_ylabel("LiRA score (online, symlog)")
    axes[0][0].legend(fontsize=6)
    fig.suptitle("FP32's most vulnerable members under each recipe", fontsize=10)
    fig.tight_layout()
    return fig
