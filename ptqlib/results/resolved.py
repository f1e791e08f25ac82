"""Is a recipe's leakage resolved from FP32's? 'resolved' when the 95% intervals of pooled TPR are disjoint.

Works on `tables.leakage_table` rows (one per recipe of one attack and threat model), whose
pooled TPR at each low FPR carries a percentile interval from resampling whole targets.
Overlapping intervals do not show the recipes equal: the difference is only 'indicative'.
"""
from __future__ import annotations

import pandas as pd

from ptqlib.results.metrics import too_few_nonmembers

FPRS = (0.001, 0.01)  # the two operating points the study states
MIN_TARGETS = 2  # one target's interval from resampling targets is a point: never 'resolved'


def interval_status(a_low: float, a_high: float, b_low: float, b_high: float) -> str:
    """'resolved' when the intervals [a_low, a_high] and [b_low, b_high] are disjoint, else 'indicative'."""
    for low, high in ((a_low, a_high), (b_low, b_high)):
        if not low <= high:
            raise ValueError(f"interval_status: interval [{low}, {high}] is empty or not a number")
    return "resolved" if a_high < b_low or b_high < a_low else "indicative"


def versus_fp32(table: pd.DataFrame, fprs=FPRS) -> pd.DataFrame:
    """Per recipe of a leakage table: its pooled TPR vs FP32's at each FPR, 'resolved' or 'indicative'.

    Columns: label, targets, and per FPR x: tpr@x, its interval, FP32's, the difference and status@x
    ('resolved': disjoint 95% intervals; 'indicative': overlapping, a recipe on fewer than
    MIN_TARGETS targets, whose interval from resampling targets is degenerate, or an FPR at which
    the recipe's or FP32's pooled non-members give fewer than 10 expected false positives, when
    `n_nonmembers` is in the table). FP32's row is left out.
    """
    fp = table[table["label"] == "fp32"]
    if len(fp) != 1:
        raise ValueError(f"versus_fp32: the table needs exactly one 'fp32' row, it has {len(fp)}")
    fp = fp.iloc[0]
    rows = []
    for _, r in table[table["label"] != "fp32"].iterrows():
        row = {"label": r["label"], "targets": int(r["targets"])}
        few = min(int(r["targets"]), int(fp["targets"])) < MIN_TARGETS
        for x in fprs:
            thin = "n_nonmembers" in table and too_few_nonmembers(
                int(min(r["n_nonmembers"], fp["n_nonmembers"])), x)
            t, lo, hi = f"tpr@{x:g}", f"tpr@{x:g}_ci_low", f"tpr@{x:g}_ci_high"
            missing = [c for c in (t, lo, hi) if c not in table.columns]
            if missing:
                raise ValueError(f"versus_fp32: the table lacks {missing}; build it with n_boot > 0")
            row.update({t: r[t], lo: r[lo], hi: r[hi], f"fp32 {t}": fp[t], f"diff {t}": r[t] - fp[t],
                        f"status@{x:g}": "indicative" if few or thin else interval_status(r[lo], r[hi], fp[lo], fp[hi])})
        rows.append(row)
    columns = ["label", "targets"] + [c for x in fprs for c in (
        f"tpr@{x:g}", f"tpr@{x:g}_ci_low", f"tpr@{x:g}_ci_high", f"fp32 tpr@{x:g}", f"diff tpr@{x:g}", f"status@{x:g}")]
    return pd.DataFrame(rows, columns=columns)
