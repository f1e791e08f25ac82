"""Figures of the study, each drawn from the stored attack results by one function: leakage and
accuracy against bit width (the headline), privacy vs utility recipe by recipe, ROC panels per
method, and the extras' figures (controls, frontier, per-example view)."""
from __future__ import annotations

import re

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib import ticker
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from ptqlib.attacks.lira import ATTACK_LABELS
from ptqlib.results import stats
from ptqlib.results.finding import headline_fpr
from ptqlib.results.tables import (ACT_LABEL, DISPLAY_NAMES, FAMILY_NAMES, FRONTIER_METRIC, METHOD_ORDER,
                                   THREAT_LABELS, _recipe_order, controls_table, frontier_table, leakage_table)


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

MAX_LEGEND_ENTRIES = 10

# One colour per method in every figure of every report, whichever methods a study runs (Okabe-Ito,
# colour-blind safe; AdaRound and OBC were both orange when the palette followed the methods present).
METHOD_COLOURS = {"fp32": "#000000", "rtn": "#0072B2", "adaround": "#009E73", "brecq": "#CC79A7",
                  "obc": "#D55E00", "gptq": "#E69F00"}
SPARE_COLOURS = ("#56B4E9", "#F0E442", "#999999")  # for a method outside METHOD_COLOURS


def _method_colours(methods) -> dict:
    """method -> its colour, in METHOD_ORDER; the same method always gets the same colour."""
    order = [m for m in METHOD_ORDER if m in set(methods)] + sorted(set(methods) - set(METHOD_ORDER))
    spare = iter(SPARE_COLOURS * len(order))
    return {m: METHOD_COLOURS[m] if m in METHOD_COLOURS else next(spare) for m in order}


def _shade(colour, k: int, n: int):
    """The k-th of n shades of `colour`, darkest first (bit widths within one method's panel)."""
    rgb = np.array(matplotlib.colors.to_rgb(colour))
    return tuple(rgb + (1 - rgb) * (0.6 * k / max(n - 1, 1)))


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
    handles = [Line2D([], [], color=c, marker="o", lw=1.8, label=DISPLAY_NAMES.get(m, m)) for m, c in colours.items()]
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
    bands = ("bands: 95% intervals from resampling targets (solid lines)" if col + "_ci_low" in table  # n_boot > 0
             else "accuracy bands: 95% intervals over targets (solid lines); leakage without intervals (n_boot=0)")
    fig.text(0.5, -0.13, f"pooled ROC over {int(fp['targets'])} targets ({int(fp['n_nonmembers'])} non-members); "
             + bands, ha="center", fontsize=8, color="dimgrey")
    fig.tight_layout()
    return fig

