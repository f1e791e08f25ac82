"""The canary audit and the both-models attacker on digits (params/canaries.yaml), with the wall time.

    PYTHONPATH=. .venv/bin/python benchmarks/canaries_digits.py [--store DIR] > benchmarks/results/canaries_digits.txt

1. Canaries (100 mislabeled pool examples): pooled TPR at 1% and 0.1% FPR of canary members vs
   canary non-members, FP32 vs every recipe vs DP-SGD, beside the same figures on the rest of the pool.
2. DP-SGD beside the recipe of closest accuracy (canaries; same kind of shadows).
3. Both models: the FP32 model alone vs the quantized model alone vs the pair (all examples, then canaries).
Intervals: 95% percentile bootstrap over targets (whole targets resampled, one pooled ROC each).
The canaried pool changes every model, so nothing of another preset's store is reused.
"""
from __future__ import annotations

import argparse
import dataclasses
import platform
import time
import warnings

import pandas as pd
import torch

from ptqlib.results import canaries
from ptqlib.study import stages as pipeline
from ptqlib.study.config import REPO_ROOT
from ptqlib.study.presets import load_preset
from ptqlib.study.plan import plan_study
from ptqlib.runtime.store import Store

N_BOOT = 200


def pct(x: float) -> str:
    return f"{100 * x:.2f}"


def ci(row, col: str) -> str:
    return f"{pct(row[col])} [{pct(row[col + '_ci_low'])}, {pct(row[col + '_ci_high'])}]"


