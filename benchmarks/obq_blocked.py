"""Blocked OBQ downdates (ptq/obc.py, method version 2) against the per-step rank-1 form they replace.

Usage: python benchmarks/obq_blocked.py [--preset params/default.yaml] [--limit N] [--label "obc 2b"]
                                        [--out benchmarks/results/obq_blocked.txt]

Runs the preset's OBC quantize jobs (training their source models into the preset's store when
absent) twice on one thread: with today's `obq_layer` and with the one of commit 76186c2 (loaded from
git), which applied every rank-1 downdate of the inverse Hessian as it happened (memory-bound). Both
are exact OBQ; only float rounding differs, so the codes may differ where two candidates nearly tie.
Writes, per job: the wall time of both, the share of codes that are identical, the OBQ loss summed
over layers and the test accuracy of both; how often each agrees with OBQ in float64 on the first
job's own layers (both float32 forms should be equally close); then the layer-level timing on random problems of the
study's sizes (D = 288, 576, 1152). Nothing is written to the store but the source models.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from ptqlib.ptq import obc
from ptqlib.ptq.grid import CLIP_NORM, fit_grid
from ptqlib.runtime.store import Store
from ptqlib.study.plan import plan_study
from ptqlib.study.presets import load_preset
from git_module import module_at

OLD_COMMIT = "76186c2"


def old_module():
    return module_at(OLD_COMMIT, "ptqlib/ptq/obc.py", "obc_rank1")


def run_job(job, store: Store, layer_fn) -> dict:
    """One quantize job's compute into a scratch folder with `layer_fn` as OBQ's layer solver."""
    saved = obc.obq_layer
    obc.obq_layer = layer_fn
    try:
        out = Path(tempfile.mkdtemp())
        start = time.perf_counter()
        meta = job.compute(store, out)
        wall = time.perf_counter() - start
    finally:
        obc.obq_layer = saved
    grids = torch.load(out / "grid.pt", weights_only=True)
    return {"wall": wall, "acc": meta["test_acc"], "codes": {n: g["codes"] for n, g in grids.items()},
            "loss": sum(st["loss"] for st in meta["method_stats"].values())}


def layer_timing(old, lines: list[str]) -> None:
    gen = torch.Generator().manual_seed(0)
    lines.append("layer timing on random problems (1 thread, 3 levels, float32, correlated inputs):")
    for d, rows in ((288, 64), (576, 64), (1152, 128)):
        x = torch.randn(4 * d, d, generator=gen) @ (torch.eye(d) + 0.1 * torch.randn(d, d, generator=gen))
        h = 2 * x.T.double() @ x.double() / len(x)
        w = 0.1 * torch.randn(rows, d, generator=gen)
        grid = fit_grid(w, 3, norm=CLIP_NORM)
        times, codes = {}, {}
        for name, fn in (("rank-1", old.obq_layer), ("blocked", obc.obq_layer)):
            start = time.perf_counter()
            codes[name], _ = fn(w, h, grid, 0.01)
            times[name] = time.perf_counter() - start
        same = (codes["rank-1"] == codes["blocked"]).double().mean().item()
        lines.append(f"   D {d:5d}, {rows:3d} rows: rank-1 {times['rank-1']:7.2f} s, blocked {times['blocked']:6.2f} s "
                     f"({times['rank-1'] / times['blocked']:.1f}x), codes identical {100 * same:.2f}%")


def float64_agreement(old, job, store: Store, lines: list[str]) -> None:
    """Both float32 forms against OBQ in float64 on one job's own layer Hessians (FP model, its calibration set)."""
    from ptqlib.models.zoo import quantizable_layers
    from ptqlib.study.jobs.base import load_data
    model = job.source.load(store)
    calib = job.calibration_set(load_data(job.train_job.data, store), job.keep(store))
    layers = dict(quantizable_layers(model))
    accs = obc.fp_hessians(model, list(layers), calib)
    lines.append(f"agreement with float64 OBQ on {job.train_job.role} {job.train_job.index}'s layers "
                 "(FP Hessians of its calibration set, damp 0.01):")
    for levels in (3, 4, 16, 256):
        for name, acc in accs.items():
            w = layers[name].weight.detach().flatten(1).float()
            grid = fit_grid(w, levels, norm=CLIP_NORM)
            ref, l64 = obc.obq_layer(w.double(), acc.hessian(), grid, 0.01, dtype=torch.float64)
            a, la = old.obq_layer(w, acc.hessian(), grid, 0.01)
            b, lb = obc.obq_layer(w, acc.hessian(), grid, 0.01)
            pct = lambda x, y: 100 * (x == y).double().mean().item()  # noqa: E731
            lines.append(f"   {levels:3d} levels {name:12s} codes equal to float64: rank-1 {pct(a, ref):6.2f}%, "
                         f"blocked {pct(b, ref):6.2f}% (rank-1 vs blocked {pct(a, b):6.2f}%); loss float64 "
                         f"{l64.sum():.5f}, rank-1 {la.sum():.5f}, blocked {lb.sum():.5f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="params/default.yaml")
    ap.add_argument("--limit", type=int, default=0, help="at most this many OBC jobs (0: all)")
    ap.add_argument("--label", default="", help="only jobs with this recipe label, e.g. 'obc 2b'")
    ap.add_argument("--skip-layers", action="store_true", help="no random-problem layer timing")
    ap.add_argument("--out", default="benchmarks/results/obq_blocked.txt")
    args = ap.parse_args()
    torch.set_num_threads(1)
    cfg = load_preset(args.preset)
    plan = plan_study(cfg)
    store = Store(cfg.store)
    jobs = [j for j in plan.stages["quantize"] if j.method == "obc" and (not args.label or j.label == args.label)]
    jobs = jobs[:args.limit] if args.limit else jobs
    old = old_module()
    lines = [f"obq_blocked: {args.preset}, {len(jobs)} OBC jobs, torch {torch.__version__}, 1 thread, "
             f"rank-1 = commit {OLD_COMMIT}'s obq_layer, blocked = today's (OBQ_BLOCK {obc.OBQ_BLOCK})",
             "   job                          rank-1 s  blocked s   codes identical   loss rank-1 / blocked   "
             "test acc rank-1 / blocked"]
    totals = {"rank-1": 0.0, "blocked": 0.0}
    same_jobs, acc_diffs = 0, []
    for job in jobs:
        job.source.run(store)
        res = {name: run_job(job, store, fn) for name, fn in (("rank-1", old.obq_layer), ("blocked", obc.obq_layer))}
        a, b = res["rank-1"], res["blocked"]
        n = sum(c.numel() for c in a["codes"].values())
        equal = sum(int((a["codes"][k] == b["codes"][k]).sum()) for k in a["codes"])
        same_jobs += equal == n
        acc_diffs.append(100 * (b["acc"] - a["acc"]))
        for name in totals:
            totals[name] += res[name]["wall"]
        who = f"{job.train_job.role} {job.train_job.index} {job.label}"
        lines.append(f"   {who:28s} {a['wall']:8.2f} {b['wall']:10.2f}   {100 * equal / n:14.3f}%   "
                     f"{a['loss']:9.4f} / {b['loss']:9.4f}    {100 * a['acc']:6.2f} / {100 * b['acc']:6.2f}")
        print(lines[-1], flush=True)
    if jobs:
        lines.append(f"   all {len(jobs)} jobs: rank-1 {totals['rank-1']:.1f} s, blocked {totals['blocked']:.1f} s "
                     f"({totals['rank-1'] / totals['blocked']:.2f}x); jobs with every code identical: "
                     f"{same_jobs} of {len(jobs)}; test accuracy differs in {sum(x != 0 for x in acc_diffs)} "
                     f"(largest difference {max(abs(x) for x in acc_diffs):.2f} pt, mean {sum(acc_diffs) / len(jobs):+.2f} pt)")
    if not args.skip_layers:
        if jobs:
            float64_agreement(old, jobs[0], store, lines)
        layer_timing(old, lines)
    text = "\n".join(lines) + "\n"
    print(text)
    with open(args.out, "a") as f:
        f.write(text + "\n")


if __name__ == "__main__":
    main()
