"""The three threat models side by side on the default digits models (params/threats.yaml).

Run after `python -m ptqlib run params/threats.yaml` (its store may live elsewhere: --store):
    .venv/bin/python benchmarks/threats_digits.py [--store PATH] [--attack online_fixed]

Reads the stored attack results (nothing is recomputed) and prints, per recipe and threat model
(FP shadows = the paper's; matched = shadows quantized like the target; leave-one-out over the 32
pool models), the pooled TPR at 1% FPR with its 95% interval from resampling whole targets and
whether it is resolved from FP32 (disjoint intervals). Output appended to
benchmarks/results/threats_digits.txt.
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
from ptqlib.study import config, stages  # noqa: E402
from ptqlib.study.presets import read_preset  # noqa: E402

OUT = ROOT / "benchmarks" / "results" / "threats_digits.txt"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", default=None)
    ap.add_argument("--attack", default="online_fixed")
    ap.add_argument("--boot", type=int, default=200)
    args = ap.parse_args()
    raw = read_preset(ROOT / "params" / "threats.yaml")
    cfg = config.validate({**raw, **({"store": args.store} if args.store else {})})
    results, arrays = stages.load_attack_results(cfg, Store(cfg.store_path))
    lines = [f"threats_digits: params/threats.yaml, attack {args.attack}, {time.strftime('%Y-%m-%d %H:%M')}",
             "pooled TPR@1%FPR % [95% CI resampling targets]; resolved/indicative vs FP32 of the same threat model",
             f"{'recipe':<16}" + "".join(f"{tables.THREAT_LABELS[t]:>44}" for t in cfg.threat_models)]
    per_threat = {}
    for t in cfg.threat_models:
        table = tables.leakage_table(results, arrays, args.attack, t, args.boot)
        status = resolved.versus_fp32(table).set_index("label")
        per_threat[t] = (table.set_index("label"), status)
    for label in per_threat[cfg.threat_models[0]][0].index:
        cells = []
        for t in cfg.threat_models:
            table, status = per_threat[t]
            r = table.loc[label]
            mark = "" if label == "fp32" else f" {status.loc[label, 'status@0.01']}"
            cells.append(f"{100 * r['tpr@0.01']:.2f} [{100 * r['tpr@0.01_ci_low']:.2f}, "
                         f"{100 * r['tpr@0.01_ci_high']:.2f}]{mark} ({int(r['targets'])})")
        lines.append(f"{label:<16}" + "".join(f"{c:>44}" for c in cells))
    text = "\n".join(lines) + "\n\n"
    print(text)
    with open(OUT, "a", encoding="utf-8") as f:
        f.write(text)


if __name__ == "__main__":
    main()
