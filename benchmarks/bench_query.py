"""Querying a model for all views (ptqlib's query path) vs a plain eval loop over the same batches.

    .venv/bin/python benchmarks/bench_query.py
"""
import time

import torch

from ptqlib.data.images import load_digits_data
from ptqlib.data.views import query_views
from ptqlib.models.zoo import DigitsCNN
from ptqlib.models.training import predict_logits


def main():
    torch.set_num_threads(2)
    data = load_digits_data()
    model = DigitsCNN().eval()
    x = data.x_train
    for mode, shift in (("identity", 0), ("mirror_shift", 1), ("random_per_model", 0)):
        views = query_views(x, data.normalize, mode, shift=shift, seed=1)
        best_ours, best_plain = float("inf"), float("inf")
        for _ in range(5):
            t0 = time.perf_counter()
            vs = query_views(x, data.normalize, mode, shift=shift, seed=1)  # view construction counts against us
            torch.stack([predict_logits(model, v) for v in vs], dim=1)
            best_ours = min(best_ours, time.perf_counter() - t0)
            t0 = time.perf_counter()
            with torch.no_grad():
                for v in views:  # the same pre-made batches through a bare loop
                    for i in range(0, len(v), 1024):
                        model(v[i:i + 1024])
            best_plain = min(best_plain, time.perf_counter() - t0)
        print(f"{mode:13s} {len(views):2d} views x {len(x)} images: ptqlib {1000 * best_ours:7.1f} ms, "
              f"plain eval loop {1000 * best_plain:7.1f} ms, ratio {best_ours / best_plain:.2f}")


if __name__ == "__main__":
    main()
