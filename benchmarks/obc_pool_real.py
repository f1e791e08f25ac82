"""Exact OBC on several real-image pool models, now that blocked OBQ makes it affordable (#19).

Usage: python benchmarks/obc_pool_real.py [--models 4] [--out benchmarks/results/obc_pool_real.txt]

The real-image study (params/cifar10-10k.yaml) runs OBC on pool model 0 only (obc_models 1), so its OBC
rows have no interval. This runs the same preset with methods [obc] and obc_models N (0: all, so the
matched threat model scores OBC too; everything else,
the authors' OBC protocol included, unchanged; the pool's training jobs are the study's own, shared
through the store) from the command line, times each stage, and writes real_study.py's tables for it:
LiRA online, leave-one-out with full-precision shadows (and with matched shadows where every model has
OBC), OBC 2 and 1.58 bits (plain and with an 8-bit last layer) on N models against FP32 on the same
models, 95% intervals resampling models.
Measured: 4 models (2026-12-03, 1008 s from a store without the pool), then all 16.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from ptqlib.study.presets import read_preset  # noqa: E402

PRESET = ROOT / "params" / "cifar10-10k.yaml"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", type=int, default=0, help="OBC on pool models with index < N (0: all 16)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "obc_pool_real.txt"))
    args = ap.parse_args()
    raw = {**read_preset(PRESET), "name": f"cifar10-10k-obc{args.models or 'all'}", "methods": ["obc"],
           "obc_models": args.models}
    preset = Path(tempfile.mkdtemp()) / f"{raw['name']}.yaml"
    preset.write_text(yaml.safe_dump(raw, sort_keys=False))
    log = preset.with_suffix(".log")
    start = time.perf_counter()
    with open(log, "w") as f:
        subprocess.run([sys.executable, "-m", "ptqlib", "run", str(preset), "--stages", "train,shadows,quantize,attack"],
                       cwd=ROOT, check=True, stdout=f, stderr=subprocess.STDOUT)
    wall = time.perf_counter() - start
    with open(args.out, "a") as f:
        f.write(f"obc_pool_real: {PRESET.name} with methods [obc], obc_models {args.models}; stages train..attack "
                f"from the store as found: {wall:.0f} s wall\n")
    subprocess.run([sys.executable, str(ROOT / "benchmarks" / "real_study.py"), "--preset", str(preset),
                    "--log", str(log), "--out", args.out], cwd=ROOT, check=True)


if __name__ == "__main__":
    main()
