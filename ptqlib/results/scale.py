"""Model scale (the paper's open question 4): PTQ's leakage reduction against model size.

The study is repeated at several widths of one architecture (`scale_widths`); for each width and recipe
the reduction 1 - TPR(recipe) / TPR(FP32) of the pooled ROC, with a 95% interval that resamples whole
models jointly for the recipe and FP32 (they share the models, so the draw is paired).
"""
from __future__ import annotations

import matplotlib.pyplot as plt
from matplotlib import ticker
import numpy as np
import pandas as pd

from ptqlib.results import stats, tables
from ptqlib.results.figures import METHOD_COLOURS

FPRS = (0.001, 0.01)
MARKERS = {8: "o", 4: "s", 2: "D", 1.58: "v"}


def reduction(scores: np.ndarray, members: np.ndarray, fp_scores: np.ndarray, fp_members: np.ndarray,
              n_boot: int, seed: int = 0) -> dict:
    """cut@x = 1 - pooled TPR(recipe)/TPR(FP32) at each FPR x, with its 95% percentile interval from
    resampling models (rows; row i of the recipe and of FP32 come from the same model)."""
    def cut(pick):
        q = stats.pooled_low_fpr_tprs(scores[pick], members[pick])
        f = stats.pooled_low_fpr_tprs(fp_scores[pick], fp_members[pick])
        return {x: 1 - q[f"tpr@{x:g}"] / f[f"tpr@{x:g}"] if f[f"tpr@{x:g}"] > 0 else np.nan for x in FPRS}

    k = len(scores)
    point = cut(np.arange(k))
    draws = [cut(pick) for pick in np.random.default_rng(seed).integers(0, k, size=(n_boot, k))]
    out = {}
    for x in FPRS:
        values = np.array([d[x] for d in draws], dtype=float)
        lo, hi = np.nanquantile(values, [0.025, 0.975]) if np.isfinite(values).any() else (np.nan, np.nan)
        out.update({f"cut@{x:g}": point[x], f"cut@{x:g}_low": lo, f"cut@{x:g}_high": hi})
    return out


def width_rows(results: pd.DataFrame, arrays: dict, width: float, weights: int, attack: str, threat_model: str,
               n_boot: int) -> pd.DataFrame:
    """One row per recipe at one width: accuracy, pooled TPRs with intervals, and (quantized recipes)
    the reduction against FP32 paired by model."""
    table = tables.leakage_table(results, arrays, attack, threat_model, n_boot)
    rows = results[(results["attack"] == attack) & (results["threat_model"] == threat_model)]
    fp_idx = rows.index[rows["label"] == "fp32"].to_numpy()
    fp_models = rows.loc[fp_idx, "target"].to_numpy()
    out = []
    for _, r in table.iterrows():
        row = {"width": width, "weights": weights, "label": r["label"], "method": r["method"], "bits": r["bits"],
               "models": int(r["targets"]), "test_acc": r["test_acc"], "test_acc_std": r["test_acc_std"],
               **{f"tpr@{x:g}": r[f"tpr@{x:g}"] for x in FPRS},
               **{f"tpr@{x:g}_{e}": r[f"tpr@{x:g}_ci_{e}"] for x in FPRS for e in ("low", "high")}}
        if r["label"] != "fp32":
            idx = rows.index[rows["label"] == r["label"]].to_numpy()
            by_model = dict(zip(rows.loc[idx, "target"].to_numpy(), idx))
            shared = [t for t in fp_models if t in by_model]  # a recipe run on fewer models is paired on those
            fp_rows = fp_idx[np.isin(fp_models, shared)]
            order = [by_model[t] for t in shared]
            row.update(reduction(arrays["scores"][order], arrays["members"][order], arrays["scores"][fp_rows],
                                 arrays["members"][fp_rows], n_boot))
        out.append(row)
    return pd.DataFrame(out)


def display_table(table: pd.DataFrame) -> pd.DataFrame:
    """The scale table as a reader sees it: percentages with their intervals, one row per width and recipe."""
    def pct(r, col, digits):
        return f"{100 * r[col]:.{digits}f} [{100 * r[col + '_low']:.{digits}f}, {100 * r[col + '_high']:.{digits}f}]"

    out = []
    for _, r in table.iterrows():
        quantized = r["label"] != "fp32"
        out.append({"width": f"{r['width']:g}", "weights": f"{int(r['weights']):,}",
                    "recipe": tables.DISPLAY_NAMES.get(r["method"], r["method"]) + (f" {r['bits']:g}-bit" if quantized else ""),
                    "models": int(r["models"]), "test acc %": f"{100 * r['test_acc']:.1f} ± {100 * r['test_acc_std']:.1f}",
                    "TPR@0.1%FPR %": pct(r, "tpr@0.001", 2), "TPR@1%FPR %": pct(r, "tpr@0.01", 2),
                    "cut@0.1%FPR %": pct(r, "cut@0.001", 1) if quantized else "",
                    "cut@1%FPR %": pct(r, "cut@0.01", 1) if quantized else ""})
    return pd.DataFrame(out)


def figure(table: pd.DataFrame, title: str = ""):
    """Leakage reduction against model size, one line per recipe, at 0.1% and 1% FPR, bars = 95% intervals."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    quantized = table[table["label"] != "fp32"]
    widths = " / ".join(f"{w:g}" for w in sorted(table["width"].unique()))
    for ax, x in zip(axes, FPRS):
        for _, g in quantized.groupby("label", sort=False):
            g = g.sort_values("weights")
            m, b = g["method"].iloc[0], g["bits"].iloc[0]
            cut, low, high = (100 * g[f"cut@{x:g}{s}"] for s in ("", "_low", "_high"))
            ax.errorbar(g["weights"], cut, yerr=[cut - low, high - cut], marker=MARKERS.get(b, "o"),
                        color=METHOD_COLOURS.get(m), capsize=3, lw=1.4,
                        label=f"{tables.DISPLAY_NAMES.get(m, m)} {b:g}-bit")
        ax.axhline(0, color="black", lw=1)
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v / 1e3:g}k"))
        ax.xaxis.set_minor_formatter(ticker.NullFormatter())
        ax.set_xlabel(f"weights (width {widths})")
        ax.set_title(f"at {100 * x:g}% FPR", fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("leakage reduction vs FP32 (%)\n1 − TPR(recipe) / TPR(FP32)")
    axes[1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig
