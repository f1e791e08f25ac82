"""How long AdaRound and BRECQ must reconstruct on the real-image preset: loss and accuracy vs iterations.

Run:  .venv/bin/python benchmarks/convergence_real.py [--preset params/cifar10-10k.yaml] [--threads 2]
          [--iters 50 100 300 1000 3000] [--bits 2 1.58] [--methods adaround brecq]
          [--schedules fixed scaled] [--ref-lr 1e-3] [--ref-iters 3000] [--quick]

1. Target 0 of the preset, trained by the study's own `TrainJob` (plan.train_job) into `--store`
   (reused when already there).
2. For every method, bit-width (plain recipe: every layer, the last one included, at `bits`) and
   iteration count, the `QuantizeJob` the study would plan (plan.quantize_job on the preset with
   the authors' lambdas, adaround_lambda 0.001 and brecq_lambda 0.01) supplies the calibration set
   and the options; `quantize_model` is timed (wall seconds per quantization), then
   - rec_loss: the library's per-layer (AdaRound) / per-unit (BRECQ) loss at the last step
     (`method_stats`: one batch of 32, soft weights, regulariser excluded), summed;
   - unit_err: the hard-rounded network against the FP network on the whole calibration set:
     sum over reconstruction units of `reconstruction_loss(unit output)`, each net carrying its own
     activations (the asymmetric objective both methods minimise, measured after rounding);
   - test accuracy on the 2,000 test images.
   Learning-rate schedules: "fixed" keeps the preset's adaround_lr (0.03) at every count; "scaled"
   keeps the preset's lr x iterations (0.03 x 300 = 9: the preset's rule "lr x iterations near the
   paper's 20,000 x 1e-3") so lr = 9 / iterations. Plus one reference point at the authors' lr
   (1e-3) at --ref-iters.
3. RTN at the same bits for comparison.

Output: benchmarks/results/convergence_real.txt (appended) and benchmarks/results/convergence_real.png.
--quick: 2 bits, AdaRound only, iterations 20 and 60, no reference point (about a minute with a trained model).
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from ptqlib.study.presets import read_preset  # noqa: E402
from ptqlib.study.config import validate
from ptqlib.study.jobs import load_data  # noqa: E402
from ptqlib.models.zoo import quantizable_layers, reconstruction_units  # noqa: E402
from ptqlib.study.plan import quantize_job, train_job  # noqa: E402
from ptqlib.ptq import layer_bits_plan, quantize_model  # noqa: E402
from ptqlib.ptq.reconstruction import reconstruction_loss, run_chunked  # noqa: E402
from ptqlib.runtime.store import Store  # noqa: E402
from ptqlib.models.training import accuracy  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
AUTHORS_LAMBDAS = {"adaround_lambda": 0.001, "brecq_lambda": 0.01}


def study_config(preset: str, store: str, **overrides):
    """The preset as the study reads it, with the authors' lambdas and any overrides."""
    raw = read_preset(ROOT / preset)
    raw.setdefault("name", Path(preset).stem)
    return validate({**raw, "store": store, **AUTHORS_LAMBDAS, **overrides})


def trained_target(cfg, log=print):
    """Target 0 of the study, trained (or reloaded) by its TrainJob; (job, model, data, members, store)."""
    store = Store(cfg.store_path, log=lambda m: None)
    job = train_job(cfg, "target", 0)
    t0 = time.perf_counter()
    fresh = not store.is_complete(job)
    job.run(store)
    seconds = time.perf_counter() - t0
    data = load_data(job.data, store)
    model, members = job.load(store), job.keep(store)
    if fresh:
        log(f"trained target 0 by its TrainJob in {seconds:.0f} s (key {job.key[:12]})")
    return job, model, data, members, store


@torch.no_grad()
def unit_error(fp: torch.nn.Module, q: torch.nn.Module, x: torch.Tensor) -> list[float]:
    """Per reconstruction unit: reconstruction_loss of the quantized unit output (quantized prefix)
    against the FP unit output (FP prefix), over all of `x`."""
    out, h_fp, h_q = [], x, x
    for u_fp, u_q in zip(reconstruction_units(fp.eval()), reconstruction_units(q.eval())):
        h_fp, h_q = run_chunked(u_fp.module, h_fp), run_chunked(u_q.module, h_q)
        out.append(float(reconstruction_loss(h_q, h_fp)))
    return out


