"""Attack metrics: ROC, TPR at a strict FPR bound, AUC, balanced accuracy."""
from __future__ import annotations

import numpy as np

LOW_FPRS = (0.001, 0.01)
MIN_FALSE_POSITIVES = 10  # below n_nonmembers * FPR = 10 a TPR@FPR figure rests on too few points


def roc(scores: np.ndarray, is_member: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Full ROC (no points dropped), scores higher = member."""
    from sklearn.metrics import roc_curve  # scikit-learn (~1.4 s to import) only where a ROC is drawn up

    fpr, tpr, _ = roc_curve(np.asarray(is_member, dtype=bool), np.asarray(scores), drop_intermediate=False)
    return fpr, tpr


def tpr_at_fpr(fpr: np.ndarray, tpr: np.ndarray, max_fpr: float) -> float:
    """TPR at the last ROC point with FPR strictly below `max_fpr` (the reference's rule)."""
    below = np.flatnonzero(np.asarray(fpr) < max_fpr)
    return float(tpr[below[-1]]) if len(below) else 0.0


def low_fpr_tprs(scores: np.ndarray, is_member: np.ndarray, fprs: tuple = LOW_FPRS) -> dict:
    """`tpr_at_fpr` of the full ROC at each FPR, without building the ROC (for bootstrap loops; equal
    to `attack_metrics`' values bit for bit, ties included).

    The last ROC point with FPR = c / n_out < x keeps at most m nonmembers, m the largest such count;
    its threshold is the lowest score above the (m+1)-th highest nonmember score t, so its TPR is the
    share of members scoring strictly above t (0 when none does)."""
    scores, is_member = np.asarray(scores, dtype=np.float64), np.asarray(is_member, dtype=bool)
    out_scores, in_scores = scores[~is_member], scores[is_member]
    n_out, n_in = len(out_scores), len(in_scores)
    counts = np.arange(n_out + 1) / n_out  # every FPR the ROC can take, computed as roc_curve divides
    result = {}
    for x in fprs:
        m = int(np.flatnonzero(counts < x)[-1]) if (counts < x).any() else -1
        if m < 0:
            result[f"tpr@{x:g}"] = 0.0
        elif m >= n_out:
            result[f"tpr@{x:g}"] = 1.0
        else:
            k = n_out - (m + 1)
            t = np.partition(out_scores, k)[k]  # the (m+1)-th highest nonmember score
            result[f"tpr@{x:g}"] = float(np.count_nonzero(in_scores > t) / n_in)
    return result


def balanced_accuracy(fpr: np.ndarray, tpr: np.ndarray) -> float:
    """Best balanced accuracy over thresholds: max 1 - (FPR + FNR) / 2."""
    return float(np.max(1.0 - (fpr + (1.0 - tpr)) / 2.0))


def attack_metrics(scores: np.ndarray, is_member: np.ndarray) -> dict:
    is_member = np.asarray(is_member, dtype=bool)
    fpr, tpr = roc(scores, is_member)
    n_out = int((~is_member).sum())
    from sklearn.metrics import auc

    out = {"auc": float(auc(fpr, tpr)), "balanced_acc": balanced_accuracy(fpr, tpr),
           "n_members": int(is_member.sum()), "n_nonmembers": n_out}
    for x in LOW_FPRS:
        out[f"tpr@{x:g}"] = tpr_at_fpr(fpr, tpr, x)
    return out


def too_few_nonmembers(n_nonmembers: int, fpr: float) -> bool:
    """True when a TPR at this FPR rests on fewer than MIN_FALSE_POSITIVES false positives."""
    return n_nonmembers * fpr < MIN_FALSE_POSITIVES
