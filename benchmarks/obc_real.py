"""What exact OBC costs on the real-image architecture, per layer and per model, and what it reaches.

Run:  .venv/bin/python benchmarks/obc_real.py [--preset params/cifar10-10k.yaml] [--threads 2]
          [--bits 2] [--recon-iters 300] [--recon-lr 0.03] [--layers N] [--quick]

On target 0 of the preset (trained by its TrainJob, as benchmarks/convergence_real.py does):
1. The authors' OBC protocol, as the study's QuantizeJob would set it up (plan.quantize_job with
   obc_hessian fp, obc_calib_samples 2048 of the model's 3,000 members, obc_calib_rounds 10,
   obc_damp 0, bn_retune [obc] from the pool: 100 batches of batch_size drawn from 1,024 pool
   images), timed step by step: drawing the 10 augmented rounds, the one FP pass that fills every
   layer's Hessian, exact OBQ per layer (rows, D, seconds, loss), BN re-tuning, and the test accuracy
   before and after re-tuning. The same Hessians then give the recipe with an 8-bit last layer (in
   the fp protocol every layer is solved on its own, so only the classifier changes) and GPTQ.
   --layers N solves only the first N layers and extrapolates the rest by rows * D^3 (stated).
2. ptqlib's defaults (obc_hessian sequential, calib_samples 1,024, 1 round, obc_damp 0.01, no BN
   re-tuning), one whole quantize_model call.
3. RTN, AdaRound and BRECQ per model at --recon-iters / --recon-lr (the authors' lambdas), at 1 and
   2 threads (the study runs 2 workers x 1 thread).
Then a cost model for the complete study. Output: benchmarks/results/obc_real.txt (appended).
--quick: 2 bits, first 4 layers only, 2 calibration rounds, no per-model reconstruction at 2 threads.
"""
from __future__ import annotations

import argparse
import copy
import os
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
from convergence_real import quantize_point, study_config, trained_target  # noqa: E402
from ptqlib.models.zoo import quantizable_layers  # noqa: E402
from ptqlib.study.plan import quantize_job  # noqa: E402
from ptqlib.ptq import apply_quantized, layer_bits_plan, n_levels, quantize_model  # noqa: E402
from ptqlib.ptq.bn import retune_batchnorm  # noqa: E402
from ptqlib.ptq.grid import CLIP_NORM  # noqa: E402
from ptqlib.ptq.obc import _quantize_layer, fp_hessians, gptq_layer, obq_layer  # noqa: E402
from ptqlib.models.training import accuracy  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
AUTHORS_OBC = {"obc_hessian": "fp", "obc_calib_samples": 2048, "obc_calib_rounds": 10, "obc_damp": 0.0,
               "bn_retune": ["obc"], "bn_retune_source": "pool"}
# the grid options the study leaves at the method's defaults (plan.METHOD_KEYS passes none to OBC)
CLIP = CLIP_NORM


