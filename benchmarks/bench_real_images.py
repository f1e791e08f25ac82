"""What the real-image preset costs on a CPU, and what accuracy it reaches on real photographs.

Run:  .venv/bin/python benchmarks/bench_real_images.py [--arch airbench_small] [--size 16]
          [--pool 4000] [--epochs 20] [--batch 64] [--lr 0.02] [--augment shift] [--skip-train]

1. Throughput of `arch` at `size` pixels with 1 and 2 torch threads: training steps
   (forward + backward + SGD) and inference (eval, no grad), on random images.
2. Quantization time per model for RTN, AdaRound and BRECQ (300 iterations per unit, lr 0.03,
   as the presets use) at 2 bits, on random calibration images, 1 thread.
3. Unless --skip-train: target 0 trained with `ptqlib.models.training.train_model` (1 thread) on the
   real images of /work/shared/data/cifar10-10k (ImageFolder; skipped with a reason when the
   folder is absent), its train/test accuracy and wall time, and `fit_warning` on them.
Then the cost model of the whole study (4 targets + 16 shadows, 12 recipes each, 2 single-thread
workers). Figures go to stdout and benchmarks/results/real_images.txt; on a shared machine they
are noisy: run it twice.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from ptqlib.models.zoo import build_model, quantizable_layers  # noqa: E402
from ptqlib.ptq import layer_bits_plan, quantize_model  # noqa: E402
from ptqlib.models.training import fit_warning  # noqa: E402

REAL = Path(os.environ.get("PTQ_REAL_IMAGES", "/work/shared/data/cifar10-10k"))
RECON = {"adaround_iters": 300, "adaround_lr": 0.03, "adaround_lambda": 0.01, "adaround_batch": 32}


def throughput(arch: str, size: int, threads: int, batch: int) -> tuple[float, float]:
    """(training img/s, inference img/s), best of 3 timed repeats after a warm-up."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = build_model(arch, 10, 3, size)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x, y = torch.randn(batch, 3, size, size), torch.randint(0, 10, (batch,))
    train = []
    model.train()
    for i in range(4):
        t = time.perf_counter()
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if i:  # the first step warms the allocator up
            train.append(batch / (time.perf_counter() - t))
    model.eval()
    xe, infer = torch.randn(1024, 3, size, size), []
    with torch.no_grad():
        for i in range(4):
            t = time.perf_counter()
            model(xe)
            if i:
                infer.append(1024 / (time.perf_counter() - t))
    return max(train), max(infer)


def quantize_seconds(arch: str, size: int, method: str) -> float:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = build_model(arch, 10, 3, size).eval()
    names = [n for n, _ in quantizable_layers(model)]
    calib = torch.randn(512, 3, size, size)
    opts = RECON if method != "rtn" else {}
    t = time.perf_counter()
    quantize_model(model, method, layer_bits_plan(names, 2), calib, **opts)
    return time.perf_counter() - t


def real_accuracy(args) -> dict | None:
    if not (REAL / "train").is_dir():
        print(f"real images: skipped, {REAL}/train not found (set PTQ_REAL_IMAGES)")
        return None
    from ptqlib.study.config import validate
    from ptqlib.data.images import load_dataset
    from ptqlib.data.masks import target_mask
    from ptqlib.models.training import accuracy, train_model

    torch.set_num_threads(1)
    cfg = validate({"dataset": "imagefolder", "data_root": str(REAL), "arch": "resnet18", "image_size": args.size,
                    "train_subset": args.pool, "store": str(ROOT / "artifacts")})
    data = load_dataset(cfg)
    keep = target_mask(0, 0, len(data.y_train))
    torch.manual_seed(0)
    model = build_model(args.arch, data.num_classes, 3, args.size)
    t = time.perf_counter()
    train_model(model, data, keep, epochs=args.epochs, batch_size=args.batch, lr=args.lr, momentum=0.9,
                weight_decay=5e-4, augment=args.augment, seed=0, device=torch.device("cpu"))
    seconds = time.perf_counter() - t
    return {"train_acc": accuracy(model, data, "train", keep), "test_acc": accuracy(model, data),
            "seconds": seconds, "members": int(keep.sum()), "test": len(data.y_test)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--arch", default="airbench_small")
    ap.add_argument("--size", type=int, default=16)
    ap.add_argument("--pool", type=int, default=4000)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=0.02)
    ap.add_argument("--augment", default="shift")
    ap.add_argument("--skip-train", action="store_true")
    args = ap.parse_args()
    lines = [f"{args.arch} at {args.size}x{args.size}, torch {torch.__version__}, {os.cpu_count()} CPUs, "
             f"load average {os.getloadavg()[0]:.1f} at start (shared machine: figures are noisy)"]
    rates = {}
    for threads in (1, 2):
        rates[threads] = throughput(args.arch, args.size, threads, args.batch)
        lines.append(f"{threads} thread(s): training {rates[threads][0]:.0f} img/s (batch {args.batch}), "
                     f"inference {rates[threads][1]:.0f} img/s")
    quant = {m: quantize_seconds(args.arch, args.size, m) for m in ("rtn", "adaround", "brecq")}
    lines.append("quantize one model at 2 bits, 1 thread: " + ", ".join(
        f"{m} {s:.1f} s" for m, s in quant.items()) + f" (AdaRound/BRECQ: {RECON['adaround_iters']} iterations)")
    real = None if args.skip_train else real_accuracy(args)
    if real:
        lines.append(f"real images (pool {args.pool}, {real['members']} members, {args.epochs} epochs, batch "
                     f"{args.batch}, lr {args.lr}, augment {args.augment}): train {100 * real['train_acc']:.1f}%, "
                     f"test {100 * real['test_acc']:.1f}% on {real['test']}, {real['seconds']:.0f} s per model "
                     f"({real['members'] * args.epochs / real['seconds']:.0f} img/s), fit_warning: "
                     f"{fit_warning(real['train_acc'], real['test_acc'], 10)}")
    # cost model: 20 models, 2 single-thread workers; 12 recipes (6 rtn, 6 reconstruction) per model
    train_rate, infer_rate = rates[1]
    models, workers, pool, test = 20, 2, args.pool, 2000
    members = pool // 2
    per_model = real["seconds"] if real else members * args.epochs / train_rate  # end to end when measured
    t_train = models * per_model / workers
    t_quant = models * 6 * (quant["rtn"] + quant[min(("adaround", "brecq"), key=quant.get)]) / workers
    for views in (1, 2):
        images = models * (members + test + views * pool) + models * 12 * (test + views * pool)
        t_query = images / infer_rate / workers
        lines.append(f"cost model, {views} query view(s): training {t_train / 60:.1f} min + quantization "
                     f"{t_quant / 60:.1f} min + accuracy/queries {t_query / 60:.1f} min = "
                     f"{(t_train + t_quant + t_query) / 60:.1f} min (2 workers x 1 thread, cores free)")
    text = "\n".join(lines)
    print(text)
    out = ROOT / "benchmarks" / "results" / "real_images.txt"
    with open(out, "a") as f:
        f.write(text + "\n\n")


if __name__ == "__main__":
    main()
