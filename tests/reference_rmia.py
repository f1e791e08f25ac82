"""RMIA's way to choose `a` (used only by the tests): attack one shadow with the others."""
import numpy as np

from ptqlib.attacks import rmia


def choose_a(shadow_probs: np.ndarray, shadow_keep: np.ndarray, grid=np.linspace(0.0, 1.0, 11),
             reference: int = 0) -> float:
    """The paper's way to set a: attack one shadow with the others and keep the a of best AUC.

    The population is that shadow's own non-members, which the attacker knows for a shadow.
    """
    from sklearn.metrics import roc_auc_score

    probs = np.asarray(shadow_probs, dtype=np.float64)
    keep = np.asarray(shadow_keep, dtype=bool)
    others = np.arange(len(probs)) != reference
    members = keep[reference]
    aucs = [roc_auc_score(members, rmia.rmia_offline(probs[others], keep[others], probs[reference], ~members, a=a))
            for a in grid]
    return float(grid[int(np.argmax(aucs))])
