"""Time and peak memory of the five main LiRA variants from stored scores.

M = 64 shadows, N = 50,000 examples, Q = 2 views, balanced masks (the paper's CIFAR setting).
Compares two ways to compute online, online_fixed, offline, offline_fixed and global:
- plain: each variant on its own, structured like the reference code (argsort + gather of the
  IN/OUT scores, np.median and np.std over models), written here for contrast;
- ptqlib: fit_shadow_stats once, then score_attacks (the library's one way).

    python benchmarks/bench_lira.py          # writes benchmarks/results/lira.txt
"""
from __future__ import annotations

import math
import os
import platform
import time
import tracemalloc
from pathlib import Path

import numpy as np

from ptqlib.attacks import lira
from ptqlib.attacks import rmia

M, N, Q = 64, 50_000, 2
VARIANTS = lira.MAIN_ATTACKS
REPEATS = 5
RESULTS = Path(__file__).parent / "results" / "lira.txt"


# ---------------------------------------------------------------- the plain implementation

def _plain_split(scores, keep):
    k_in, k_out = int(keep.sum(0).min()), int((~keep).sum(0).min())
    in_first = np.argsort(~keep, axis=0, kind="stable")[:k_in]
    out_first = np.argsort(keep, axis=0, kind="stable")[:k_out]
    return (np.take_along_axis(scores, in_first[..., None], axis=0),
            np.take_along_axis(scores, out_first[..., None], axis=0))


def _logpdf(x, mu, sd):
    return -0.5 * ((x - mu) / sd) ** 2 - np.log(sd) - 0.5 * math.log(2 * math.pi)


def plain_variant(name, scores, keep, target):
    if name == "global":
        return target.mean(axis=-1)
    dat_in, dat_out = _plain_split(scores, keep)
    mu_out = np.median(dat_out, axis=0)
    if name.startswith("online"):
        mu_in = np.median(dat_in, axis=0)
        if name == "online_fixed":
            sd_in = sd_out = np.std(dat_in)
        else:
            sd_in, sd_out = np.std(dat_in, axis=0), np.std(dat_out, axis=0)
        return (_logpdf(target, mu_in, sd_in + 1e-30) - _logpdf(target, mu_out, sd_out + 1e-30)).mean(axis=-1)
    sd_out = np.std(dat_out) if name == "offline_fixed" else np.std(dat_out, axis=0)
    return -_logpdf(target, mu_out, sd_out + 1e-30).mean(axis=-1)


def plain_all(scores, keep, target):
    return {name: plain_variant(name, scores, keep, target) for name in VARIANTS}


def shared_all(scores, keep, target):
    return lira.score_attacks(lira.fit_shadow_stats(scores, keep), target, VARIANTS)


# ---------------------------------------------------------------- measurement

def best_time(fn, *args, repeats=REPEATS):
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn(*args)
        times.append(time.perf_counter() - t0)
    return min(times), float(np.median(times))


def peak_extra_bytes(fn, *args):
    """Peak of numpy/Python allocations during fn (tracemalloc sees numpy's buffers), above the start."""
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    tracemalloc.reset_peak()
    fn(*args)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak - base


def main():
    rng = np.random.default_rng(0)
    keep = np.argsort(rng.random((M, N)), axis=0) < M // 2          # balanced, as the study's masks
    mu = rng.normal(2.0, 3.0, size=(1, N, 1))
    scores = mu + 1.0 * keep[..., None] + rng.normal(size=(M, N, Q))   # float64, (M, N, Q)
    target = mu[0] + rng.normal(size=(N, Q))
    mb = scores.nbytes / 2**20

    lines = [f"LiRA, five variants ({', '.join(VARIANTS)}) from stored scores",
             f"M = {M} shadows, N = {N} examples, Q = {Q} views; score array {mb:.1f} MiB (float64)",
             f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs visible, "
             f"numpy {np.__version__}; times: best (median) of {REPEATS} runs", ""]

    reference = plain_all(scores, keep, target)
    for label, fn in [("plain (reference-like, per variant)", plain_all),
                      ("ptqlib shared: fit_shadow_stats + score_attacks", shared_all)]:
        got = fn(scores, keep, target)
        diff = max(float(np.max(np.abs(got[k] - reference[k]) / (1 + np.abs(reference[k])))) for k in VARIANTS)
        best, med = best_time(fn, scores, keep, target, repeats=REPEATS if fn is not plain_all else 3)
        peak = peak_extra_bytes(fn, scores, keep, target) / 2**20
        lines.append(f"{label:48s} {best:6.3f} s ({med:.3f})   peak extra {peak:6.1f} MiB "
                     f"= {peak / mb:4.2f} x scores   max rel. diff vs plain {diff:.1e}")

    stats = lira.fit_shadow_stats(scores, keep)
    fit, _ = best_time(lira.fit_shadow_stats, scores, keep)
    per_target, _ = best_time(lira.score_attacks, stats, target, VARIANTS)
    lines += ["", f"of which fit_shadow_stats {fit:.3f} s (once per shadow pool); "
                  f"score_attacks per further target {1000 * per_target:.1f} ms"]

    probs = rmia.true_label_probs(scores)
    t_probs = rmia.true_label_probs(target)
    population = np.flatnonzero(rng.random(N) < 0.5)
    t_rmia, _ = best_time(lambda: rmia.rmia_offline(probs, keep, t_probs, population))
    lines.append(f"RMIA offline (Z = {population.size} population points): {t_rmia:.3f} s "
                 f"(+ true_label_probs of the shadows once)")

    text = "\n".join(lines) + "\n"
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(text)
    print(text, end="")
    print(f"written to {RESULTS}")


if __name__ == "__main__":
    main()
