"""Small figures that show the study's mechanism to a class (notebooks/00_walkthrough.ipynb).

Each function reads a built store or takes arrays and returns a matplotlib Figure: members and
non-members, a weight tensor before and after round-to-nearest, the shadows' IN and OUT score
distributions of single examples, and why TPR at a low FPR says more than accuracy or AUC.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ptqlib.attacks import lira
from ptqlib.results import metrics
from ptqlib.study.config import StudyConfig
from ptqlib.study.jobs import load_data
from ptqlib.study.plan import plan_study, query_job
from ptqlib.ptq import fit_grid, n_levels
from ptqlib.runtime.store import Store

REPO_ROOT = Path(__file__).resolve().parent.parent.parent
SMALL = (3.6, 2.6)  # inches per panel: the walkthrough's figures fit a laptop screen


def study_scores(cfg: StudyConfig, store: Store) -> dict:
    """Stored phi scores (mean over query views) and membership of target 0 and every FP32 shadow:
    {"shadow_phi": (M, N), "shadow_keep": (M, N), "target_phi": (N,), "target_keep": (N,)}."""
    p = plan_study(cfg)
    shadows, target = p.shadows, p.targets[0]
    labels = load_data(target.data, store).y_train.numpy()

    def phi(job):
        return query_job(cfg, job).scores(store, labels).mean(axis=-1)

    return {"shadow_phi": np.stack([phi(j) for j in shadows]), "shadow_keep": np.stack([j.keep(store) for j in shadows]),
            "target_phi": phi(target), "target_keep": target.keep(store)}


def target_weights(cfg: StudyConfig, store: Store) -> dict[str, torch.Tensor]:
    """Target 0's trained weight tensors (convolutions and linear layers), by parameter name."""
    path = store.require(plan_study(cfg).targets[0], "trained model", "train") / "model.pt"
    state = torch.load(path, map_location="cpu", weights_only=True)
    return {name: w for name, w in state.items() if name.endswith("weight") and w.dim() in (2, 4)}


def members_figure(images: torch.Tensor, keep: np.ndarray, per_row: int = 6):
    """The first `per_row` members (top) and non-members (bottom) of one target."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, per_row, figsize=(1.1 * per_row, 2.6))
    for row, (name, pick) in enumerate((("member", np.flatnonzero(keep)), ("non-member", np.flatnonzero(~keep)))):
        for ax, i in zip(axes[row], pick[:per_row]):
            ax.imshow(images[i].float().mean(0), cmap="gray_r")
            ax.set_xticks([]), ax.set_yticks([])
        axes[row][0].set_ylabel(name, fontsize=9)
    fig.suptitle("the target trained on the top row, never saw the bottom row", fontsize=9)
    fig.tight_layout()
    return fig


def rtn_figure(weight: torch.Tensor, bits_list=(4, 2, 1.58), channel: int = 0):
    """One output channel's weights (histogram) with the fitted grid (red lines) and the
    round-to-nearest result (bars at the grid points), one panel per bit width."""
    import matplotlib.pyplot as plt

    w2d = weight.detach().reshape(weight.shape[0], -1)
    w = w2d[channel].numpy()
    fig, axes = plt.subplots(1, len(bits_list), figsize=(SMALL[0] * len(bits_list), SMALL[1]), squeeze=False,
                             sharey=True)
    for ax, bits in zip(axes[0], bits_list):
        grid = fit_grid(w2d, n_levels(bits))
        levels = grid.dequantize(torch.arange(grid.levels, dtype=torch.float32).view(1, -1))[channel].numpy()
        rounded = grid.round(w2d)[channel].numpy()
        ax.hist(w, bins=40, color="lightgrey", label="FP32 weights")
        values, counts = np.unique(rounded, return_counts=True)
        ax.bar(values, counts, width=0.25 * grid.scale[channel].item(), color="tab:blue", alpha=0.7,
               label="after RTN")
        for level in levels:
            ax.axvline(level, color="red", lw=0.8)
        err = np.linalg.norm(rounded - w) / np.linalg.norm(w)
        ax.set_title(f"{bits:g} bits: {grid.levels} levels, error {100 * err:.0f}%", fontsize=9)
        ax.set_xlabel("weight value")
    axes[0][0].set_ylabel("count")
    axes[0][0].legend(fontsize=7)
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


def in_out_figure(scores: dict, examples: dict[str, int]):
    """Per chosen example: the shadows' phi IN (trained on it) and OUT, their fitted Gaussians,
    the target's phi (dashed) and LiRA's log likelihood ratio at that phi."""
    import matplotlib.pyplot as plt
    from scipy.stats import norm

    fig, axes = plt.subplots(1, len(examples), figsize=(SMALL[0] * 1.2 * len(examples), SMALL[1]), squeeze=False)
    for ax, (name, i) in zip(axes[0], examples.items()):
        keep = scores["shadow_keep"][:, i].astype(bool)
        phi_in, phi_out, t = scores["shadow_phi"][keep, i], scores["shadow_phi"][~keep, i], scores["target_phi"][i]
        lo, hi = min(phi_in.min(), phi_out.min(), t) - 2, max(phi_in.max(), phi_out.max(), t) + 2
        x = np.linspace(lo, hi, 300)
        fits = {}
        for side, values, colour in (("IN", phi_in, "tab:red"), ("OUT", phi_out, "tab:blue")):
            fits[side] = (np.median(values), values.std() + 1e-3)  # LiRA: centre = median, spread = std
            ax.plot(x, norm.pdf(x, *fits[side]), color=colour, label=f"{side} shadows")
            ax.plot(values, np.zeros_like(values), "|", color=colour, ms=14)
        ax.axvline(t, color="black", ls="--", label="target")
        ratio = norm.logpdf(t, *fits["IN"]) - norm.logpdf(t, *fits["OUT"])
        truth = "member" if scores["target_keep"][i] else "non-member"
        ax.set_title(f"{name} (#{i}, truly a {truth})\nlog LR = {ratio:+.1f}", fontsize=9)
        ax.set_xlabel("phi = logit margin of the true class")
    axes[0][0].set_ylabel("density")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    return fig


def attack_scores(scores: dict) -> dict[str, np.ndarray]:
    """Membership scores of target 0: LiRA online (likelihood ratio) and the global threshold (phi)."""
    phi = scores["shadow_phi"][..., None]  # one query view: the mean over views
    online = lira.score_attack(lira.fit_shadow_stats(phi, scores["shadow_keep"]), scores["target_phi"][:, None], "online")
    return {"LiRA online": online,
            "threshold on phi": scores["target_phi"]}


def low_fpr_table(by_attack: dict[str, np.ndarray], members: np.ndarray) -> pd.DataFrame:
    """AUC, balanced accuracy and TPR at 1% and 0.1% FPR of each attack, in %."""
    rows = {name: metrics.attack_metrics(s, members) for name, s in by_attack.items()}
    return pd.DataFrame({name: {"AUC %": 100 * m["auc"], "balanced accuracy %": 100 * m["balanced_acc"],
                                "TPR@1%FPR %": 100 * m["tpr@0.01"], "TPR@0.1%FPR %": 100 * m["tpr@0.001"]}
                         for name, m in rows.items()}).T.round(1)


def roc_figure(by_attack: dict[str, np.ndarray], members: np.ndarray):
    """The same ROCs on linear axes (where AUC lives) and on log-log axes (where low FPR lives)."""
    import matplotlib.pyplot as plt

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
