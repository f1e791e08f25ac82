"""The LiRA shadow-statistics fix (commit 404ac37) changes no ranking where the old code was finite.

Usage: python benchmarks/lira_stats_fix.py [--out benchmarks/results/lira_stats_fix.txt]

The old `_side_block` read the mean and spread from a partition's first k slots; it gave NaN when the
partition left a used score beyond slot k (seen with NumPy 2.4.6 at 97+ shadows), and was exact
otherwise. This loads the old ptqlib/attacks/lira.py from git (404ac37~1) and compares every LiRA
variant's scores with today's on Gaussian problems of the study's sizes (16, 17, 32, 64 and 256 shadows,
20,000 examples, 2 queries, with and without leave-one-out): the largest relative difference and
whether the two orderings of the examples (what every ROC reads) are identical; and the time of both
(fit + five variants, M = 64, N = 50,000, Q = 2, best of 5).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from ptqlib.attacks import lira as new
from git_module import module_at

ROOT = Path(__file__).resolve().parent.parent


def old_module():
    return module_at("404ac37~1", "ptqlib/attacks/lira.py", "lira_old")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "lira_stats_fix.txt"))
    args = parser.parse_args()
    old, rng = old_module(), np.random.default_rng(0)
    lines = [f"NumPy {np.__version__}; old = ptqlib/attacks/lira.py at 404ac37~1, new = this checkout", ""]
    for m in (16, 17, 32, 64, 256):
        n, q = 20_000, 2
        keep = np.argsort(rng.random((m, n)), axis=0) < m // 2
        mu = rng.normal(0, 3, n)
        shadow = mu[None, :, None] + keep[..., None] + rng.normal(size=(m, n, q))
        target = mu[:, None] + rng.normal(size=(n, q))
        for exclude in (None, 0):
            a = old.score_attacks(old.fit_shadow_stats(shadow, keep, exclude=exclude), target, list(old.VARIANTS))
            b = new.score_attacks(new.fit_shadow_stats(shadow, keep, exclude=exclude), target, list(new.VARIANTS))
            rel = max(float(np.max(np.abs(a[k] - b[k]) / np.maximum(np.abs(a[k]), 1e-300))) for k in a)
            same = all(np.array_equal(np.argsort(a[k], kind="stable"), np.argsort(b[k], kind="stable")) for k in a)
            nans = sum(int(np.isnan(a[k]).sum()) for k in a)
            lines.append(f"{m:3d} shadows, exclude={exclude}: {len(a)} variants, old NaNs {nans}, "
                         f"largest relative difference {rel:.1e}, identical example order in every variant: {same}")
    keep = np.argsort(rng.random((64, 50_000)), axis=0) < 32
    shadow, target = rng.normal(size=(64, 50_000, 2)) + keep[..., None], rng.normal(size=(50_000, 2))
    five = ["online", "online_fixed", "offline", "offline_fixed", "global"]
    for name, module in (("old", old), ("new", new)):
        times = []
        for _ in range(5):
            t0 = time.perf_counter()
            module.score_attacks(module.fit_shadow_stats(shadow, keep), target, five)
            times.append(time.perf_counter() - t0)
        lines.append(f"time, {name}: {min(times):.3f} s (fit + 5 variants, M = 64, N = 50,000, Q = 2, best of 5)")
    text = "\n".join(lines) + "\n"
    Path(args.out).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
