"""The per-example view: which members FP32 exposes, and what quantization does to each of them.

A member is *vulnerable* for a target when its LiRA score clears the threshold that lets
through a fraction `fpr` of that target's non-members (the most confident detections). Its
*atypicality* is how far apart its IN and OUT shadow distributions are: the gap between the
IN and OUT medians of phi, in units of their average spread (a standardised effect size,
averaged over queries). Atypical examples are the ones a model can only fit by memorising.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from ptqlib.attacks import lira


def atypicality(shadow_scores: np.ndarray, shadow_keep: np.ndarray) -> pd.DataFrame:
    """Per example: `gap` (median IN phi - median OUT phi) and `gap_z` (gap / mean IN-OUT spread).

    shadow_scores: (M, N, Q) phi of the shadows; shadow_keep: (M, N) membership.
    """
    st = lira.fit_shadow_stats(shadow_scores, shadow_keep)
    gap = (st.mu_in - st.mu_out).mean(axis=1)
    spread = np.sqrt(0.5 * (st.sd_in ** 2 + st.sd_out ** 2)).mean(axis=1)
    return pd.DataFrame({"gap": gap, "gap_z": gap / np.maximum(spread, 1e-12)})


def threshold_at_fpr(scores: np.ndarray, members: np.ndarray, fpr: float) -> float:
    """The lowest threshold t such that at most a fraction `fpr` of non-members score above t."""
    out = np.sort(np.asarray(scores, dtype=np.float64)[~np.asarray(members, dtype=bool)])[::-1]
    k = int(np.floor(fpr * len(out)))  # non-members allowed above the threshold
    return float(out[k]) if k < len(out) else -np.inf


def vulnerable_members(scores: np.ndarray, members: np.ndarray, fpr: float = 0.01) -> np.ndarray:
    """Indices of the members detected at `fpr` (score above `threshold_at_fpr`), highest score first."""
    members = np.asarray(members, dtype=bool)
    t = threshold_at_fpr(scores, members, fpr)
    idx = np.flatnonzero(members & (scores > t))
    return idx[np.argsort(-scores[idx], kind="stable")]


def per_example_scores(results: pd.DataFrame, arrays: dict, gap: pd.DataFrame, attack: str = "online",
                       threat_model: str = "fp_shadows", fpr: float = 0.01, top: int = 20) -> pd.DataFrame:
    """One row per (target, vulnerable member of FP32, recipe): the member's score under the recipe.

    The `top` highest-scoring members FP32 detects at `fpr` are followed, per target, through
    every recipe of the same target: `score`, `detected` (at the recipe's own threshold for
    `fpr`), the FP32 score, and the member's atypicality (`gap`, `gap_z`).
    """
    rows = results[(results["attack"] == attack) & (results["threat_model"] == threat_model)]
    out = []
    for target, group in rows.groupby("target", sort=True):
        fp = group[group["label"] == "fp32"]
        if fp.empty:
            continue
        fp_scores, fp_members = arrays["scores"][fp.index[0]], arrays["members"][fp.index[0]]
        chosen = vulnerable_members(fp_scores, fp_members, fpr)[:top]
        for i, r in group.iterrows():
            scores, members = arrays["scores"][i], arrays["members"][i]
            t = threshold_at_fpr(scores, members, fpr)
            out.append(pd.DataFrame({
                "target": target, "label": r["label"], "method": r["method"], "bits": r["bits"],
                "example": chosen, "rank": np.arange(len(chosen)), "score": scores[chosen],
                "fp32_score": fp_scores[chosen], "detected": scores[chosen] > t,
                "gap": gap["gap"].to_numpy()[chosen], "gap_z": gap["gap_z"].to_numpy()[chosen]}))
    return pd.concat(out, ignore_index=True) if out else pd.DataFrame()


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    if len(a) < 3:
        return float("nan")
    ra, rb = pd.Series(a).rank().to_numpy(), pd.Series(b).rank().to_numpy()
    if ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


def per_example_summary(view: pd.DataFrame) -> pd.DataFrame:
    """Per recipe, over the followed members: how many are still detected, their mean score, and the
    rank correlation of atypicality (gap_z) with the score kept and with the score lost vs FP32."""
    rows = []
    for label, g in view.groupby("label", sort=False):
        drop = g["fp32_score"].to_numpy() - g["score"].to_numpy()
        rows.append({"label": label, "members_followed": len(g), "still_detected": float(g["detected"].mean()),
                     "mean_score": float(g["score"].mean()), "mean_score_drop": float(drop.mean()),
                     "spearman_gap_vs_score": _spearman(g["gap_z"].to_numpy(), g["score"].to_numpy()),
                     "spearman_gap_vs_drop": _spearman(g["gap_z"].to_numpy(), drop)})
    return pd.DataFrame(rows)
