"""Attack metrics: ROC, TPR at a strict FPR bound, AUC, balanced accuracy."""
from __future__ import annotations

import numpy as np
from sklearn.metrics import auc as _auc
from sklearn.metrics import roc_curve

LOW_FPRS = (0.001, 0.01)
MIN_FALSE_POSITIVES = 10  # below n_nonmembers * FPR = 10 a TPR@FPR figure rests on too few points


def roc(scores: np.ndarray, is_member: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Full ROC (no points dropped), scores higher = member."""
    fpr, tpr, _ = roc_curve(np.asarray(is_member, dtype=bool), np.asarray(scores), drop_intermediate=False)
    return fpr, tpr


def tpr_at_fpr(fpr: np.ndarray, tpr: np.ndarray, max_fpr: float) -> float:
    """TPR at the last ROC point with FPR strictly below `max_fpr` (the reference's rule)."""
    below = np.flatnonzero(np.asarray(fpr) < max_fpr)
    return float(tpr[below[-1]]) if len(below) else 0.0


def balanced_accuracy(fpr: np.ndarray, tpr: np.ndarray) -> float:
    """Best balanced accuracy over thresholds: max 1 - (FPR + FNR) / 2."""
    return float(np.max(1.0 - (fpr + (1.0 - tpr)) / 2.0))


def attack_metrics(scores: np.ndarray, is_member: np.ndarray) -> dict:
    is_member = np.asarray(is_member, dtype=bool)
    fpr, tpr = roc(scores, is_member)
    n_out = int((~is_member).sum())
    out = {"auc": float(_auc(fpr, tpr)), "balanced_acc": balanced_accuracy(fpr, tpr),
           "n_members": int(is_member.sum()), "n_nonmembers": n_out}
    for x in LOW_FPRS:
        out[f"tpr@{x:g}"] = tpr_at_fpr(fpr, tpr, x)
    return out


def too_few_nonmembers(n_nonmembers: int, fpr: float) -> bool:
    """True when a TPR at this FPR rests on fewer than MIN_FALSE_POSITIVES false positives."""
    return n_nonmembers * fpr < MIN_FALSE_POSITIVES
