"""Model scale on real photographs (#22): does PTQ's leakage reduction change with model size?

Runs params/scale.yaml (the real-image study on a leave-one-out pool of 8 models, RTN and AdaRound
at 4/2/1.58 bits, FP shadows) at three widths of airbench_small, 0.5 / 1 / 1.6 (75k / 298k / 759k
weights, a 10x span), from the shared store (finished jobs are reused), and reports per width and
recipe: FP32 and recipe test accuracy, pooled TPR at 0.1% and 1% FPR, and the leakage reduction
1 - TPR(recipe) / TPR(FP32) with a 95% percentile interval from resampling whole pool models (the
same draw for the recipe and FP32, which share the 8 models), plus each width's wall time.

    .venv/bin/python benchmarks/scale_real.py [--widths 0.5 1 1.6] [--boot 200]

Output: benchmarks/results/scale_real.txt (appended) and benchmarks/results/scale_real.png.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from ptqlib.models.zoo import build_model  # noqa: E402
from ptqlib.results import stats, tables  # noqa: E402
from ptqlib.results.figures import METHOD_COLOURS  # noqa: E402
from ptqlib.runtime.store import Store  # noqa: E402
from ptqlib.study import config  # noqa: E402
from ptqlib.study import stages  # noqa: E402
from ptqlib.study.presets import read_preset  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
FPRS = (0.001, 0.01)


def reduction(scores: np.ndarray, members: np.ndarray, fp_scores: np.ndarray, fp_members: np.ndarray,
              n_boot: int, seed: int = 0) -> dict:
    """1 - pooled TPR(recipe)/TPR(FP32) at each FPR, and its 95% interval resampling models jointly."""
    def ratio(pick):
        q, f = stats.pooled_metrics(scores[pick], members[pick]), stats.pooled_metrics(fp_scores[pick], fp_members[pick])
        return {x: 1 - q[f"tpr@{x:g}"] / f[f"tpr@{x:g}"] if f[f"tpr@{x:g}"] > 0 else np.nan for x in FPRS}
    k = len(scores)
    point = ratio(np.arange(k))
    draws = [ratio(pick) for pick in np.random.default_rng(seed).integers(0, k, size=(n_boot, k))]
    out = {}
    for x in FPRS:
        lo, hi = np.nanquantile([d[x] for d in draws], [0.025, 0.975])
        out.update({f"cut@{x:g}": point[x], f"cut@{x:g}_low": lo, f"cut@{x:g}_high": hi})
    return out


def one_width(width: float, n_boot: int) -> tuple[pd.DataFrame, float]:
    cfg = config.validate({**read_preset(ROOT / "params" / "scale.yaml"), "width": width,
                           "name": f"scale-w{width:g}"})
    store = Store(cfg.store_path)
    start = time.time()
    stages.run_all(cfg, store)
    wall = time.time() - start
    results, arrays = stages.load_attack_results(cfg, store)
    table = tables.leakage_table(results, arrays, "online", "leave_one_out_fp", n_boot)
    rows = results[(results["attack"] == "online") & (results["threat_model"] == "leave_one_out_fp")]
    fp_idx = rows.index[rows["label"] == "fp32"].to_numpy()
    fp_targets = rows.loc[fp_idx, "target"].to_numpy()
    n_weights = sum(p.numel() for p in build_model("airbench_small", 10, 3, cfg.image_size, width=width).parameters())
    out = []
    for _, r in table.iterrows():
        row = {"width": width, "weights": n_weights, "label": r["label"], "method": r["method"], "bits": r["bits"],
               "models": int(r["targets"]), "test_acc": r["test_acc"], "test_acc_std": r["test_acc_std"],
               **{f"tpr@{x:g}": r[f"tpr@{x:g}"] for x in FPRS},
               **{f"tpr@{x:g}_{e}": r[f"tpr@{x:g}_ci_{e}"] for x in FPRS for e in ("low", "high")}}
        if r["label"] != "fp32":
            idx = rows.index[rows["label"] == r["label"]].to_numpy()
            order = [idx[rows.loc[idx, "target"].to_numpy() == t][0] for t in fp_targets]  # pair by pool model
            row.update(reduction(arrays["scores"][order], arrays["members"][order], arrays["scores"][fp_idx],
                                 arrays["members"][fp_idx], n_boot))
        out.append(row)
    return pd.DataFrame(out), wall


def figure(table: pd.DataFrame, path: Path) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    markers = {4: "s", 2: "D", 1.58: "v"}
    quantized = table[table["label"] != "fp32"]
    for ax, x in zip(axes, FPRS):
        for label, g in quantized.groupby("label", sort=False):
            g = g.sort_values("weights")
            m, b = g["method"].iloc[0], g["bits"].iloc[0]
            ax.errorbar(g["weights"], 100 * g[f"cut@{x:g}"],
                        yerr=[100 * (g[f"cut@{x:g}"] - g[f"cut@{x:g}_low"]), 100 * (g[f"cut@{x:g}_high"] - g[f"cut@{x:g}"])],
                        marker=markers.get(b, "o"), color=METHOD_COLOURS.get(m), capsize=3, lw=1.4,
                        label=f"{tables.DISPLAY_NAMES.get(m, m)} {b:g}-bit")
        ax.axhline(0, color="black", lw=1)
        ax.set_xscale("log")
        ax.set_xlabel("weights (airbench_small at width 0.5 / 1 / 1.6)")
        ax.set_title(f"at {100 * x:g}% FPR", fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("leakage reduction vs FP32 (%)\n1 − TPR(recipe) / TPR(FP32)")
    axes[1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    fig.suptitle("Model scale on real photographs: LiRA online, leave-one-out over 8 models with FP shadows; "
                 "bars: 95% intervals from resampling models", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=130, bbox_inches="tight")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--widths", type=float, nargs="+", default=[0.5, 1.0, 1.6])
    ap.add_argument("--boot", type=int, default=200)
    args = ap.parse_args()
    parts, lines = [], []
    for w in args.widths:
        t, wall = one_width(w, args.boot)
        parts.append(t)
        lines.append(f"width {w:g}: {int(t['weights'].iloc[0]):,} weights, {wall:.0f} s (all stages, jobs not in the store)")
        print(lines[-1], flush=True)
    table = pd.concat(parts, ignore_index=True)
    figure(table, RESULTS / "scale_real.png")
    text = [f"scale_real: params/scale.yaml at widths {args.widths}, {time.strftime('%Y-%m-%d %H:%M')}",
            "LiRA online, leave-one-out over 8 pool models with FP shadows; pooled TPR %, [95% CI resampling models];",
            "cut = 1 - TPR(recipe)/TPR(FP32) in %, [95% CI, same draw of models for both]", *lines, ""]
    for _, r in table.iterrows():
        cells = "  ".join(f"TPR@{100 * x:g}% {100 * r[f'tpr@{x:g}']:.2f} [{100 * r[f'tpr@{x:g}_low']:.2f}, "
                          f"{100 * r[f'tpr@{x:g}_high']:.2f}]" for x in FPRS)
        cut = "" if r["label"] == "fp32" else "  " + "  ".join(
            f"cut@{100 * x:g}% {100 * r[f'cut@{x:g}']:.1f} [{100 * r[f'cut@{x:g}_low']:.1f}, {100 * r[f'cut@{x:g}_high']:.1f}]"
            for x in FPRS)
        text.append(f"w {r['width']:<4g} {int(r['weights']):>7,}  {r['label']:<15} acc {100 * r['test_acc']:.2f} +- "
                    f"{100 * r['test_acc_std']:.2f}  {cells}{cut}")
    report = "\n".join(text) + "\n"
    print(report)
    with open(RESULTS / "scale_real.txt", "a", encoding="utf-8") as f:
        f.write(report + "\n")


if __name__ == "__main__":
    main()
