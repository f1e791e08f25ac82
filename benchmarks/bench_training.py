"""Training throughput per architecture at 32x32, and what the data pipeline costs.

Run:  .venv/bin/python benchmarks/bench_training.py [--archs resnet18,...] [--threads 2]

For each architecture it times SGD steps (forward + backward + update, batch 128 unless
--batch says otherwise) in two ways, interleaved step by step so a busy shared CPU affects
both alike:
- pure:     forward + backward on a pre-made, normalised batch;
- pipeline: what ptqlib/training.py does per step: pick the batch from the normalised member
            tensor, `augment_batch(.., 'crop_flip')`, then forward + backward.
It also times the uint8 route's batch preparation (index uint8 images, augment, normalise
per batch) and inference throughput (eval mode, no grad: accuracy and LiRA queries). The overhead ratio is pipeline throughput / pure throughput (target: >= 90%).
Output goes to stdout and benchmarks/results/training.txt.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from ptqlib.data.images import ImageData, channel_stats  # noqa: E402
from ptqlib.data.views import augment_batch
from ptqlib.models.zoo import build_model  # noqa: E402

DEFAULT_BATCH = {"resnet18": 128, "resnet50": 64, "densenet121": 64}
DEFAULT_STEPS = {"resnet18": 4, "resnet50": 2, "densenet121": 2}


def fake_pool(n: int, size: int = 32, classes: int = 10) -> ImageData:
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=gen)
    y = torch.randint(0, classes, (n,), generator=gen)
    mean, std = channel_stats(x)
    return ImageData("bench", x, y, x[:8], y[:8], classes, mean, std)


def bench_arch(arch: str, batch: int, steps: int, pool_size: int = 2048) -> dict:
    torch.manual_seed(0)
    data = fake_pool(pool_size)
    model = build_model(arch, 10, 3, 32).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    loss_fn = nn.CrossEntropyLoss()
    gen = torch.Generator().manual_seed(1)
    x_norm = data.normalize(data.x_train)  # training.py normalises the member set once
    fixed_x, fixed_y = x_norm[:batch].clone(), data.y_train[:batch].clone()

    def step(xb, yb):
        loss = loss_fn(model(xb), yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def timed(make_batch) -> tuple[float, float]:
        t0 = time.perf_counter()
        xb, yb = make_batch()
        t1 = time.perf_counter()
        step(xb, yb)
        return time.perf_counter() - t0, t1 - t0

    def pure():
        return fixed_x, fixed_y

    def pipeline():  # ptqlib/training.py: float members, augment per batch
        b = torch.randint(0, pool_size, (batch,), generator=gen)
        return augment_batch(x_norm[b], "crop_flip", gen), data.y_train[b]

    def uint8_route():  # augment uint8, then normalise the batch (the alternative design)
        b = torch.randint(0, pool_size, (batch,), generator=gen)
        return data.normalize(augment_batch(data.x_train[b], "crop_flip", gen)), data.y_train[b]

    step(fixed_x, fixed_y)  # warm-up (allocator, kernels)
    times = {"pure": [], "pipeline": []}
    prep = {"pipeline": [], "uint8": []}
    for _ in range(steps):
        times["pure"].append(timed(pure)[0])
        total, p = timed(pipeline)
        times["pipeline"].append(total)
        prep["pipeline"].append(p)
    for _ in range(5):  # the uint8 route's batch preparation alone (its model step is the same)
        t0 = time.perf_counter()
        uint8_route()
        prep["uint8"].append(time.perf_counter() - t0)
    model.eval()
    with torch.no_grad():  # inference (accuracy, LiRA queries), as predict_logits runs it
        model(fixed_x)
        t0 = time.perf_counter()
        model(fixed_x)
        eval_s = time.perf_counter() - t0
    med = {k: min(v) for k, v in times.items()}  # noise on a shared CPU only adds time
    return {"arch": arch, "batch": batch, "steps": steps,
            "pure_ips": batch / med["pure"], "pipeline_ips": batch / med["pipeline"],
            "eval_ips": batch / eval_s,
            "prep_ms": 1e3 * min(prep["pipeline"]),
            "prep_uint8_ms": 1e3 * min(prep["uint8"]),
            "ratio": med["pure"] / med["pipeline"],
            # the same ratio from the batch-preparation time alone (less sensitive to CPU noise)
            "ratio_from_prep": med["pure"] / (med["pure"] + min(prep["pipeline"]))}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--archs", default="resnet18,resnet50,densenet121")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=0, help="0 = per-architecture default")
    parser.add_argument("--steps", type=int, default=0, help="0 = per-architecture default")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "training.txt"))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    lines = [f"# training throughput at 32x32 (CPU, {torch.get_num_threads()} threads, torch {torch.__version__}, "
             f"{platform.processor() or platform.machine()}, load average {os.getloadavg()[0]:.1f} at start); "
             f"best of the timed steps after one warm-up",
             f"{'arch':<12} {'batch':>5} {'steps':>5} {'pure img/s':>11} {'pipeline img/s':>15} "
             f"{'ratio':>6} {'prep ms':>8} {'ratio(prep)':>11} {'uint8 prep ms':>14} {'eval img/s':>11}"]
    print("\n".join(lines), flush=True)
    ok = True
    for arch in args.archs.split(","):
        r = bench_arch(arch, args.batch or DEFAULT_BATCH[arch], args.steps or DEFAULT_STEPS[arch])
        ok &= r["ratio_from_prep"] >= 0.9
        line = (f"{arch:<12} {r['batch']:>5} {r['steps']:>5} {r['pure_ips']:>11.1f} {r['pipeline_ips']:>15.1f} "
                f"{r['ratio']:>6.1%} {r['prep_ms']:>8.1f} {r['ratio_from_prep']:>11.1%} {r['prep_uint8_ms']:>14.1f} "
                f"{r['eval_ips']:>11.1f}")
        print(line, flush=True)
        lines.append(line)
    lines += ["", "ratio = pipeline / pure throughput, measured step by step (noisy on a shared CPU);",
              "ratio(prep) = pure step time / (pure step time + batch preparation time): the data pipeline's share",
              "(the pipeline step is batch preparation + the identical model step, so this is the stable figure).",
              f"data pipeline >= 90% of pure forward+backward throughput: {'yes' if ok else 'NO'}"]
    print("\n".join(lines[-4:]))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
