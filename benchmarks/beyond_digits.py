"""Beyond the paper on digits: PTQ vs accuracy-matched controls, W/A combinations, the PTQ / DP-SGD /
pruning frontier, the per-example view, and the wall-time cost of each addition.

    PYTHONPATH=. .venv/bin/python benchmarks/beyond_digits.py [--store DIR] > benchmarks/results/beyond_digits.txt

A reduced recipe set (RTN and OBC at 8/4/2/1.58 bits, no decoupled last layer; activations FP, 8
and 4 bits), 8 targets, 32 shadows, LiRA online (per-example variance) against FP shadows;
DP-SGD targets against 8 DP shadows of the same noise. The store defaults to /work/main/artifacts
when it exists (the default study's models are reused), else to the worktree's own store.
"""
from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import pandas as pd

from ptqlib.results import tables as analysis
from ptqlib.results import per_example
from ptqlib.study import stages as pipeline
from ptqlib.results import stats
from ptqlib.study.config import validate
from ptqlib.runtime.store import Store

BEYOND = {"control_noise": True, "control_epochs": [2, 5, 10], "dp_noise": [0.5, 1.0, 2.0], "dp_epochs": 20,
          "dp_shadows": 8, "dp_clip": 1.0, "prune_sparsity": [0.5, 0.8, 0.95]}
STUDY = {"methods": ["rtn", "obc"], "bits": [8, 4, 2, 1.58], "last_layer_bits": [None], "act_bits": [None, 8, 4],
         "attacks": ["online", "online_fixed", "global"], "executor": "process", "workers": 2, "worker_threads": 1}
FAMILIES = {"weight noise controls": {"control_noise": True}, "fewer-epochs controls": {"control_epochs": [2, 5, 10]},
            "DP-SGD": {k: BEYOND[k] for k in ("dp_noise", "dp_epochs", "dp_shadows", "dp_clip")},
            "pruning": {"prune_sparsity": BEYOND["prune_sparsity"]}}


def timed(what: str, times: dict, fn, *args):
    t0 = time.perf_counter()
    out = fn(*args)
    times[what] = time.perf_counter() - t0
    print(f"# {what}: {times[what]:.1f} s", flush=True)
    return out