def canary_rows(table: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({
        "shadows": table["threat_model"], "model": table["label"], "acc %": table["test_acc"].map(pct),
        "eps": table["epsilon"].map(lambda e: "" if pd.isna(e) else f"{e:.1f}"),
        "canary TPR@1% [CI]": [ci(r, "canary_tpr@0.01") for _, r in table.iterrows()],
        "canary TPR@0.1% [CI]": [ci(r, "canary_tpr@0.001") for _, r in table.iterrows()],
        "canary AUC": table["canary_auc"].map(pct),
        "rest TPR@1%": table["rest_tpr@0.01"].map(pct), "rest TPR@0.1%": table["rest_tpr@0.001"].map(pct),
        "canary non-members": table["canary_nonmembers"]})


def pair_rows(table: pd.DataFrame) -> pd.DataFrame:
    out = {"recipe": table["label"], "acc %": table["test_acc"].map(pct)}
    for m, name in (("tpr@0.01", "TPR@1%"), ("tpr@0.001", "TPR@0.1%")):
        out[f"FP32 alone {name}"] = table[f"fp32_{m}"].map(pct)
        out[f"quantized alone {name}"] = table[f"quantized_{m}"].map(pct)
        out[f"both {name} [CI]"] = [ci(r, f"both_{m}") for _, r in table.iterrows()]
        out[f"both - FP32 {name} [CI]"] = [f"{100 * r[m + '_diff']:+.2f} [{100 * r[m + '_diff_ci_low']:+.2f}, "
                                           f"{100 * r[m + '_diff_ci_high']:+.2f}]" for _, r in table.iterrows()]
    out["non-members"] = table["n_nonmembers"]
    return pd.DataFrame(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", default="artifacts", help="job store (default: the checkout's artifacts/)")
    parser.add_argument("--smoke", action="store_true", help="a tiny version (2 targets, 4 shadows, 2 epochs) "
                        "that checks the script in a minute; its figures mean nothing")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    cfg = dataclasses.replace(load_preset(REPO_ROOT / "params" / "canaries.yaml"), store=args.store)
    if args.smoke:
        cfg = dataclasses.replace(cfg, num_targets=2, num_shadows=4, epochs=2, dp_epochs=1, canaries=40,
                                  calib_samples=128)
    store = Store(cfg.store_path)
    planned = plan_study(cfg)
    jobs = [j for stage in planned.stages.values() for j in stage]
    stored = sum(store.is_complete(j) for j in jobs)
    times = {}
    start = time.perf_counter()
    for what, stage in (("train targets", pipeline.run_train_targets), ("train shadows", pipeline.run_train_shadows),
                        ("quantize targets and shadows", pipeline.run_quantize),
                        ("query + attack (3 threat models)", pipeline.run_attacks),
                        ("DP-SGD: train, query, attack", pipeline.run_beyond)):
        t0 = time.perf_counter()
        stage(cfg, store)
        times[what] = time.perf_counter() - t0
    results, arrays = pipeline.load_attack_results(cfg, store)
    beyond, beyond_arrays = pipeline.load_beyond_results(cfg, store)
    data = pipeline.dataset(cfg, store)
    t0 = time.perf_counter()
    tables = {a: canaries.canary_table(results, arrays, data.canaries, a, beyond=beyond, beyond_arrays=beyond_arrays,
                                       n_boot=N_BOOT) for a in ("online", "online_fixed")}
    pairs = {(a, s): canaries.both_models_table(results, arrays, a, subset=data.canaries if s else None, n_boot=N_BOOT)
             for a in ("online", "online_fixed") for s in (False, True)}
    times["analysis tables (bootstrap)"] = time.perf_counter() - t0
    total = time.perf_counter() - start
    pd.set_option("display.width", 250)
    pd.set_option("display.max_columns", 40)
    print(f"# benchmarks/canaries_digits.py, {time.strftime('%Y-%m-%d')}, torch {torch.__version__}, "
          f"{platform.processor() or platform.machine()}; {cfg.executor} executor, {cfg.workers} workers x "
          f"{cfg.worker_threads} thread on a 2-core machine shared with other engineers (timings are upper bounds)")
    print(f"# preset params/canaries.yaml: {cfg.canaries} {cfg.canary_kind} canaries in a pool of {len(data.y_train)}, "
          f"{cfg.num_targets} targets, {cfg.num_shadows} shadows, {cfg.epochs} epochs, {'/'.join(cfg.methods)} at "
          f"{'/'.join(map(str, cfg.bits))} bits, DP-SGD sigma {list(cfg.dp_noise)} ({cfg.dp_epochs} epochs, "
          f"{cfg.dp_shadows} DP shadows)")
    print(f"# total wall time {total:.0f} s ({total / 60:.1f} min), {len(jobs)} jobs, "
          + ("from an empty store" if not stored else f"{stored} of them already stored (not a full run)"))
    for what, s in times.items():
        print(f"#   {what:40s} {s:7.1f} s")
    print("# TPR figures in %, pooled over targets; [95% CI] from resampling targets; 'rest' = the non-canary pool.")
    print("# A pooled TPR@0.1% on the canaries rests on < 1 expected false positive: 0 false positives allowed.")
    for attack, table in tables.items():
        print(f"\n## 1. Canary audit, LiRA {attack.replace('_', ' ')} "
              "(fp_shadows: FP shadows / DP rows: FP shadows; matched_shadows: shadows quantized or DP-trained alike)")
        print(canary_rows(table).to_string(index=False))
    for attack, table in tables.items():
        print(f"\n## 2. DP-SGD at matched accuracy (canary TPR@1%, LiRA {attack.replace('_', ' ')})")
        m = canaries.matched_accuracy(table)
        print(pd.DataFrame({"shadows": m["threat_model"], "defence": m["defence"], "acc %": m["defence_acc"].map(pct),
                            "eps": m["epsilon"].map(lambda e: f"{e:.1f}"),
                            "canary TPR@1%": m["defence_canary_tpr@0.01"].map(pct), "closest recipe": m["recipe"],
                            "recipe acc %": m["recipe_acc"].map(pct),
                            "recipe canary TPR@1%": m["recipe_canary_tpr@0.01"].map(pct),
                            "defence - recipe (pt)": (100 * m["defence_minus_recipe"]).round(2)}
                           ).to_string(index=False))
    for (attack, on_canaries), table in pairs.items():
        where = "canaries only" if on_canaries else "whole pool"
        print(f"\n## 3. Both models: FP32 + quantized release vs FP32 alone ({where}, LiRA {attack.replace('_', ' ')}; "
              "quantized alone = matched shadows)")
        print(pair_rows(table).to_string(index=False))


if __name__ == "__main__":
    main()
