"""Small figures that show the study's mechanism to a class (notebooks/00_walkthrough.ipynb).

The functions take arrays read from a built store (by `ptqlib.study.walkthrough`); the figures are
matplotlib Figures:
members and non-members, a weight tensor before and after round-to-nearest, the shadows' IN and
OUT score distributions of single examples, and why TPR at a low FPR says more than accuracy or AUC.
"""
from __future__ import annotations


import numpy as np
import pandas as pd
import torch

import matplotlib.pyplot as plt
from scipy.stats import norm

from ptqlib.attacks import lira
from ptqlib.ptq import fit_grid, n_levels
from ptqlib.results import metrics

SMALL = (3.6, 2.6)  # inches per panel: the walkthrough's figures fit a laptop screen
MANY_LEVELS = 16  # above this many grid levels a panel marks them as ticks: full-height lines would hide the weights


def members_figure(images: torch.Tensor, keep: np.ndarray, per_row: int = 6):
    """The first `per_row` members (top) and non-members (bottom) of one target."""
    fig, axes = plt.subplots(2, per_row, figsize=(1.1 * per_row, 2.6))
    for row, (name, pick) in enumerate((("member", np.flatnonzero(keep)), ("non-member", np.flatnonzero(~keep)))):
        for ax, i in zip(axes[row], pick[:per_row]):
            ax.imshow(images[i].float().mean(0), cmap="gray_r")
            ax.set_xticks([]), ax.set_yticks([])
        axes[row][0].set_ylabel(name, fontsize=9)
    fig.suptitle("the target trained on the top row, never saw the bottom row", fontsize=9)
    fig.tight_layout()
    return fig


def rtn_error(weight: torch.Tensor, bits: float, channel: int = 0) -> float:
    """Relative L2 error ||RTN(w) - w|| / ||w|| of one output channel, on its fitted grid."""
    w2d = weight.detach().reshape(weight.shape[0], -1)
    rounded = fit_grid(w2d, n_levels(bits)).round(w2d)[channel]
    return float(torch.linalg.vector_norm(rounded - w2d[channel]) / torch.linalg.vector_norm(w2d[channel]))


