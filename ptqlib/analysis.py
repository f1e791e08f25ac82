"""Tables and figures of the study, each recomputable from the stored attack results."""
from __future__ import annotations

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
                 "leave_one_out": "leave-one-out"}


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


def headline(summary_df: pd.DataFrame, attack: str) -> pd.DataFrame:
    """The README's table: one row per recipe for one attack, the paper's threat model."""
    return formatted(summary_df, attack, "fp_shadows").drop(columns=["attack", "threat model"])


def threat_model_table(summary_df: pd.DataFrame, attack: str, metric: str = "tpr@0.01") -> pd.DataFrame:
    """One row per recipe, one column per threat model: 'mean ± std' of `metric` in %."""
    rows = summary_df[summary_df["attack"] == attack]
    cells = rows.assign(cell=mean_std_cells(rows, metric))
    table = cells.pivot_table(index="label", columns="threat_model", values="cell", aggfunc="first", sort=False)
    table = table[[t for t in THREAT_LABELS if t in table.columns]].rename(columns=THREAT_LABELS)
    table.columns.name = f"{metric} (%), {ATTACK_LABELS[attack]}"
    return table


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


def privacy_utility_plot(summary_df: pd.DataFrame, attack: str, reference: pd.DataFrame | None = None,
                         ax=None):
    """The paper's Fig. 1: test accuracy (x) vs TPR@0.1%FPR (y, log), one marker per recipe."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    rows = summary_df[(summary_df["attack"] == attack) & (summary_df["threat_model"] == "fp_shadows")].copy()
    if ax is None:
        _, ax = plt.subplots(figsize=(8.4, 4.8))
    has_ref = reference is not None and len(reference) > 0
    positive = pd.concat([rows["tpr@0.001"], reference["tpr_at_0.1pct_fpr"] if has_ref else pd.Series(dtype=float)])
    positive = positive[positive > 0]
    floor = 0.5 * (positive.min() if len(positive) else 1e-3)  # where a zero TPR is drawn on the log axis
    methods = [m for m in rows["method"].unique() if m != "fp32"]
    palette = dict(zip(methods, sns.color_palette("colorblind", len(methods))))
    markers = {8: "o", 4: "s", 3: "P", 2: "D", 1.58: "v", 5: "h", 6: "p", 7: "X"}
    for _, r in rows.iterrows():
        y = max(r["tpr@0.001"], floor)
        if r["method"] == "fp32":
            ax.errorbar(100 * r["test_acc"], 100 * y, yerr=100 * r["tpr@0.001_std"], fmt="*", ms=16,
                        color="black", label="FP32", zorder=5, capsize=3)
            ax.axhline(100 * y, color="black", lw=0.8, ls=":")
            continue
        decoupled = not pd.isna(r["last_layer_bits"])
        ax.errorbar(100 * r["test_acc"], 100 * y, xerr=100 * r["test_acc_std"], yerr=100 * r["tpr@0.001_std"],
                    fmt=markers.get(r["bits"], "o"), ms=8, capsize=3, color=palette[r["method"]],
                    mfc="white" if decoupled else palette[r["method"]], label=r["label"])
    if has_ref:
        ref_y = reference["tpr_at_0.1pct_fpr"].clip(lower=floor)
        ax.scatter(reference["test_acc_pct"], 100 * ref_y, marker="x", color="grey", label="the paper's Fig. 1")
        names = ["FP32" if m == "fp32" else f"{m} {b:g}b" for m, b in zip(reference["method"], reference["bits"])]
        for (x, y), group in _nearby(list(zip(reference["test_acc_pct"], ref_y)), names):
            ax.annotate(", ".join(group), (x, 100 * y), fontsize=6, color="grey", xytext=(-4, 3),
                        textcoords="offset points", ha="right")  # left: the best accuracies sit at the right edge
    ax.set_yscale("log")
    ax.set_xlabel("test accuracy (%)")
    ax.set_ylabel("TPR at 0.1% FPR (%), log scale")
    ax.set_title(f"Privacy vs. utility ({ATTACK_LABELS[attack]}); open markers: 8-bit last layer")
    ax.legend(fontsize=7, ncol=1 if len(rows) <= 16 else 2, loc="upper left", bbox_to_anchor=(1.01, 1.0),
              borderaxespad=0.0)
    ax.grid(True, which="both", alpha=0.3)
    return ax


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


def _select(df: pd.DataFrame, threat_model: str, label: str, attack: str) -> np.ndarray:
    return np.flatnonzero(((df["threat_model"] == threat_model) & (df["label"] == label)
                           & (df["attack"] == attack)).to_numpy())


def mean_roc(df: pd.DataFrame, arrays: dict, threat_model: str, label: str, attack: str,
             grid: np.ndarray) -> np.ndarray:
    """Mean TPR over targets at each FPR of `grid` (ROCs are step curves: take the last point <= x)."""
    from .metrics import roc

    tprs = []
    for row in _select(df, threat_model, label, attack):
        fpr, tpr = roc(arrays["scores"][row], arrays["members"][row])
        tprs.append(tpr[np.searchsorted(fpr, grid, side="right") - 1])
    return np.mean(tprs, axis=0)


def roc_plot(df: pd.DataFrame, arrays: dict, labels: list[str], attack: str,
             threat_model: str = "fp_shadows", ax=None):
    """Log-log ROC curves (mean over targets) with the chance line."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(5.2, 4.6))
    grid = np.logspace(-4, 0, 400)
    for label in labels:
        ax.plot(grid, mean_roc(df, arrays, threat_model, label, attack, grid), label=label,
                lw=2.2 if label == "fp32" else 1.3, color="black" if label == "fp32" else None)
    ax.plot(grid, grid, ls="--", color="grey", lw=1, label="chance")
    ax.set_xscale("log")
    ax.set_yscale("log")
    n = int(df["n_nonmembers"].min())
    ax.set_xlim(0.5 / n, 1)
    ax.set_ylim(0.5 / n, 1)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(f"{ATTACK_LABELS[attack]} — {THREAT_LABELS[threat_model]}", fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(True, which="both", alpha=0.3)
    return ax
