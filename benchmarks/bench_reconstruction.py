"""AdaRound / BRECQ speed: one optimisation step vs one forward + backward of the same layer/unit.

For each layer (AdaRound) and unit (BRECQ) of the digits CNN, times one reconstruction step
(batch 32) and one plain forward + backward of that layer/unit with the same batch (gradient
to the weights), best of several repeats; target ratio <= 1.5. Then whole-model times for the
digits CNN, and for a CIFAR ResNet-18 per 1,000 iterations if ptqlib/zoo.py exists.

    python benchmarks/bench_reconstruction.py [--threads 1] [--iters 200]
"""
from __future__ import annotations

import argparse
import copy
import time

import torch

from ptqlib.models.zoo import DigitsCNN, quantizable_layers, reconstruction_units
from ptqlib.ptq import fit_grid, quantize_model
from ptqlib.ptq.bn import fold_batchnorm
from ptqlib.ptq.brecq import bare_layer_gradient, soft_weights
from ptqlib.ptq.reconstruction import (Rounding, capture, layer_forward, layer_loss_and_grads, reconstruct,
                                       reconstruction_loss, run_chunked)

OPTS = dict(batch=32, lr=0.03, lam=0.01, warmup=0.2, beta_start=20.0, beta_end=2.0)


def best(fn, repeats=5):
    out = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out = min(out, time.perf_counter() - t0)
    return out


def step_vs_fwd_bwd(module, layers, x, target, iters, loss_and_grads=None):
    """(seconds per reconstruction step, seconds per forward+backward) on batches of 32.

    The step is the library's: autograd through the unit (BRECQ), or the closed-form layer
    gradient AdaRound uses (`loss_and_grads`); the baseline is autograd through the same module."""
    roundings = [Rounding(l.weight, fit_grid(l.weight.detach().flatten(1), 4)) for l in layers]

    def forward(xb, ws):
        for l, w in zip(layers, ws):
            l.weight = w
        return module(xb)

    def run_steps():
        with soft_weights(layers):
            reconstruct(forward, roundings, x, target, iters=iters, early_stop=False,
                        loss_and_grads=loss_and_grads, **OPTS)

    params = [l.weight for l in layers]
    gen = torch.Generator().manual_seed(0)

    def run_plain():
        for _ in range(iters):
            idx = torch.randint(len(x), (32,), generator=gen)
            out = module(x[idx])
            grads = torch.autograd.grad(reconstruction_loss(out, target[idx]), params)
            del grads
    return best(run_steps, 3) / iters, best(run_plain, 3) / iters


def main() -> str:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--iters", type=int, default=200)
    ap.add_argument("--digits-only", action="store_true", help="skip the CIFAR ResNet-18 part (minutes)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = DigitsCNN().eval()
    x = torch.randn(1024, 1, 8, 8)
    lines = [f"AdaRound / BRECQ step cost on the digits CNN (batch 32, threads={args.threads}, "
             f"best of 3 x {args.iters} steps)"]
    folded = copy.deepcopy(model)
    fold_batchnorm(folded, x)
    h = x
    modules = dict(folded.named_modules())
    totals = {"adaround": [0.0, 0.0], "brecq": [0.0, 0.0]}  # summed step, summed fwd+bwd
    for unit in reconstruction_units(folded):
        for name in unit.layers:  # AdaRound: the layer alone
            layer = modules[name]
            xin = capture(unit.module, layer, h, "input")
            y = capture(unit.module, layer, h, "output")
            s, f = step_vs_fwd_bwd(lambda xb, l=layer: layer_forward(l, xb, l.weight), [layer], xin, y, args.iters,
                                   loss_and_grads=layer_loss_and_grads(layer))
            lines.append(f"  adaround layer {name:12s} step {s * 1e3:6.3f} ms  fwd+bwd {f * 1e3:6.3f} ms  ratio {s / f:4.2f}")
            totals["adaround"][0] += s
            totals["adaround"][1] += f
        y = run_chunked(unit.module, h)
        unit_layers = [modules[n] for n in unit.layers]
        s, f = step_vs_fwd_bwd(unit.module, unit_layers, h, y, args.iters,
                               loss_and_grads=bare_layer_gradient(unit, unit_layers))
        lines.append(f"  brecq unit     {unit.name:12s} step {s * 1e3:6.3f} ms  fwd+bwd {f * 1e3:6.3f} ms  ratio {s / f:4.2f}")
        totals["brecq"][0] += s
        totals["brecq"][1] += f
        h = y
    for method, (s, f) in totals.items():
        lines.append(f"  {method} over the whole digits CNN (one step of every layer/unit): ratio {s / f:4.2f}")
    plan = {n: 2 for n, _ in quantizable_layers(model)}
    for method, iters in (("adaround", 300), ("brecq", 300), ("adaround", 1000), ("brecq", 1000),
                          ("obc", None), ("gptq", None)):
        opts = {"adaround_iters": iters, "adaround_lr": 0.03} if iters else {}
        t0 = time.perf_counter()
        quantize_model(model, method, plan, x, **opts)
        label = f"{method} ({iters} iters)" if iters else method
        lines.append(f"  whole digits CNN, 2 bits, 1024 calibration images: {label:22s} {time.perf_counter() - t0:6.2f} s")
    if not args.digits_only:
        from ptqlib.models import zoo
        r18 = zoo.build_model("resnet18", 10, 3, 32).eval()
        xc = torch.randn(256, 3, 32, 32)
        units = reconstruction_units(r18)
        mods = dict(r18.named_modules())
        h = xc
        for unit in units[:2]:  # the stem and the first residual block, at full 32x32 resolution
            y = run_chunked(unit.module, h)
            s, f = step_vs_fwd_bwd(unit.module, [mods[n] for n in unit.layers], h, y, 10)
            lines.append(f"  R18 brecq unit {unit.name:12s} step {s * 1e3:6.1f} ms  fwd+bwd {f * 1e3:6.1f} ms  ratio {s / f:4.2f}")
            h = y
        plan = {n: 2 for n, _ in quantizable_layers(r18)}
        for method in ("adaround", "brecq"):
            iters = 20
            t0 = time.perf_counter()
            _, qw = quantize_model(r18, method, plan, xc, adaround_iters=iters, adaround_lr=0.03)
            total = time.perf_counter() - t0
            per_iter = {}  # a unit's stats are shared by its layers: count each loop once
            for q in qw.values():
                per_iter[id(q.stats)] = q.stats["seconds"] / q.stats["iters_run"]
            loop = sum(per_iter.values())
            lines.append(f"  CIFAR ResNet-18 {method}: {loop * 1000 / 60:.1f} min per 1,000 iterations of every "
                         f"layer/unit (whole model, batch 32, timed inside the optimisation loops; fixed cost "
                         f"{total - loop * iters:.0f} s for 256 calibration images)")
    text = "\n".join(lines)
    print(text)
    return text


if __name__ == "__main__":
    main()