def rtn_figure(weight: torch.Tensor, bits_list=(4, 2, 1.58), channel: int = 0):
    """One output channel's weights (grey histogram) with the fitted grid (red) and the
    round-to-nearest result (blue), one panel per bit width.

    Up to MANY_LEVELS levels: a red line per level and a blue bar per grid point (its count).
    More levels: the levels are red ticks along the bottom, and the rounded weights a blue outline
    over the grey histogram. Its bars are then whole groups of grid cells (edges half a step from a
    level), so a weight and its rounded value fall in the same bar: where the outline and the grey
    histogram agree, rounding moved no weight by more than a bar's width.
    """
    w2d = weight.detach().reshape(weight.shape[0], -1)
    w = w2d[channel].numpy()
    fig, axes = plt.subplots(1, len(bits_list), figsize=(SMALL[0] * len(bits_list), SMALL[1]), squeeze=False)
    for ax, bits in zip(axes[0], bits_list):
        grid = fit_grid(w2d, n_levels(bits))
        levels = grid.dequantize(torch.arange(grid.levels, dtype=torch.float32).view(1, -1))[channel].numpy()
        rounded = grid.round(w2d)[channel].numpy()
        if grid.levels <= MANY_LEVELS:
            ax.hist(w, bins=40, color="lightgrey", label="FP32 weights")
            values, counts = np.unique(rounded, return_counts=True)
            ax.bar(values, counts, width=0.25 * grid.scale[channel].item(), color="tab:blue", alpha=0.7,
                   label="after RTN")
            for k, level in enumerate(levels):
                ax.axvline(level, color="red", lw=0.8, label="grid" if k == 0 else None)
        else:
            step = grid.scale[channel].item()
            per_bar = -(-grid.levels // 40)  # grid levels per bar: about 40 bars
            edges = levels[0] - step / 2 + step * np.arange(0, grid.levels + per_bar, per_bar)
            edges[0], edges[-1] = min(edges[0], w.min()), max(edges[-1], w.max())  # clipped weights
            ax.hist(w, bins=edges, color="lightgrey", label="FP32 weights")
            ax.hist(rounded, bins=edges, histtype="step", color="tab:blue", lw=1.2, label="after RTN")
            ax.plot(levels, np.zeros_like(levels), "|", color="red", ms=6, label=f"grid ({per_bar} levels per bar)")
        err = rtn_error(weight, bits, channel)
        ax.set_title(f"{bits:g} bits: {grid.levels} levels, error {100 * err:.1f}%", fontsize=9)
        ax.set_xlabel("weight value")
        ax.set_ylim(0, 1.45 * ax.get_ylim()[1])  # room for the legend above the bars
    axes[0][0].set_ylabel("count")
    axes[0][0].legend(fontsize=7, loc="upper left", ncol=2)
    fig.tight_layout()
    return fig


def chosen_examples(shadow_phi: np.ndarray, shadow_keep: np.ndarray, target_keep: np.ndarray) -> dict[str, int]:
    """Two of the target's members: an easy one (IN and OUT shadows score it alike) and a memorised
    outlier (the largest gap between the IN and OUT medians)."""
    keep = shadow_keep.astype(bool)
    gap = (np.nanmedian(np.where(keep, shadow_phi, np.nan), axis=0)
           - np.nanmedian(np.where(~keep, shadow_phi, np.nan), axis=0))
    gap = np.where(np.asarray(target_keep, dtype=bool), gap, np.nan)  # members only: the attack should find them
    return {"easy": int(np.nanargmin(np.abs(gap))), "memorised outlier": int(np.nanargmax(gap))}


def shadow_stats(scores: dict) -> lira.ShadowStats:
    """LiRA's IN and OUT medians and spreads of every example, from the shadows' phi (one view)."""
    return lira.fit_shadow_stats(scores["shadow_phi"][..., None], scores["shadow_keep"])


def attack_scores(scores: dict) -> dict[str, np.ndarray]:
    """Membership scores of target 0: LiRA online (log likelihood ratio) and the global threshold (phi)."""
    online = lira.score_attack(shadow_stats(scores), scores["target_phi"][:, None], "online")
    return {"LiRA online": online, "threshold on phi": scores["target_phi"]}


def in_out_figure(scores: dict, examples: dict[str, int]):
    """Per chosen example: the shadows' phi IN (trained on it) and OUT, LiRA's Gaussians fitted to
    them (centre = median, spread = std), the target's phi (dashed) and LiRA's log likelihood
    ratio at that phi (the example's "LiRA online" score of `attack_scores`)."""
    stats, log_lr = shadow_stats(scores), attack_scores(scores)["LiRA online"]
    fig, axes = plt.subplots(1, len(examples), figsize=(SMALL[0] * 1.2 * len(examples), SMALL[1]), squeeze=False)
    for ax, (name, i) in zip(axes[0], examples.items()):
        keep = scores["shadow_keep"][:, i].astype(bool)
        phi_in, phi_out, t = scores["shadow_phi"][keep, i], scores["shadow_phi"][~keep, i], scores["target_phi"][i]
        lo, hi = min(phi_in.min(), phi_out.min(), t) - 2, max(phi_in.max(), phi_out.max(), t) + 2
        x = np.linspace(lo, hi, 300)
        for values, mu, sd, side, colour in ((phi_in, stats.mu_in, stats.sd_in, "IN", "tab:red"),
                                             (phi_out, stats.mu_out, stats.sd_out, "OUT", "tab:blue")):
            ax.plot(x, norm.pdf(x, mu[i, 0], max(sd[i, 0], 1e-3)), color=colour, label=f"{side} shadows")
            ax.plot(values, np.zeros_like(values), "|", color=colour, ms=14)
        ax.axvline(t, color="black", ls="--", label="target")
        truth = "member" if scores["target_keep"][i] else "non-member"
        ax.set_title(f"{name} (#{i}, truly a {truth})\nlog LR = {log_lr[i]:+.1f}", fontsize=9)
        ax.set_xlabel("phi = logit margin of the true class")
    axes[0][0].set_ylabel("density")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    return fig


def low_fpr_table(by_attack: dict[str, np.ndarray], members: np.ndarray) -> pd.DataFrame:
    """AUC, balanced accuracy and TPR at 1% and 0.1% FPR of each attack, in %."""
    rows = {name: metrics.attack_metrics(s, members) for name, s in by_attack.items()}
    return pd.DataFrame({name: {"AUC %": 100 * m["auc"], "balanced accuracy %": 100 * m["balanced_acc"],
                                "TPR@1%FPR %": 100 * m["tpr@0.01"], "TPR@0.1%FPR %": 100 * m["tpr@0.001"]}
                         for name, m in rows.items()}).T.round(1)


def roc_figure(by_attack: dict[str, np.ndarray], members: np.ndarray):
    """The same ROCs on linear axes (where AUC lives) and on log-log axes (where low FPR lives)."""
    fig, axes = plt.subplots(1, 2, figsize=(2 * SMALL[0], SMALL[1] * 1.2))
    n = int((~members).sum())
    for name, s in by_attack.items():
        fpr, tpr = metrics.roc(s, members)
        for ax in axes:
            ax.plot(fpr, tpr, label=name)
    for ax, scale in zip(axes, ("linear", "log")):
        ax.plot([1 / n, 1], [1 / n, 1], ":", color="grey", label="chance")
        ax.set_xscale(scale), ax.set_yscale(scale)
        ax.set_xlabel("false positive rate"), ax.set_ylabel("true positive rate")
    axes[1].set_xlim(1 / n, 1), axes[1].set_ylim(1 / n, 1)
    axes[0].set_title("linear: AUC is the area", fontsize=9)
    axes[1].set_title("log-log: the left edge is confident guessing", fontsize=9)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    return fig