def pct(x: float) -> str:
    return f"{100 * x:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_store = "/work/main/artifacts" if Path("/work/main/artifacts").is_dir() else "artifacts"
    parser.add_argument("--store", default=default_store, help=f"job store (default: {default_store})")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    base = {**STUDY, "store": args.store}
    weight_only = validate({**base, "act_bits": [None]})
    full = validate({**base, **BEYOND})
    store = Store(full.store_path)
    times: dict[str, float] = {}
    print(f"# store {full.store_path}; {full.num_targets} targets, {full.num_shadows} shadows, {full.epochs} epochs; "
          f"2 process workers x 1 thread on a 2-core machine shared with other engineers")
    timed("train targets + shadows (the default study's models)", times,
          lambda: (pipeline.run_train_targets(full, store), pipeline.run_train_shadows(full, store)))
    timed("quantize, weight-only recipes", times, pipeline.run_quantize, weight_only, store)
    timed("quantize, + activation recipes (a8, a4)", times, pipeline.run_quantize, full, store)
    timed("query + attack, weight-only recipes", times, pipeline.run_attacks, weight_only, store)
    timed("query + attack, + activation recipes", times, pipeline.run_attacks, full, store)
    for family, keys in FAMILIES.items():
        timed(family, times, pipeline.run_extras, validate({**base, **keys}), store)
    beyond, barr = pipeline.run_extras(full, store)
    results, arrays = pipeline.load_attack_results(full, store)
    pd.set_option("display.width", 200)
    pd.set_option("display.max_columns", 30)

    print("\n## 1. Is it the lost accuracy or the quantization? (LiRA online, FP shadows, pooled TPR@1%FPR %)")
    ctl = analysis.controls_table(results, arrays, beyond, barr)
    show = pd.DataFrame({
        "recipe": ctl["recipe"], "acc %": ctl["recipe_acc"].map(pct),
        "TPR@1% [95% CI]": [f"{pct(a)} [{pct(b)}, {pct(c)}]" for a, b, c in
                            zip(ctl["recipe_tpr@0.01"], ctl["recipe_tpr@0.01_ci_low"], ctl["recipe_tpr@0.01_ci_high"])],
        "matched control": ctl["control"], "control acc %": ctl["control_acc"].map(pct),
        "control TPR@1% [95% CI]": [f"{pct(a)} [{pct(b)}, {pct(c)}]" for a, b, c in
                                    zip(ctl["control_tpr@0.01"], ctl["control_tpr@0.01_ci_low"],
                                        ctl["control_tpr@0.01_ci_high"])],
        "recipe - control (pt)": (100 * ctl["leak_gap"]).round(2)})
    print(show.to_string(index=False))

    print("\n## 2. Weight x activation bits (LiRA online, FP shadows)")
    act = analysis.activation_table(results, arrays)
    act = act.assign(act_bits=act["act_bits"].map(lambda b: "fp" if pd.isna(b) else f"a{int(b)}"))
    print(pd.DataFrame({"weights": act["weights"], "acts": act["act_bits"],
                        "acc % (mean ± std)": [f"{pct(m)} ± {pct(s)}" for m, s in zip(act["test_acc"], act["test_acc_std"])],
                        "TPR@1% pooled [95% CI]": [f"{pct(a)} [{pct(b)}, {pct(c)}]" for a, b, c in
                                                   zip(act["tpr@0.01"], act["tpr@0.01_ci_low"], act["tpr@0.01_ci_high"])],
                        "TPR@0.1% pooled": act["tpr@0.001"].map(pct), "AUC %": act["auc"].map(pct)}).to_string(index=False))

    print("\n## 3. Frontier: PTQ (FP shadows) vs DP-SGD and pruning (same-defence and FP shadows)")
    fr = analysis.frontier_table(results, arrays, beyond, barr)
    print(pd.DataFrame({"family": fr["family"], "label": fr["label"], "shadows": fr["threat_model"],
                        "acc %": fr["test_acc"].map(pct), "TPR@1% pooled": fr["tpr@0.01"].map(pct),
                        "95% CI": [f"[{pct(b)}, {pct(c)}]" for b, c in zip(fr["tpr@0.01_ci_low"], fr["tpr@0.01_ci_high"])],
                        "epsilon (delta=1/N)": fr["epsilon"].map(lambda e: "" if pd.isna(e) else f"{e:.2f}")}
                       ).to_string(index=False))

    print("\n## 4. Per-target mean ± std [bootstrap 95% CI] (stats.summary_table), LiRA online, in %")
    both = pd.concat([results, beyond], ignore_index=True)
    rows = both[both["attack"] == "online"]
    table = stats.summary_table(rows, ["threat_model", "label"], ["test_acc", "tpr@0.01", "auc"], n_boot=2000)
    for c in ("test_acc", "tpr@0.01", "auc"):
        table[c] = [f"{pct(m)} ± {pct(s)} [{pct(lo)}, {pct(hi)}]" for m, s, lo, hi in
                    zip(table[c], table[c + "_std"], table[c + "_ci_low"], table[c + "_ci_high"])]
    print(table[["threat_model", "label", "test_acc", "tpr@0.01", "auc", "targets"]].to_string(index=False))

    print("\n## 5. Per-example view: FP32's top-20 members detected at 1% FPR, per target, under each recipe")
    pool = pipeline.fp_shadow_pool(full, store)
    gap = per_example.atypicality(pool.scores, pool.keep)
    view = per_example.per_example_scores(results, arrays, gap, fpr=0.01, top=20)
    print(per_example.per_example_summary(view).round(3).to_string(index=False))

    print("\n## wall time of each addition (s; shared 2-core machine)")
    for what, s in times.items():
        print(f"  {what:55s} {s:8.1f}")


if __name__ == "__main__":
    main()
