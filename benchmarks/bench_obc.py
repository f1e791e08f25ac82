"""Exact OBC on one 3x3 conv, 64 -> 64 channels (D = 576), 2 bits, 256 calibration images of 8x8.

Target: <= 5 s on a 2-core CPU (a public reference implementation takes ~20 s there), with a
total loss no higher than the reference's. The public code is not run here; the comparison is
with tests/reference_obq.py, the textbook algorithm written plainly (one row, one weight at a
time, float64), which is what the public implementation computes. Prints the times, the total
losses, and for comparison RTN's and GPTQ's (loss = sum over rows of 1/2 (w - q)^T H (w - q),
H undamped, i.e. the mean squared output error per position).

    python benchmarks/bench_obc.py [--threads 2] [--budget-mb 128]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch import nn

from ptqlib.ptq import fit_grid
from ptqlib.ptq.obc import HessianAccumulator, gptq_layer, obq_layer

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the textbook OBQ lives with the tests
from reference_obq import obq_reference  # noqa: E402


def loss(w, q, h):
    e = (w - q).double()
    return float(0.5 * ((e @ h) * e).sum())


def main() -> str:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--budget-mb", type=int, default=0, help="0 = the library default")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    conv = nn.Conv2d(64, 64, 3, padding=1, bias=False)
    x = torch.relu(torch.randn(256, 64, 8, 8) + 0.3 * torch.randn(256, 64, 1, 1))  # correlated channels
    acc = HessianAccumulator(conv)
    conv.register_forward_hook(acc)
    with torch.no_grad():
        conv(x)
    h = acc.hessian()
    w = conv.weight.detach().flatten(1)
    grid = fit_grid(w, 4)
    lines = [f"OBC benchmark: conv 3x3 64->64 (D=576), 2 bits, 256 images 8x8, threads={args.threads}"]
    t0 = time.perf_counter()
    codes, _ = obq_layer(w, h, grid, damp=0.01, budget=args.budget_mb * 2 ** 20 or None)
    t_obq = time.perf_counter() - t0
    t0 = time.perf_counter()
    gcodes, _ = gptq_layer(w, h, grid, damp=0.01)
    t_gptq = time.perf_counter() - t0
    t0 = time.perf_counter()
    rcodes, _ = obq_reference(w, h, grid, damp=0.01)
    t_ref = time.perf_counter() - t0
    l_rtn, l_obq, l_gptq, l_ref = (loss(w, grid.dequantize(c), h) for c in (grid.codes(w), codes, gcodes, rcodes))
    same = float((codes == rcodes).float().mean())
    lines += [f"  exact OBQ : {t_obq:6.2f} s   loss {l_obq:.4f}   ({l_obq / l_rtn:.3f} x RTN)",
              f"  reference : {t_ref:6.2f} s   loss {l_ref:.4f}   (textbook OBQ, float64; ours / reference "
              f"{l_obq / l_ref:.4f}, {same:.1%} of codes identical)",
              f"  GPTQ      : {t_gptq:6.2f} s   loss {l_gptq:.4f}   ({l_gptq / l_rtn:.3f} x RTN)",
              f"  RTN       :          loss {l_rtn:.4f}",
              f"  target: OBQ <= 5 s -> {'PASS' if t_obq <= 5 else 'FAIL'}; "
              f"loss <= reference (0.1% float32 tolerance) -> {'PASS' if l_obq <= l_ref * 1.001 else 'FAIL'}"]
    text = "\n".join(lines)
    print(text)
    return text


if __name__ == "__main__":
    main()