def privacy_utility_plot(table: pd.DataFrame, reference: pd.DataFrame | None = None):
    """The paper's Fig. 1 on a readable scale, from a `leakage_table` (the pooled figures the report
    trusts): accuracy lost vs FP32 (x, log) against the pooled TPR at the lowest FPR the pooled
    non-members resolve (y, log) with its 95% interval; colour = method, marker = bits, open marker
    = 8-bit last layer. The paper's points (grey crosses, TPR at 0.1% FPR against the paper's FP32)
    are drawn only when the y axis is that metric."""

    fpr, indicative = headline_fpr(table)
    col = f"tpr@{fpr:g}"
    fp = table[table["method"] == "fp32"]
    quantized = table[table["method"] != "fp32"]
    fp_acc = float(fp["test_acc"].iloc[0]) if len(fp) else float(quantized["test_acc"].max())
    fig, ax = plt.subplots(figsize=(8.4, 4.8))
    has_ref = reference is not None and len(reference) > 0 and fpr == 0.001
    positive = pd.concat([table[col], reference["tpr_at_0.1pct_fpr"] if has_ref else pd.Series(dtype=float)])
    positive = positive[positive > 0]
    floor = 0.5 * (positive.min() if len(positive) else fpr / 10)  # where a zero TPR is drawn on the log axis
    min_loss = 0.05  # pt: a recipe as accurate as FP32 (or better) is drawn at this loss on the log axis
    colours = _method_colours(quantized["method"])
    markers = {8: "o", 6: "p", 5: "h", 4: "s", 3: "P", 2: "D", 1.58: "v"}
    low, high = col + "_ci_low", col + "_ci_high"
    if len(fp):
        r = fp.iloc[0]
        ax.axhline(100 * max(r[col], floor), color="black", lw=1.2, label="FP32")
        if low in fp:
            ax.axhspan(100 * max(r[low], floor), 100 * max(r[high], floor), color="grey", alpha=0.15, lw=0)
    for _, r in quantized.iterrows():
        y = max(r[col], floor)
        yerr = ([[100 * (y - max(r[low], floor))], [100 * (max(r[high], floor) - y)]] if low in r else None)
        ax.errorbar(max(100 * (fp_acc - r["test_acc"]), min_loss), 100 * y, yerr=yerr,
                    fmt=markers.get(r["bits"], "o"), ms=8, capsize=3, color=colours[r["method"]],
                    mfc="white" if not pd.isna(r["last_layer_bits"]) else colours[r["method"]])
    ax.axhline(100 * fpr, color="grey", ls=":", lw=1, label="chance (TPR = FPR)")
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
    for axis in (ax.xaxis, ax.yaxis):
        plain_log_ticks(axis)
    ax.set_xlabel(f"accuracy lost vs FP32 (percentage points, log scale; ≤ {min_loss:g} drawn at {min_loss:g})")
    ax.set_ylabel(f"TPR at {100 * fpr:g}% FPR (%), pooled, log scale")
    attack = ATTACK_LABELS.get(table["attack"].iloc[0], table["attack"].iloc[0]) if "attack" in table else ""
    threat = THREAT_LABELS.get(table["threat_model"].iloc[0], "") if "threat_model" in table else ""
    bars = "bars: 95% intervals from resampling models" if low in table else "no intervals (n_boot = 0)"
    note = "; indicative: too few non-members" if indicative else ""
    ax.set_title(f"Privacy vs. utility: {attack}, {threat}; pooled over models, {bars}{note}", fontsize=9)
    handles = [Line2D([], [], ls="", marker="o", color=c, label=DISPLAY_NAMES.get(m, m)) for m, c in colours.items()]
    handles += [Line2D([], [], ls="", marker=markers.get(b, "o"), color="dimgrey", label=f"{b:g}-bit")
                for b in sorted(quantized["bits"].unique(), reverse=True)]
    if quantized["last_layer_bits"].notna().any():
        handles.append(Line2D([], [], ls="", marker="o", color="dimgrey", mfc="white", label="8-bit last layer"))
    extra, extra_labels = ax.get_legend_handles_labels()
    ax.legend(handles=handles + extra, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    ax.grid(True, which="both", alpha=0.3)
    if has_ref:
        fig.text(0.01, -0.02, PAPER_VARIANT, fontsize=7, color="dimgrey", ha="left", va="top", wrap=True)
    fig.tight_layout()
    return fig

def plain_log_ticks(axis) -> None:
    """Ticks at 1, 2 and 5 times each power of ten, labelled as plain numbers (0.05, 2, 10), not 6×10⁰."""
    axis.set_major_locator(ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(ticker.NullFormatter())


# Which variant of the authors' protocol the published points are (the paper presets run both sides).
PAPER_VARIANT = ("The paper's points (grey x) come from the authors' code: OBC is followed by BN re-tuning on the "
                 "whole pool; with --auto_last_8bit every point below 2 bits has an 8-bit last layer (compare with "
                 "the open markers); BRECQ is per-tensor unless --use_config, ptqlib's per-channel.")

def roc_panels(df: pd.DataFrame, arrays: dict, attack: str = "online", threat_model: str = "fp_shadows"):
    """Pooled log-log ROC curves, one panel per method in the method's colour (darkest = most bits;
    dashed: 8-bit last layer), FP32 in black in every panel, the chance diagonal in grey."""

    rows = df[(df["attack"] == attack) & (df["threat_model"] == threat_model)]
    methods = [m for m in dict.fromkeys(_recipe_order(rows.drop_duplicates("label"))["method"]) if m != "fp32"]
    fig, axes = plt.subplots(1, len(methods), figsize=(4.2 * len(methods), 4.0), squeeze=False, sharey=True)
    fp_curve = None
    n = 0
    bits = sorted(rows.loc[rows["method"] != "fp32", "bits"].unique(), reverse=True)
    colours = _method_colours(methods)
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
        ax.plot(*curve, color=_shade(colours[r["method"]], bits.index(r["bits"]), len(bits)),
                ls="--" if decoupled else "-", lw=1.8,
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
        ax.set_title(DISPLAY_NAMES.get(method, method), fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].set_ylabel("true positive rate")
    # one legend for every panel, below them: the bit widths as the shades each panel uses, in grey
    handles = [Line2D([], [], color=_shade("#404040", k, len(bits)), lw=1.8, label=f"{b:g}-bit")
               for k, b in enumerate(bits)]
    if rows["last_layer_bits"].notna().any():
        handles.append(Line2D([], [], color="grey", ls="--", lw=1.8, label="8-bit last layer"))
    handles += [Line2D([], [], color="black", lw=2, label="FP32"), Line2D([], [], color="grey", ls=":", label="chance")]
    fig.legend(handles=handles, fontsize=9, loc="upper center", ncol=len(handles), frameon=False,
               bbox_to_anchor=(0.5, 0.0))
    fig.suptitle(f"ROC, {ATTACK_LABELS.get(attack, attack)}, pooled over models (up to {n} non-members per curve); "
                 "each panel in its method's colour, darker = more bits", fontsize=10)
    fig.tight_layout()
    return fig

def controls_plot(results: pd.DataFrame, arrays: dict, beyond: pd.DataFrame, beyond_arrays: dict,
                  attack: str = "online"):
    """Leakage (pooled TPR@1%FPR) against test accuracy: quantized recipes (colour = method) and the
    controls (open markers); a thin line joins each recipe to its accuracy-matched controls."""

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
        ax.scatter([], [], color=colour, label=DISPLAY_NAMES.get(method, method))
    return _leakage_vs_accuracy_axes(
        fig, ax, f"Quantization vs accuracy-matched controls ({ATTACK_LABELS.get(attack, attack)}, FP shadows)")

def frontier_plot(results: pd.DataFrame, arrays: dict, beyond: pd.DataFrame, beyond_arrays: dict,
                  attack: str = "online"):
    """Leakage (pooled TPR@1%FPR) vs test accuracy: PTQ recipes, DP-SGD (epsilon beside each point)
    and pruning, each defence against its own kind of shadows; FP32 as a star."""

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
