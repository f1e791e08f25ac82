"""The paper's protocol choices, one at a time, on the default digits models.

Usage: python benchmarks/protocol_digits.py [--store artifacts] [--out benchmarks/results/protocol_digits.txt]

Each variant is the default study (same 8 targets, 32 full-precision shadows, reused from the
store) with a few keys changed; every variant's quantized models are attacked with LiRA
online, fixed variance, and scored per target (mean ± std [bootstrap 95% CI]) and pooled over
targets. 674 non-members per target: per-target TPR@1%FPR rests on ~7 false positives, so read
the pooled column (8 × 674) and the CIs before any difference.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import pandas as pd

from ptqlib.results import tables as analysis
from ptqlib.study import stages as pipeline
from ptqlib.results import stats
from ptqlib.study.config import validate
from ptqlib.runtime.store import Store

ATTACK = "online_fixed"
OBC_AUTHORS = {"obc_hessian": "fp", "obc_damp": 0.0, "obc_calib_rounds": 10, "bn_retune": ["obc"],
               "bn_retune_source": "pool", "bn_retune_momentum": 0.1}
VARIANTS = [
    # (name, keys changed from the default study)
    ("OBC, ptqlib (sequential H, damp 0.01, 1 round, no BN re-tuning)", {"methods": ["obc"]}),
    ("OBC, authors' (FP H, damp 0, 10 rounds, BN re-tuned on the pool)", {"methods": ["obc"], **OBC_AUTHORS}),
    ("OBC, authors' without BN re-tuning", {"methods": ["obc"], **OBC_AUTHORS, "bn_retune": []}),
    ("OBC, authors' with BN re-tuned on members only", {"methods": ["obc"], **OBC_AUTHORS,
                                                         "bn_retune_source": "members"}),
    ("AdaRound, lambda 0.01 (literature)", {"methods": ["adaround"]}),
    ("AdaRound, lambda 0.001 (authors')", {"methods": ["adaround"], "adaround_lambda": 0.001}),
    ("RTN, views: identity", {"methods": ["rtn"]}),
    ("RTN, views: image + mirror (mirror_shift, shift 0)", {"methods": ["rtn"], "queries": "mirror_shift",
                                                             "query_shift": 0}),
    ("RTN, views: 2 random crop+flip per model (authors')", {"methods": ["rtn"], "queries": "random_per_model"}),
]
COMMON = {"bits": [4, 2, 1.58], "last_layer_bits": [None], "attacks": [ATTACK], "threat_models": ["fp_shadows"]}


def variant_table(name: str, keys: dict, store_root: str) -> tuple[pd.DataFrame, float]:
    cfg = validate({**COMMON, **keys, "store": store_root, "name": "protocol"})
    store = Store(cfg.store_path)
    t0 = time.perf_counter()
    df = pipeline.run_all(cfg, store)
    wall = time.perf_counter() - t0
    df, arrays = pipeline.load_attack_results(cfg, store)
    per_target = stats.summary_table(df, ["label"], ["test_acc", "tpr@0.01", "auc"])
    pooled = analysis.pooled(df, arrays).set_index("label")
    rows = []
    for _, r in per_target.iterrows():
        rows.append({"variant": name, "recipe": r["label"],
                     "test acc %": f"{100 * r['test_acc']:.2f} ± {100 * r['test_acc_std']:.2f}",
                     "TPR@1%FPR % (per target)": f"{100 * r['tpr@0.01']:.2f} ± {100 * r['tpr@0.01_std']:.2f} "
                                                 f"[{100 * r['tpr@0.01_ci_low']:.2f}, {100 * r['tpr@0.01_ci_high']:.2f}]",
                     "TPR@1%FPR % (pooled)": f"{100 * pooled.loc[r['label'], 'tpr@0.01']:.2f}",
                     "AUC %": f"{100 * r['auc']:.2f} ± {100 * r['auc_std']:.2f}"})
    return pd.DataFrame(rows), wall


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", default="artifacts")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "protocol_digits.txt"))
    args = parser.parse_args()
    tables, lines = [], []
    for name, keys in VARIANTS:
        table, wall = variant_table(name, keys, args.store)
        tables.append(table)
        lines.append(f"{name}: {wall:.1f} s (training reused from the store when present)")
        print(lines[-1], file=sys.stderr, flush=True)
    out = pd.concat(tables, ignore_index=True)
    text = (f"LiRA {ATTACK}, full-precision shadows, digits default models (8 targets x 674 non-members)\n\n"
            + out.to_string(index=False) + "\n\nwall time per variant:\n" + "\n".join(lines) + "\n")
    Path(args.out).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