def authors_obc(args, lines, job, model, data, members) -> dict:
    cfg = study_config(args.preset, args.store, **{**AUTHORS_OBC, "obc_calib_rounds": args.rounds})
    qjob = quantize_job(cfg, job, {"method": "obc", "bits": args.bits, "last_layer_bits": None})
    opts = dict(qjob.options)
    lines.append(f"1. authors' OBC protocol, {args.bits:g} bits: QuantizeJob options {opts}, calib_samples "
                 f"{qjob.calib_samples} x {qjob.calib_rounds} rounds ({qjob.calib_source}), bn_retune {qjob.bn_retune}")
    names = [n for n, _ in quantizable_layers(model)]
    modules = dict(model.named_modules())
    t0 = time.perf_counter()
    calib = qjob.calibration_set(data, members)
    calib = calib if isinstance(calib, list) else [calib]
    t_draw = time.perf_counter() - t0
    t0 = time.perf_counter()
    accs = fp_hessians(model, names, calib)
    t_hess = time.perf_counter() - t0
    lines.append(f"   draw + augment {len(calib)} x {len(calib[0])} images: {t_draw:.1f} s; FP pass filling all "
                 f"{len(names)} Hessians (float64): {t_hess:.1f} s")
    solve = lambda w, h, g: obq_layer(w, h, g, opts["obc_damp"])  # noqa: E731  (what ptq.obc.obc passes)
    qweights, per_layer, measured = {}, [], names[:args.layers] if args.layers else names
    lines.append("   layer          rows     D  samples   OBQ s   loss (sum over rows, 1/2 e^T H e)")
    for name in names:
        layer = modules[name]
        rows, d = layer.weight.shape[0], layer.weight[0].numel()
        if name in measured:
            t0 = time.perf_counter()
            q = _quantize_layer(layer, accs[name].hessian(), accs[name].n, n_levels(args.bits), solve, "obq",
                                False, CLIP, "fp")
            sec = time.perf_counter() - t0
            qweights[name] = q
            per_layer.append((name, rows, d, sec, True))
            lines.append(f"   {name:14s} {rows:4d} {d:5d} {accs[name].n:8d} {sec:7.2f}   {q.stats['loss']:.4g}")
        else:
            per_layer.append((name, rows, d, None, False))
    done = [(r, d, s) for _, r, d, s, m in per_layer if m]
    # OBQ's work per row is ~D^3/3 (the shrinking active block): fit seconds ~ c * rows * D^3 on the largest measured
    big = max(done, key=lambda t: t[0] * t[1] ** 3)
    c = big[2] / (big[0] * big[1] ** 3)
    t_obq = sum(s for _, _, s in done)
    est = sum(c * r * d ** 3 for _, r, d, _, m in per_layer if not m)
    for name, r, d, _, m in per_layer:
        if not m:
            lines.append(f"   {name:14s} {r:4d} {d:5d}        - {c * r * d ** 3:7.2f}   (extrapolated: rows x D^3)")
    out = {"hessian_s": t_hess, "draw_s": t_draw, "obq_s": t_obq + est, "extrapolated": bool(est)}
    lines.append(f"   OBQ total {t_obq + est:.1f} s{' (of which %.1f s extrapolated)' % est if est else ''}")
    if est:
        return out
    qmodel = apply_quantized(copy.deepcopy(model).eval(), qweights)
    acc_before = accuracy(qmodel, data)
    t0 = time.perf_counter()
    retune_batchnorm(qmodel, qjob.retune_batches(data, members), momentum=qjob.bn_retune.momentum)
    t_bn = time.perf_counter() - t0
    acc_after = accuracy(qmodel, data)
    out.update(bn_s=t_bn, acc_no_bn=acc_before, acc=acc_after)
    # 8-bit last layer: in the fp protocol each layer is solved on its own FP Hessian, so only fc changes
    last = names[-1]
    t0 = time.perf_counter()
    q8 = _quantize_layer(modules[last], accs[last].hessian(), accs[last].n, n_levels(8), solve, "obq", False,
                         CLIP, "fp")
    t_last8 = time.perf_counter() - t0
    qmodel8 = apply_quantized(copy.deepcopy(model).eval(), {**qweights, last: q8})
    retune_batchnorm(qmodel8, qjob.retune_batches(data, members), momentum=qjob.bn_retune.momentum)
    out["acc_last8"] = accuracy(qmodel8, data)
    # GPTQ on the same Hessians, for comparison
    t0 = time.perf_counter()
    gq = {n: _quantize_layer(modules[n], accs[n].hessian(), accs[n].n, n_levels(args.bits),
                             lambda w, h, g: gptq_layer(w, h, g, opts["obc_damp"]), "gptq", False, CLIP,
                             "fp") for n in names}
    t_gptq = time.perf_counter() - t0
    gmodel = apply_quantized(copy.deepcopy(model).eval(), gq)
    retune_batchnorm(gmodel, qjob.retune_batches(data, members), momentum=qjob.bn_retune.momentum)
    out.update(gptq_s=t_gptq, gptq_acc=accuracy(gmodel, data),
               gptq_loss=sum(q.stats["loss"] for q in gq.values()),
               obq_loss=sum(q.stats["loss"] for q in qweights.values()))
    total = t_draw + t_hess + t_obq + t_bn
    out["total_s"] = total
    lines += [f"   BN re-tuning ({qjob.bn_retune.steps} batches of {qjob.bn_retune.batch_size} from "
              f"{qjob.bn_retune.samples} pool images): {t_bn:.1f} s",
              f"   test accuracy: {100 * acc_before:.1f}% before BN re-tuning, {100 * acc_after:.1f}% after "
              f"(FP32 {100 * args.fp_acc:.1f}%); with an 8-bit last layer {100 * out['acc_last8']:.1f}% "
              f"(fc at 8 bits: {t_last8:.2f} s more)",
              f"   per model: {total:.1f} s = draw {t_draw:.1f} + Hessians {t_hess:.1f} + OBQ {t_obq:.1f} + BN "
              f"{t_bn:.1f} (+ accuracy, saving)",
              f"   GPTQ on the same Hessians (damp 0, natural order): {t_gptq:.2f} s for all layers, loss "
              f"{out['gptq_loss']:.4g} vs OBQ {out['obq_loss']:.4g}, test {100 * out['gptq_acc']:.1f}% after BN"]
    return out


