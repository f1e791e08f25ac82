"""The study's finding in plain words: a few sentences generated from the pooled leakage table.

They say what the attack measures, where chance lies, which recipe lowers leakage at little
accuracy cost, and whether each difference from FP32 is resolved (95% intervals disjoint) or
only indicative; the metric is the lowest FPR the pooled non-members resolve.
"""
from __future__ import annotations

import pandas as pd

from ptqlib.attacks.lira import ATTACK_LABELS
from ptqlib.results.metrics import LOW_FPRS, too_few_nonmembers
from ptqlib.results.resolved import versus_fp32
from ptqlib.results.tables import recipe_name

ATTACK_IN_WORDS = {  # what each attack does, for a reader who has not met it
    "online": "it compares an example's score with shadow models trained with and without that example",
    "online_fixed": "shadow models trained with and without each example, one shared variance",
    "offline": "it compares an example's score with shadow models trained without that example",
    "offline_fixed": "shadow models trained without each example, one shared variance",
    "global": "one loss threshold for every example",
    "rmia": "it compares an example's likelihood ratio with a population of other examples",
}


def headline_fpr(table: pd.DataFrame) -> tuple[float, bool]:
    """The lowest FPR of LOW_FPRS that FP32's pooled ROC (the reference every recipe is read
    against) resolves, and whether the figure is only indicative (even the largest rests on fewer
    than 10 expected false positives). A recipe run on fewer models is flagged on its own."""
    fp = table[table["method"] == "fp32"]
    n = int((fp if len(fp) else table)["n_nonmembers"].min())
    for x in sorted(LOW_FPRS):
        if not too_few_nonmembers(n, x):
            return x, False
    return max(LOW_FPRS), True

def _digits(fpr: float) -> int:
    """Decimals of a TPR read at `fpr`: TPRs at 0.1% FPR are fractions of a percent, so two."""
    return 2 if fpr < 0.01 else 1

def _pct(x: float, fpr: float = 0.01) -> str:
    return f"{100 * x:.{_digits(fpr)}f}%"

def _fpr(x: float) -> str:
    return f"{100 * x:g}%"

def _cost(delta: float) -> str:
    """An accuracy change in words: 'loses 0.3 points of test accuracy', 'loses no test accuracy'."""
    points = round(-100 * delta, 1) + 0.0  # + 0.0: a loss that rounds to zero reads 0.0, never -0.0
    if points > 0:
        return f"loses {points:.1f} percentage points of test accuracy"
    return "loses no test accuracy" + (f" (+{-points:.1f} points)" if points < 0 else "")

def _status(status: pd.DataFrame | None, label: str, fpr: float, recipe=None, fp=None) -> str:
    """', resolved: ...' or ', indicative only: ...' for one recipe at one FPR (empty without intervals)."""
    if status is None:
        return ""
    row = status[status["label"] == label].iloc[0]
    c = f"tpr@{fpr:g}"
    d = _digits(fpr)
    bounds = (f"{100 * recipe[c + '_ci_low']:.{d}f}–{100 * recipe[c + '_ci_high']:.{d}f} against FP32's "
              f"{100 * fp[c + '_ci_low']:.{d}f}–{100 * fp[c + '_ci_high']:.{d}f}")
    if row[f"status@{fpr:g}"] == "resolved":
        return f" — resolved: the 95% intervals do not overlap ({bounds})"
    return f" — indicative only: the 95% intervals overlap ({bounds})"

def _resolved_counts(status: pd.DataFrame | None) -> str:
    if status is None or status.empty:
        return ""
    parts = [f"{int((status[f'status@{x:g}'] == 'resolved').sum())} at {_fpr(x)} FPR" for x in sorted(LOW_FPRS)]
    return (f"Of the {len(status)} quantized recipes, those whose leakage differs from FP32's with disjoint 95% "
            f"intervals number {' and '.join(parts)}; every other difference is indicative.")

def finding(table: pd.DataFrame, max_accuracy_loss: float = 0.01) -> str:
    """A few sentences from a `leakage_table`: what the attack finds on FP32 against chance, the
    recipe that cuts the pooled low-FPR TPR most while losing at most `max_accuracy_loss`
    accuracy, the lowest leak at any cost, each with resolved/indicative from its interval, and
    how many recipes are resolved at each FPR. Says 'indicative' when the pooled non-members
    cannot resolve the FPR."""
    fpr, indicative = headline_fpr(table)
    col = f"tpr@{fpr:g}"
    fp = table[table["method"] == "fp32"]
    quantized = table[table["method"] != "fp32"]
    if fp.empty or quantized.empty:
        raise ValueError("finding needs the FP32 row and at least one quantized recipe in the table")
    fp = fp.iloc[0]
    has_ci = all(f"tpr@{x:g}_ci_low" in table for x in LOW_FPRS)
    status = versus_fp32(table) if has_ci and (table["label"] == "fp32").sum() == 1 else None
    attack = fp["attack"]
    sentences = [f"The attack, {ATTACK_LABELS.get(attack, attack)} ({ATTACK_IN_WORDS.get(attack, 'a membership test')}), "
                 f"finds {_pct(fp[col], fpr)} of the full-precision (FP32) model's training members when it may wrongly "
                 f"accuse {_fpr(fpr)} of non-members; a random guess would find {_fpr(fpr)} (pooled over "
                 f"{int(fp['targets'])} models)."]
    thin = quantized["n_nonmembers"].map(lambda n: too_few_nonmembers(int(n), fpr))
    if thin.any() and not thin.all():  # recipes on too few models to be read at this FPR are not ranked
        quantized = quantized[~thin]
    affordable = quantized[fp["test_acc"] - quantized["test_acc"] <= max_accuracy_loss]
    best = affordable.sort_values(col, kind="stable").iloc[0] if len(affordable) else None
    if best is not None:
        name = recipe_name(best["method"], best["bits"], best["last_layer_bits"])
        models = f" (over {int(best['targets'])} models)" if int(best["targets"]) != int(fp["targets"]) else ""
        if best[col] < fp[col]:
            sentences.append(f"{name}{models}, which {_cost(best['test_acc'] - fp['test_acc'])}, lowers that to "
                             f"{_pct(best[col], fpr)}{_status(status, best['label'], fpr, best, fp)}.")
        else:
            sentences.append(f"No recipe within {100 * max_accuracy_loss:g} point of FP32's accuracy lowers it: the "
                             f"lowest among them, {name}{models}, reaches {_pct(best[col], fpr)}.")
    else:
        sentences.append(f"Every quantized recipe loses more than {100 * max_accuracy_loss:g} point of test accuracy.")
    lowest = quantized.sort_values([col, "test_acc"], ascending=[True, False], kind="stable").iloc[0]
    if best is None or (lowest["label"] != best["label"] and lowest[col] < best[col]):
        sentences.append(f"The lowest leak, {_pct(lowest[col], fpr)}, comes from "
                         f"{recipe_name(lowest['method'], lowest['bits'], lowest['last_layer_bits'])}, which "
                         f"{_cost(lowest['test_acc'] - fp['test_acc'])}{_status(status, lowest['label'], fpr, lowest, fp)}.")
    counts = _resolved_counts(status)
    if counts:
        sentences.append(counts)
    if indicative:
        n = int(table["n_nonmembers"].min())
        sentences.append(f"These figures are indicative only: {n} pooled non-members give "
                         f"{n * fpr:.1f} expected false positives at {_fpr(fpr)} FPR (fewer than 10).")
    return " ".join(sentences)
