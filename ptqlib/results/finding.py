"""The study's finding in words: one or two sentences generated from the pooled leakage table."""
from __future__ import annotations

import pandas as pd

from ptqlib.attacks.lira import ATTACK_LABELS
from ptqlib.results.metrics import LOW_FPRS, too_few_nonmembers
from ptqlib.results.tables import recipe_name


def headline_fpr(table: pd.DataFrame) -> tuple[float, bool]:
    """The lowest FPR of LOW_FPRS the pooled ROC resolves, and whether the figure is only
    indicative (even the largest rests on fewer than 10 expected false positives)."""
    n = int(table["n_nonmembers"].min())
    for x in sorted(LOW_FPRS):
        if not too_few_nonmembers(n, x):
            return x, False
    return max(LOW_FPRS), True

def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"

def _points(delta: float) -> str:
    text = f"{round(100 * delta, 1) + 0.0:+.1f}"  # + 0.0: a loss that rounds to zero reads +0.0, not -0.0
    return f"{text} pt".replace("-", "\u2212")

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
        if int(best["targets"]) != int(fp["targets"]):  # a recipe run on fewer models says so
            pooled_over += f"; {name} over {int(best['targets'])}"
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
