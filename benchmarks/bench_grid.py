"""The quantizer core's Lp clipping search (100 candidate ranges per channel, all channels at once)
on every layer of a CIFAR ResNet-18, and whole-model RTN, at 2 bits.

    .venv/bin/python benchmarks/bench_grid.py [--threads 2]
"""
import argparse
import time

import torch

from ptqlib.models import zoo
from ptqlib.models.zoo import quantizable_layers
from ptqlib.ptq import fit_grid, quantize_model


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = zoo.build_model("resnet18", 100, 3, 32).eval()
    layers = quantizable_layers(model)
    weights = sum(layer.weight.numel() for _, layer in layers)
    t0 = time.perf_counter()
    for _, layer in layers:
        fit_grid(layer.weight.detach().flatten(1), 4)
    t_grid = time.perf_counter() - t0
    t0 = time.perf_counter()
    quantize_model(model, "rtn", {n: 4 for n, _ in layers})
    t_rtn = time.perf_counter() - t0
    print(f"CIFAR ResNet-18, {len(layers)} layers, {weights / 1e6:.1f}M weights, 2 bits, threads={args.threads}: "
          f"grid search {t_grid:.1f} s, whole-model RTN {t_rtn:.1f} s")


if __name__ == "__main__":
    main()
