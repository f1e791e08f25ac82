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

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from ptqlib.results import scale  # noqa: E402
from ptqlib.runtime.store import Store  # noqa: E402
from ptqlib.study import config, stages  # noqa: E402
from ptqlib.study.presets import read_preset  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
FPRS = scale.FPRS


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--widths", type=float, nargs="+", default=[0.5, 1.0, 1.6])
    ap.add_argument("--boot", type=int, default=200)
    args = ap.parse_args()
    cfg = config.validate({**read_preset(ROOT / "params" / "scale.yaml"), "scale_widths": args.widths})
    table = stages.run_scale(cfg, Store(cfg.store_path), "online", "leave_one_out_fp", args.boot)
    lines = [f"width {w:g}: {int(g['weights'].iloc[0]):,} weights, {g['wall_s'].iloc[0]:.0f} s "
             "(all stages, jobs not in the store)" for w, g in table.groupby("width", sort=False)]
    fig = scale.figure(table, "Model scale on real photographs: LiRA online, leave-one-out over 8 models with FP "
                              "shadows; bars: 95% intervals from resampling models")
    fig.savefig(RESULTS / "scale_real.png", dpi=130, bbox_inches="tight")
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