def default_obc(args, lines, job, model, data, members) -> dict:
    cfg = study_config(args.preset, args.store, methods=["rtn", "adaround", "obc"])
    qjob = quantize_job(cfg, job, {"method": "obc", "bits": args.bits, "last_layer_bits": None})
    names = [n for n, _ in quantizable_layers(model)]
    calib = qjob.calibration_set(data, members)
    t0 = time.perf_counter()
    qmodel, qw = quantize_model(model, "obc", layer_bits_plan(names, args.bits), calib, **dict(qjob.options))
    sec = time.perf_counter() - t0
    acc = accuracy(qmodel, data)
    lines.append(f"2. ptqlib defaults, {args.bits:g} bits: options {dict(qjob.options)}, calib_samples "
                 f"{qjob.calib_samples} x {qjob.calib_rounds}, bn_retune {qjob.bn_retune}: {sec:.1f} s per model "
                 f"(Hessians from the quantized prefix + OBQ), loss {sum(q.stats['loss'] for q in qw.values()):.4g}, "
                 f"test {100 * acc:.1f}%")
    return {"seconds": sec, "acc": acc}


def reconstruction_costs(args, lines, job, model, data, members) -> dict:
    cfg = study_config(args.preset, args.store, adaround_iters=args.recon_iters, adaround_lr=args.recon_lr)
    lines.append(f"3. per model at {args.bits:g} bits, {args.recon_iters} iterations, lr {args.recon_lr:g}, "
                 f"lambdas adaround {cfg.adaround_lambda} / brecq {cfg.brecq_lambda}, calib {cfg.calib_samples}:")
    out = {}
    for threads in args.recon_threads:
        torch.set_num_threads(threads)
        for method in ("rtn", "adaround", "brecq"):
            for last in (None, 8):
                r = quantize_point(cfg, job, model, data, members, method, args.bits, last)
                out[(method, last, threads)] = r["seconds"]
                lines.append(f"   {threads} thread(s) {method:8s} {'+ 8b last' if last else 'plain    '}: "
                             f"{r['seconds']:6.2f} s, test {100 * r['test_acc']:.1f}%")
    torch.set_num_threads(args.threads)
    return out


