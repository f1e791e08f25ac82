"""Two of the authors' protocol steps on the default digits models: the grid search's candidates
(`grid_search`) and the learning-rate schedule (`lr_schedule`).

Usage: python benchmarks/protocol_keys_digits.py [--store /tmp/protocol-store] [--out benchmarks/results/protocol_keys_digits.txt]

Variants (each the default study with a few keys changed; 8 targets, 32 full-precision shadows):
- grid_search fine (ptqlib: 100 shrinks of 0.8%, range holding 0) vs authors (80 shrinks of 1%;
  RTN/AdaRound from the raw min/max, OBC from the range holding 0), RTN / AdaRound / OBC at 4, 2
  and 1.58 bits on the same trained models;
- lr_schedule per_step vs per_epoch: targets and shadows retrained with the cosine stepped once per
  epoch (shadows as the targets: the attacker mimics the training), FP32 and RTN.
LiRA online with fixed variance. Columns: test accuracy (mean ± std over targets), TPR@1%FPR of the
pooled ROC over the 8 targets' 5,392 non-members with its 95% interval from resampling targets, and
for the paired variants the pooled difference (authors - ptqlib) with a paired 95% interval (the
same resampled targets in both; targets are the unit, so the interval is honest about 8 of them).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from ptqlib.results import tables as analysis
from ptqlib.study import stages as pipeline
from ptqlib.results import stats
from ptqlib.study.config import validate
from ptqlib.runtime.store import Store

ATTACK = "online_fixed"
FPR = 0.01
COMMON = {"bits": [4, 2, 1.58], "last_layer_bits": [None], "attacks": [ATTACK], "threat_models": ["fp_shadows"]}
VARIANTS = {
    "grid fine (ptqlib)": {"methods": ["rtn", "adaround", "obc"]},
    "grid authors": {"methods": ["rtn", "adaround", "obc"], "grid_search": "authors"},
    "lr per_step (ptqlib)": {"methods": ["rtn"]},
    "lr per_epoch (authors)": {"methods": ["rtn"], "lr_schedule": "per_epoch"},
}
PAIRS = [("grid fine (ptqlib)", "grid authors"), ("lr per_step (ptqlib)", "lr per_epoch (authors)")]
N_BOOT = 500


def run_variant(keys: dict, store_root: str, base: dict = COMMON) -> tuple[pd.DataFrame, dict, float]:
    cfg = validate({**base, **keys, "store": store_root, "name": base.get("name", "protocol_keys")})
    store = Store(cfg.store_path)
    t0 = time.perf_counter()
    pipeline.run_all(cfg, store)
    wall = time.perf_counter() - t0
    df, arrays = pipeline.load_attack_results(cfg, store)
    return df, arrays, wall


def rows_by_label(df: pd.DataFrame, arrays: dict, attack: str = ATTACK, threat_model: str = "fp_shadows") -> dict:
    """label -> (scores, members, test accuracies), targets in index order."""
    out = {}
    rows = df[(df["attack"] == attack) & (df["threat_model"] == threat_model)]
    for label, group in rows.groupby("label", sort=False):
        group = group.sort_values("target")
        idx = group.index.to_numpy()
        out[label] = (arrays["scores"][idx], arrays["members"][idx], group["test_acc"].to_numpy())
    return out


def pooled_tpr(scores, members) -> float:
    return stats.pooled_metrics(scores, members)[f"tpr@{FPR:g}"]


def paired_difference(a, b, seed: int = 0) -> tuple[float, float, float]:
    """Pooled TPR(b) - TPR(a), and a percentile 95% interval resampling the same targets in both."""
    rng = np.random.default_rng(seed)
    k = len(a[0])
    diffs = [pooled_tpr(b[0][p], b[1][p]) - pooled_tpr(a[0][p], a[1][p]) for p in rng.integers(0, k, (N_BOOT, k))]
    lo, hi = np.quantile(diffs, [0.025, 0.975])
    return pooled_tpr(b[0], b[1]) - pooled_tpr(a[0], a[1]), float(lo), float(hi)


def measure(base: dict, variants: dict, pairs: list, store: str, attack: str = ATTACK,
            threat_model: str = "fp_shadows") -> tuple[str, str, str]:
    """Run every variant (keys over `base`) into one store; the table, the paired differences, the wall times."""
    results, walls, rows = {}, [], []
    for name, keys in variants.items():
        df, arrays, wall = run_variant(keys, store, base)
        results[name] = rows_by_label(df, arrays, attack, threat_model)
        table = analysis.leakage_table(df, arrays, attack, threat_model, n_boot=N_BOOT).set_index("label")
        for label in results[name]:
            r = table.loc[label]
            rows.append({"variant": name, "recipe": label,
                         "test acc %": f"{100 * r['test_acc']:.2f} ± {100 * r['test_acc_std']:.2f}",
                         "pooled TPR@1%FPR % [95% CI]": f"{100 * r['tpr@0.01']:.2f} "
                                                        f"[{100 * r['tpr@0.01_ci_low']:.2f}, "
                                                        f"{100 * r['tpr@0.01_ci_high']:.2f}]"})
        walls.append(f"{name}: {wall:.1f} s (models reused from the store when present)")
        print(walls[-1], file=sys.stderr, flush=True)
    diffs = []
    for base_name, other in pairs:
        for label in results[base_name]:
            if label not in results[other]:
                continue
            a, b = results[base_name][label], results[other][label]
            d, lo, hi = paired_difference(a, b)
            acc = 100 * (b[2] - a[2])
            diffs.append({"change": f"{other} - {base_name}", "recipe": label,
                          "test acc points (mean over targets)": f"{acc.mean():+.2f} ± {acc.std(ddof=1):.2f}",
                          "pooled TPR@1%FPR points [paired 95% CI]": f"{100 * d:+.2f} [{100 * lo:+.2f}, {100 * hi:+.2f}]"})
    return pd.DataFrame(rows).to_string(index=False), pd.DataFrame(diffs).to_string(index=False), "\n".join(walls)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", default="artifacts")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "protocol_keys_digits.txt"))
    args = parser.parse_args()
    write_report(args.out, f"LiRA {ATTACK}, full-precision shadows, digits default models (8 targets x 674 non-members)",
                 *measure(COMMON, VARIANTS, PAIRS, args.store), paired_over="targets")
    return 0


def write_report(out: str, header: str, table: str, diffs: str, walls: str, paired_over: str) -> None:
    """The benchmark's output file (and the same text on the terminal)."""
    text = (f"{header}\n\n" + table + f"\n\nauthors' value - ptqlib's, same {paired_over} (paired):\n\n" + diffs
            + "\n\nwall time per variant:\n" + walls + "\n")
    Path(out).write_text(text)
    print(text)


if __name__ == "__main__":
    sys.exit(main())