def quantize_point(cfg, source, model, data, members, method: str, bits: float, last_layer_bits=None) -> dict:
    """One quantization exactly as the study's QuantizeJob sets it up; timed, scored."""
    qjob = quantize_job(cfg, source, {"method": method, "bits": bits, "last_layer_bits": last_layer_bits})
    names = [n for n, _ in quantizable_layers(model)]
    plan = layer_bits_plan(names, bits, last_layer_bits)
    calib = qjob.calibration_set(data, members) if qjob.calib_samples else None
    t0 = time.perf_counter()
    qmodel, qweights = quantize_model(model, method, plan, calib, **dict(qjob.options))
    seconds = time.perf_counter() - t0
    stats = {id(q.stats): q.stats for q in qweights.values() if getattr(q, "stats", None)}.values()
    x = calib if calib is not None else qjob_calib(cfg, source, data, members)
    errs = unit_error(model, qmodel, x)
    return {"method": method, "bits": bits, "seconds": seconds, "test_acc": accuracy(qmodel, data),
            "rec_loss": sum(s.get("rec_loss", 0.0) for s in stats) if stats else float("nan"),
            "rec_loss_units": [s.get("rec_loss") for s in stats],
            "iters_run": sum(s.get("iters_run", 0) for s in stats), "units": len(stats),
            "unit_err": sum(errs), "unit_errs": errs, "logit_err": errs[-1]}


def qjob_calib(cfg, source, data, members):
    """The calibration images a reconstruction job would draw (to score RTN on the same set)."""
    qjob = quantize_job(cfg, source, {"method": "adaround", "bits": 2, "last_layer_bits": None})
    return qjob.calibration_set(data, members)


def row(label: str, r: dict, iters, lr) -> str:
    it = "-" if iters is None else f"{iters:5d}"
    lr_s = "-" if lr is None else f"{lr:.4g}"
    return (f"{r['method']:8s} {r['bits']:<4g} {label:7s} {it:>5s} {lr_s:>7s} {r['iters_run']:>7d} "
            f"{r['rec_loss']:10.4f} {r['unit_err']:10.4f} {r['logit_err']:9.4f} {100 * r['test_acc']:6.1f} "
            f"{r['seconds']:7.1f}")


HEADER = ("method   bits lr-rule iters      lr iters_run   rec_loss   unit_err logit_err  test%  wall_s\n"
          "  (iters_run: summed over layers/units after early stop; rec_loss: sum of per-layer/unit last-batch losses;\n"
          "   unit_err: sum over units of the hard-rounded unit-output error on the calibration set; logit_err: its\n"
          "   last unit; wall_s: quantize_model only)")