def cost_model(args, lines, obc: dict, recon: dict) -> None:
    """The complete study on 2 workers x 1 thread: what fits next to OBC."""
    t1 = {k[:2]: v for k, v in recon.items() if k[2] == 1} or {k[:2]: v for k, v in recon.items()}
    per = {m: (t1[(m, None)] + t1[(m, 8)]) / 2 for m in ("rtn", "adaround", "brecq")}
    recipes = 3 * 2  # bits 4/2/1.58 x (plain, 8-bit last)
    models = 4 + 16  # targets + shadows (matched_shadows quantizes the shadows too)
    scale = 10 / args.rounds  # the draw and the Hessian pass are linear in the images (rounds x 2048)
    shared = (obc["draw_s"] + obc["hessian_s"]) * scale  # identical for every recipe of one model (fp Hessians)
    obc_model = obc["total_s"] - obc["draw_s"] - obc["hessian_s"] + shared
    if scale != 1:
        lines.append(f"   (measured with {args.rounds} calibration round(s); draw + Hessian pass scaled x{scale:g} "
                     f"to the authors' 10 rounds: {shared:.0f} s)")
    # shared Hessians: in the fp protocol every layer is solved alone, so the plain and 8-bit-last recipes of one
    # bit-width share their body codes: 3 OBQ solves (4, 2, 1.58 bits: the greedy loop runs D steps per row
    # whatever the bits; 4 bits assumed to cost what 2 bits measured) and 6 BN re-tunings per model
    per_model_shared = shared + 3 * obc["obq_s"] + recipes * obc["bn_s"]
    base = models * recipes * (per["rtn"] + per["adaround"] + per["brecq"]) / 2
    lines += ["cost model, complete study (2 workers x 1 thread, at the speeds measured here: a loaded machine; 1 thread):",
              f"   RTN + AdaRound + BRECQ: {models} models x {recipes} recipes x ({per['rtn']:.1f} + "
              f"{per['adaround']:.1f} + {per['brecq']:.1f}) s / 2 workers = {base / 60:.1f} min",
              f"   OBC (authors' protocol), per recipe as one QuantizeJob: {obc_model:.0f} s "
              f"(Hessians {shared:.0f} s recomputed by every recipe)"]
    for n_models in (4, 20):
        lines.append(f"   OBC on {n_models:2d} models x {recipes} recipes: {n_models * recipes * obc_model / 2 / 60:5.1f} min "
                     f"as jobs today; {n_models * per_model_shared / 2 / 60:5.1f} min if a model's 6 recipes "
                     "shared its Hessians and body solves")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", default="params/cifar10-10k.yaml")
    ap.add_argument("--store", default=str(ROOT / "artifacts"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--bits", type=float, default=2)
    ap.add_argument("--rounds", type=int, default=10, help="obc_calib_rounds of the authors' protocol")
    ap.add_argument("--layers", type=int, default=0, help="solve only the first N layers, extrapolate the rest")
    ap.add_argument("--recon-iters", type=int, default=300)
    ap.add_argument("--recon-lr", type=float, default=0.03)
    ap.add_argument("--recon-threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--skip", nargs="*", default=[], choices=["authors", "defaults", "recon"])
    ap.add_argument("--recon-seconds", nargs=3, type=float, metavar=("RTN", "ADAROUND", "BRECQ"),
                    help="with --skip recon: per-model seconds (1 thread) for the cost model, e.g. from "
                         "convergence_real.txt")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    if args.quick:
        args.layers, args.rounds, args.recon_threads = 4, 2, [1]
    args.bits = int(args.bits) if args.bits == int(args.bits) else args.bits
    torch.set_num_threads(args.threads)
    load = os.getloadavg()
    start = time.perf_counter()
    lines = [f"obc_real: {args.preset}, torch {torch.__version__}, {args.threads} threads (OBQ runs its solve on "
             f"1 thread), load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} at start (shared machine: times noisy)"]
    base = study_config(args.preset, args.store)
    job, model, data, members, _ = trained_target(base, log=lines.append)
    args.fp_acc = accuracy(model, data)
    lines.append(f"target 0: {members.sum()} members, test {100 * args.fp_acc:.1f}%; layers "
                 f"{[(n, tuple(m.weight.shape)) for n, m in quantizable_layers(model)]}")
    out = None if args.no_write else open(RESULTS / "obc_real.txt", "a")

    def emit(new_lines: list[str]) -> None:  # each step goes to the file when done: a cut-short run keeps it
        print("\n".join(new_lines), flush=True)
        if out:
            out.write("\n".join(new_lines) + "\n")
            out.flush()
    emit(lines)
    obc, recon = {}, {}
    steps = (("authors", authors_obc), ("defaults", default_obc), ("recon", reconstruction_costs))
    for name, fn in steps:
        if name in args.skip:
            continue
        n = len(lines)
        result = fn(args, lines, job, model, data, members)
        if name == "authors":
            obc = result
        elif name == "recon":
            recon = result
        emit(lines[n:])
    n = len(lines)
    if not recon and args.recon_seconds:
        recon = {(m, last, 1): s for m, s in zip(("rtn", "adaround", "brecq"), args.recon_seconds)
                 for last in (None, 8)}
        lines.append(f"per-model reconstruction times given (--recon-seconds, 1 thread): rtn, adaround, brecq = "
                     f"{args.recon_seconds}")
    if "total_s" in obc and recon:
        cost_model(args, lines, obc, recon)
    lines.append(f"total wall {time.perf_counter() - start:.0f} s\n")
    emit(lines[n:])
    if out:
        out.close()


if __name__ == "__main__":
    main()
