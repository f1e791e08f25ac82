"""Training throughput of CIFAR ResNet-18 for one model, for several concurrent models (processes)
and for several models batched into one with torch.func.vmap, and the projected cost of the
paper presets (from the fastest of the three). Runs on CUDA when present (bf16 autocast, channels_last),
else on the CPU with tiny bursts.

    .venv/bin/python benchmarks/bench_gpu.py [--seconds 20] [--concurrent 4]
"""
import argparse
import multiprocessing as mp
import time

import torch
from torch import nn


def burst(seconds: float, batch: int, device: str, result=None, compile_model: bool = False) -> float:
    from ptqlib.data.views import augment_batch
    from ptqlib.models.zoo import build_model as build

    dev = torch.device(device)
    model = build("resnet18", 10, 3, 32).to(dev)
    if dev.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    if compile_model:
        model = torch.compile(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    x = torch.randint(0, 256, (4096, 3, 32, 32), dtype=torch.uint8, device=dev)
    y = torch.randint(0, 10, (4096,), device=dev)
    mean = torch.tensor([0.49, 0.48, 0.45], device=dev).view(1, 3, 1, 1)
    std = torch.tensor([0.25, 0.24, 0.26], device=dev).view(1, 3, 1, 1)
    loss_fn = nn.CrossEntropyLoss()

    def step(i):
        idx = torch.randint(0, 4096, (batch,), device=dev)
        xb = ((augment_batch(x[idx], "crop_flip").float() / 255 - mean) / std)
        if dev.type == "cuda":
            xb = xb.contiguous(memory_format=torch.channels_last)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
            loss = loss_fn(model(xb), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for i in range(3):
        step(i)
    if dev.type == "cuda":
        torch.cuda.synchronize()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        step(n)
        n += 1
    if dev.type == "cuda":
        torch.cuda.synchronize()
    rate = n * batch / (time.perf_counter() - t0)
    if result is not None:
        result.put(rate)
    return rate


def batched_burst(seconds: float, batch: int, device: str, models: int) -> float:
    """Images/s of `models` ResNet-18s trained as one vmapped model (torch.func), each on its own batches.

    BatchNorm runs without running statistics here (torch.func cannot update them under vmap),
    which does not change the cost of a step; this measures throughput, not a training recipe.
    """
    import copy

    from torch.func import functional_call, stack_module_state, vmap
    from ptqlib.models.zoo import build_model as build

    dev = torch.device(device)
    base = build("resnet18", 10, 3, 32).to(dev)
    torch.func.replace_all_batch_norm_modules_(base)
    params, buffers = stack_module_state([copy.deepcopy(base) for _ in range(models)])
    meta = copy.deepcopy(base).to("meta")
    opt = torch.optim.SGD(list(params.values()), lr=0.1, momentum=0.9, weight_decay=5e-4)
    x = torch.randn(models, batch, 3, 32, 32, device=dev)
    y = torch.randint(0, 10, (models, batch), device=dev)

    def loss_one(p, b, xb, yb):
        return nn.functional.cross_entropy(functional_call(meta, (p, b), (xb,)), yb)

    def step():
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
            loss = vmap(loss_one)(params, buffers, x, y).sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(2):
        step()
    if dev.type == "cuda":
        torch.cuda.synchronize()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        step()
        n += 1
    if dev.type == "cuda":
        torch.cuda.synchronize()
    return n * batch * models / (time.perf_counter() - t0)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--concurrent", type=int, default=4)
    ap.add_argument("--compile", action="store_true")
    args = ap.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    seconds = args.seconds if device == "cuda" else min(args.seconds, 5)
    one = burst(seconds, args.batch, device, compile_model=args.compile)
    print(f"device {device} ({torch.cuda.get_device_name() if device == 'cuda' else 'CPU'}), batch {args.batch}")
    print(f"one model: {one:,.0f} images/s")
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    procs = [ctx.Process(target=burst, args=(seconds, args.batch, device, q, args.compile))
             for _ in range(args.concurrent)]
    for p in procs:
        p.start()
    rates = [q.get() for _ in procs]
    for p in procs:
        p.join()
    total = sum(rates)
    print(f"{args.concurrent} concurrent models: {total:,.0f} images/s in all ({total / one:.2f}x one model)")
    batched = batched_burst(seconds, args.batch, device, args.concurrent)
    print(f"{args.concurrent} models batched with torch.func.vmap: {batched:,.0f} images/s in all "
          f"({batched / one:.2f}x one model)")
    best = max(one, total, batched)
    images = (10 + 64) * 100 * 25_000  # (targets + shadows) x epochs x members, CIFAR presets
    print(f"projected training of a CIFAR preset (74 models x 100 epochs x 25k images): {images / best / 3600:.2f} h")
    print(f"64 shadows alone: {64 * 100 * 25_000 / best / 3600:.2f} h (design target: <= 1 H200-hour)")
    print(f"TinyImageNet preset (64x64, 50k members/model ~ 8x the compute): ~{8 * images / best / 3600:.1f} h")


if __name__ == "__main__":
    main()