def plot(points: list[dict], rtn: dict, fp_acc: float, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    colors = {("adaround", 2): "C0", ("adaround", 1.58): "C1", ("brecq", 2): "C2", ("brecq", 1.58): "C3"}
    for (method, bits), color in colors.items():
        for rule, style in (("fixed", "-o"), ("scaled", "--s")):
            pts = sorted((p for p in points if p["method"] == method and p["bits"] == bits and p["rule"] == rule),
                         key=lambda p: p["iters"])
            if not pts:
                continue
            its = [p["iters"] for p in pts]
            lab = f"{method} {bits:g}b, lr {'0.03' if rule == 'fixed' else '9/iters'}"
            axes[0].plot(its, [100 * p["test_acc"] for p in pts], style, color=color, label=lab)
            axes[1].plot(its, [p["unit_err"] for p in pts], style, color=color, label=lab)
            axes[2].plot(its, [p["rec_loss"] for p in pts], style, color=color, label=lab)
        for p in points:
            if p["method"] == method and p["bits"] == bits and p["rule"] == "authors":
                axes[0].plot(p["iters"], 100 * p["test_acc"], "*", ms=12, color=color)
                axes[1].plot(p["iters"], p["unit_err"], "*", ms=12, color=color)
                axes[2].plot(p["iters"], p["rec_loss"], "*", ms=12, color=color)
    for bits, ls in ((2, ":"), (1.58, "-.")):
        if bits in rtn:
            axes[0].axhline(100 * rtn[bits]["test_acc"], color="grey", ls=ls, label=f"RTN {bits:g}b")
            axes[1].axhline(rtn[bits]["unit_err"], color="grey", ls=ls, label=f"RTN {bits:g}b")
    axes[0].axhline(100 * fp_acc, color="k", lw=0.8, label="FP32")
    for ax, title in zip(axes, ("test accuracy (%)", "hard unit-output error on the calibration set (sum)",
                                "library rec_loss (last batch, summed)")):
        ax.set_xscale("log")
        ax.set_xlabel("iterations per layer/unit (star: authors' lr 1e-3)")
        ax.set_title(title, fontsize=10)
    axes[1].set_yscale("log")
    axes[2].set_yscale("log")
    axes[0].legend(fontsize=7)
    fig.suptitle("AdaRound (lambda 0.001) and BRECQ (lambda 0.01) on airbench_small, CIFAR-10 10k real images, 16x16")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", default="params/cifar10-10k.yaml")
    ap.add_argument("--store", default=str(ROOT / "artifacts"))
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (1: on a loaded 2-core machine 2 threads ran AdaRound 6x slower)")
    ap.add_argument("--methods", nargs="+", default=["adaround", "brecq"])
    ap.add_argument("--bits", nargs="+", type=float, default=[2, 1.58])
    ap.add_argument("--iters", nargs="+", type=int, default=[50, 100, 300, 1000, 3000])
    ap.add_argument("--schedules", nargs="+", default=["fixed", "scaled"], choices=["fixed", "scaled"])
    ap.add_argument("--product", type=float, default=None, help="lr x iterations of 'scaled' (default: the preset's)")
    ap.add_argument("--ref-lr", type=float, default=1e-3)
    ap.add_argument("--ref-iters", type=int, default=3000, help="0: no reference point")
    ap.add_argument("--ref-bits", nargs="+", type=float, default=None, help="bits of the reference point (default: all)")
    ap.add_argument("--fixed-iters", nargs="+", type=int, default=None,
                    help="iteration counts of the 'fixed' rule (default: --iters)")
    ap.add_argument("--note", default="", help="a line written under the header")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--no-write", action="store_true", help="print only")
    args = ap.parse_args()
    if args.quick:
        args.methods, args.bits, args.iters, args.ref_iters = ["adaround"], [2.0], [20, 60], 0
    args.bits = [int(b) if b == int(b) else b for b in args.bits]
    args.ref_bits = args.bits if args.ref_bits is None else [int(b) if b == int(b) else b for b in args.ref_bits]
    fixed_iters = args.iters if args.fixed_iters is None else args.fixed_iters
    torch.set_num_threads(args.threads)
    load = os.getloadavg()
    start = time.perf_counter()
    base = study_config(args.preset, args.store)
    product = args.product or base.adaround_lr * base.adaround_iters
    lines = [f"convergence_real: {base.name} ({base.arch} at {base.image_size}x{base.image_size}, pool "
             f"{base.train_subset}, {base.epochs} epochs, lr {base.lr}, augment {base.augment}); torch "
             f"{torch.__version__}, {args.threads} threads, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} "
             f"at start (shared machine: times noisy)",
             f"calibration: {base.calib_samples} {base.calib_source} with the training augmentation, batch 32; "
             f"lambdas: adaround {base.adaround_lambda}, brecq {base.brecq_lambda}; preset lr {base.adaround_lr} at "
             f"{base.adaround_iters} iterations (lr x iterations = {product:g}); early stop on"]
    job, model, data, members, _ = trained_target(base, log=lines.append)
    fp_acc = accuracy(model, data)
    lines.append(f"target 0: train {100 * accuracy(model, data, 'train', members):.1f}% on {members.sum()} members, "
                 f"test {100 * fp_acc:.1f}%")
    if args.note:
        lines.append(args.note)
    out = None if args.no_write else open(RESULTS / "convergence_real.txt", "a")

    def emit(text: str) -> None:  # rows go to the file as they come: a cut-short run keeps them
        print(text, flush=True)
        if out:
            out.write(text + "\n")
            out.flush()
    emit("\n".join(lines))
    rtn = {}
    emit(HEADER)
    for bits in args.bits:
        rtn[bits] = quantize_point(base, job, model, data, members, "rtn", bits)
        emit(row("-", rtn[bits], None, None))
    points = []
    for method in args.methods:
        for bits in args.bits:
            runs = []
            for it in sorted(set(args.iters) | (set(fixed_iters) if "fixed" in args.schedules else set())):
                for rule in args.schedules:
                    if (rule == "fixed" and it not in fixed_iters) or (rule == "scaled" and it not in args.iters):
                        continue
                    lr = base.adaround_lr if rule == "fixed" else product / it
                    if rule == "scaled" and it in fixed_iters and "fixed" in args.schedules \
                            and math.isclose(lr, base.adaround_lr):
                        continue  # the same run as the fixed one
                    runs.append((rule, it, lr))
            if args.ref_iters and bits in args.ref_bits:
                runs.append(("authors", args.ref_iters, args.ref_lr))
            for rule, it, lr in runs:
                cfg = study_config(args.preset, args.store, adaround_iters=it, adaround_lr=lr)
                r = quantize_point(cfg, job, model, data, members, method, bits)
                r.update(rule=rule, iters=it, lr=lr)
                points.append(r)
                if rule == "fixed" and "scaled" in args.schedules and math.isclose(lr, product / it):
                    points.append({**r, "rule": "scaled"})
                emit(row(rule, r, it, lr))
    emit(f"FP32 test {100 * fp_acc:.1f}%; total wall {time.perf_counter() - start:.0f} s\n")
    if out:
        out.close()
        plot(points, rtn, fp_acc, RESULTS / ("convergence_real_quick.png" if args.quick else "convergence_real.png"))


if __name__ == "__main__":
    main()
