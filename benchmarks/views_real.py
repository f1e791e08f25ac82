"""Query views on real photographs: the image and its mirror (the preset's) vs the authors' two random
crop(pad 4)+flip views drawn per model, measured on the cifar10-10k pool (#19).

Run after `python -m ptqlib run params/cifar10-10k.yaml` and the same preset with
`queries: random_per_model, query_count: 2` for FP32 and RTN 4b (methods [rtn], bits [4],
threat_models [leave_one_out_fp]; its train and quantize jobs are the preset's, found by key):
    .venv/bin/python benchmarks/views_real.py --random-preset /tmp/views.yaml
Prints pooled TPR at 0.1% and 1% FPR [95% CI resampling models] and AUC, LiRA online, for both view
sets, and appends to benchmarks/results/views_real.txt.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from ptqlib.results import resolved, tables  # noqa: E402
from ptqlib.runtime.store import Store  # noqa: E402
from ptqlib.study import stages  # noqa: E402
from ptqlib.study.presets import load_preset  # noqa: E402

OUT = ROOT / "benchmarks" / "results" / "views_real.txt"


def rows(preset: str, labels: list[str]) -> tuple[str, object]:
    cfg = load_preset(preset)
    results, arrays = stages.load_attack_results(cfg, Store(cfg.store_path))
    table = tables.leakage_table(results, arrays, "online", "leave_one_out_fp", 200)
    return cfg.queries, table[table["label"].isin(labels)].set_index("label")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default=str(ROOT / "params" / "cifar10-10k.yaml"))
    ap.add_argument("--random-preset", required=True)
    args = ap.parse_args()
    labels = ["fp32", "rtn 4b"]
    lines = [f"views_real: {time.strftime('%Y-%m-%d %H:%M')}; LiRA online, leave-one-out over the 16 pool models "
             "with FP shadows; pooled TPR % [95% CI resampling models]"]
    tables_by_view = {}
    for preset in (args.preset, args.random_preset):
        mode, table = rows(preset, labels)
        tables_by_view[mode] = table
        for label, r in table.iterrows():
            lines.append(f"{mode:<17} {label:<8} TPR@0.1% {100 * r['tpr@0.001']:.2f} [{100 * r['tpr@0.001_ci_low']:.2f}, "
                         f"{100 * r['tpr@0.001_ci_high']:.2f}]  TPR@1% {100 * r['tpr@0.01']:.2f} "
                         f"[{100 * r['tpr@0.01_ci_low']:.2f}, {100 * r['tpr@0.01_ci_high']:.2f}]  AUC {100 * r['auc']:.2f}")
    a, b = tables_by_view.values()
    for label in labels:
        for x in (0.001, 0.01):
            c = f"tpr@{x:g}"
            status = resolved.interval_status(a.loc[label, c + "_ci_low"], a.loc[label, c + "_ci_high"],
                                              b.loc[label, c + "_ci_low"], b.loc[label, c + "_ci_high"])
            lines.append(f"{label} at {100 * x:g}% FPR, mirror vs random views: {status}")
    text = "\n".join(lines) + "\n\n"
    print(text)
    with open(OUT, "a", encoding="utf-8") as f:
        f.write(text)


if __name__ == "__main__":
    main()
