"""The reconstruction core AdaRound and BRECQ share: the rounding variable, the loss, the
optimisation loop with its Adam, and the helpers that carry calibration activations.

Each weight is rounded down or up on the layer's fixed grid (`grid.fit_grid`):
`codes = clamp(floor(W/s) + z + h(V), 0, L-1)` with the rectified sigmoid
`h(V) = clamp(sigmoid(V) (zeta - gamma) + gamma, 0, 1)`, V initialised so that h(V) is the
fractional part of W/s (the soft weight starts equal to W). Adam on V minimises the
reconstruction error of a layer's or unit's output plus `lambda * sum(1 - |2h - 1|^beta)`;
the regulariser is off during the warm-up, then beta falls linearly from beta_start to
beta_end over the remaining iterations (the schedule scales with the iteration count).
The hard rounding is `floor + 1[V >= 0]`.

Speed: a step costs about one forward + backward of the layer (benchmarks/bench_reconstruction.py).
Each trick has a plain path a test compares it with (tests/test_ptq_adaround.py):
- the chain rule V -> weight by hand (`Rounding.grad_v`) vs autograd through `soft_weight`
  and `rounding_regularizer` (test_manual_gradient_matches_autograd);
- `Adam`, the fused kernel, vs torch.optim.Adam (test_adam_is_torch_adam);
- a single layer's loss and weight gradient in closed form (`layer_loss_and_grads`) vs
  `autograd_loss_and_grads` (test_closed_form_layer_gradient_is_autograds).
"""
from __future__ import annotations

import time
from contextlib import contextmanager

import torch
from torch import nn
from torch.nn import functional as F

from ptqlib.models.zoo import Unit, reconstruction_units
from .grid import Grid, QuantizedWeight

ZETA, GAMMA = 1.1, -0.1
CHUNK = 256  # images per no-grad pass when carrying activations
EARLY_STOP_EVERY = 10  # iterations between saturation checks


# ---------------------------------------------------------------- the rounding itself

def rectified_sigmoid(v: torch.Tensor) -> torch.Tensor:
    return torch.clamp(torch.sigmoid(v) * (ZETA - GAMMA) + GAMMA, 0.0, 1.0)


def initial_logits(frac: torch.Tensor) -> torch.Tensor:
    """V such that rectified_sigmoid(V) == frac, for frac in [0, 1)."""
    return -torch.log((ZETA - GAMMA) / (frac - GAMMA) - 1.0)


def beta_at(step: int, iters: int, warmup: float, beta_start: float, beta_end: float) -> float | None:
    """The regulariser's exponent at `step` (0-based), or None during the warm-up."""
    warm = int(warmup * iters)
    if step < warm:
        return None
    rel = (step - warm) / max(1, iters - warm)
    return beta_end + (beta_start - beta_end) * (1.0 - rel)


def rounding_regularizer(h: torch.Tensor, beta: float) -> torch.Tensor:
    """sum(1 - |2h - 1|^beta): 0 when every h is 0 or 1, 1 per element at h = 0.5."""
    return (1.0 - (2.0 * h - 1.0).abs().pow(beta)).sum()


class Rounding:
    """Learnable down/up rounding of one layer's weights on a fixed per-channel grid.

    Inside the grid's range the soft weight is `low + step * h` (h moves the code from the
    grid point below W to the one above); a clipped weight has a fixed code (step 0). The
    optimisation step does the chain rule V -> soft weight by hand (`soft_step`, `grad_v`;
    nothing they touch requires grad, so no graph is recorded and no no_grad guard is
    needed), so autograd only sees weight -> output -> loss and a step costs little more than one
    forward + backward of the layer: on tiny layers every tensor operation counts, hence the
    in-place arithmetic below.
    """

    def __init__(self, weight: torch.Tensor, grid: Grid):
        w2d = weight.detach().flatten(1).float()
        self.shape, self.grid = weight.shape, grid
        x = w2d / grid.scale
        floor = torch.floor(x)
        self.base = floor + grid.zero  # code of the grid point just below W (before clamping)
        self.v = initial_logits(x - floor)
        inside = (self.base >= 0) & (self.base <= grid.levels - 2)
        self._low = (self.base.clamp(0, grid.levels - 1) - grid.zero) * grid.scale
        self._step = inside * grid.scale  # d weight / d h
        self._dstep = self._step * (ZETA - GAMMA)  # d weight / d (raw sigmoid)
        self._gamma = torch.full((), GAMMA, device=self.v.device)  # 0-d constants: one fused op each
        self._minus_one = torch.full((), -1.0, device=self.v.device)
        self._cache = None

    def soft_weight(self, h: torch.Tensor) -> torch.Tensor:
        """The soft-rounded weight for a given h (differentiable in h)."""
        return (self._low + self._step * h).view(self.shape)

    def soft_step(self) -> torch.Tensor:
        """The current soft weight as a fresh leaf whose gradient `grad_v` takes."""
        sig = torch.sigmoid(self.v)
        raw = torch.add(self._gamma, sig, alpha=ZETA - GAMMA)
        h = F.hardtanh(raw, 0.0, 1.0)
        self._cache = (sig, raw, h)
        return torch.addcmul(self._low, self._step, h).view(self.shape).requires_grad_(True)

    def grad_v(self, dw: torch.Tensor | None, lam: float, beta: float | None) -> torch.Tensor:
        """d loss / d V from the soft weight's gradient `dw` (from the last `soft_step`), plus
        the regulariser's `lam * sum(1 - |2h - 1|^beta)` when beta is not None.

        Written for speed on small tensors: no boolean masks (slow elementwise on CPU), the
        clamp's derivative from hardtanh's backward kernel, |t|^(beta-1) as exp((beta-1) log|t|).
        """
        sig, raw, h = self._cache
        g = dw.reshape(h.shape) * self._dstep if dw is not None else torch.zeros_like(h)
        if beta is not None:  # d/d raw of -lam |2h - 1|^beta = -2 lam beta |t|^(beta-1) sign(t)
            t = torch.add(self._minus_one, h, alpha=2.0)
            # powers as exp(k log|t|): one fused chain, faster than pow on tiny tensors (test: autograd)
            if beta > 2:  # = t |t|^(beta-2), which is 0 at t = 0
                odd = t.abs().log_().mul_(beta - 2).exp_().mul_(t)
            else:
                odd = t.abs().log_().mul_(beta - 1).exp_().mul_(torch.sign(t)) if beta != 1 else torch.sign(t)
            g.add_(odd, alpha=-2 * lam * beta * (ZETA - GAMMA))
        g.mul_(torch.addcmul(sig, sig, sig, value=-1.0))  # d sigmoid / d V = sig (1 - sig)
        # the clamp's derivative (0 where h is clamped) by hardtanh's backward kernel: no boolean mask
        return torch.ops.aten.hardtanh_backward(g, raw, 0.0, 1.0)

    def hard_codes(self) -> torch.Tensor:
        return torch.clamp(self.base + (self.v >= 0).float(), 0, self.grid.levels - 1)

    def quantized(self) -> QuantizedWeight:
        return QuantizedWeight(self.grid, self.hard_codes())


class Adam:
    """torch.optim.Adam's update (no weight decay) on plain tensors, with the moments kept here.

    Uses the fused kernel `torch.optim.Adam(fused=True)` runs (one call per step for all
    tensors) and falls back to the same arithmetic in a few in-place operations where that
    kernel does not exist for the device. Skipping the optimizer's Python machinery matters
    when a step of a tiny layer costs tens of microseconds.
    """

    def __init__(self, params: list[torch.Tensor], lr: float, betas=(0.9, 0.999), eps: float = 1e-8):
        self.params, self.lr, self.betas, self.eps = params, lr, betas, eps
        self.exp_avg = [torch.zeros_like(p) for p in params]
        self.exp_avg_sq = [torch.zeros_like(p) for p in params]
        self.t = torch.zeros((), dtype=torch.float32, device=params[0].device)
        self.fused = hasattr(torch, "_fused_adam_")

    def state(self, i: int) -> dict:
        return {"step": self.t, "exp_avg": self.exp_avg[i], "exp_avg_sq": self.exp_avg_sq[i]}

    def step(self, grads: list[torch.Tensor]) -> None:
        self.t.add_(1)
        b1, b2 = self.betas
        if self.fused:
            try:  # the fused kernel: one call per step for all tensors (test: torch.optim.Adam, bit-identical)
                torch._fused_adam_(self.params, grads, self.exp_avg, self.exp_avg_sq, [], [self.t] * len(grads),
                                   lr=self.lr, beta1=b1, beta2=b2, weight_decay=0.0, eps=self.eps,
                                   amsgrad=False, maximize=False)
                return
            except (RuntimeError, NotImplementedError):
                self.fused = False  # no fused kernel for this device: the same update below
        t = float(self.t)
        bc1, bc2 = 1 - b1 ** t, 1 - b2 ** t
        for p, g, m, s in zip(self.params, grads, self.exp_avg, self.exp_avg_sq):
            m.lerp_(g, 1 - b1)
            s.mul_(b2).addcmul_(g, g, value=1 - b2)
            p.addcdiv_(m, s.sqrt().div_(bc2 ** 0.5).add_(self.eps), value=-self.lr / bc1)


def _raw_h(v: torch.Tensor) -> torch.Tensor:
    return torch.sigmoid(v) * (ZETA - GAMMA) + GAMMA


def _saturated(v: torch.Tensor) -> bool:
    raw = _raw_h(v)
    return bool(((raw < 0) | (raw > 1)).all())


def _frozen_for_good(v: torch.Tensor, state: dict, lr: float, betas, remaining: int) -> bool:
    """True if every h(V) is saturated now and stays saturated for the remaining steps.

    Once every h is clamped, both loss terms have zero gradient, so Adam only coasts on its
    moments: the step k iterations later is at most lr * |m|/sqrt(v) * a_k with
    a_k = b1^k/(1-b1^(t+k)) / sqrt(b2^k/(1-b2^(t+k))) (eps only shortens it), always in the
    direction -sign(m). If the end point of that bound is saturated on the same side, the
    path is too, so no gradient ever returns and the hard rounding (sign of V) is final.
    """
    if not _saturated(v):
        return False
    if remaining <= 0 or not state:
        return True
    b1, b2 = betas
    t = int(state["step"])
    k = torch.arange(1, remaining + 1, dtype=torch.float64)
    a = (b1 ** k / (1 - b1 ** (t + k))) / torch.sqrt(b2 ** k / (1 - b2 ** (t + k)))
    m, s = state["exp_avg"], state["exp_avg_sq"].sqrt()
    reach = torch.where(s > 0, m / s.clamp_min(1e-30), torch.zeros_like(m)) * (lr * float(a.sum()))
    end = v - reach
    h_now, h_end = rectified_sigmoid(v), _raw_h(end)
    same = torch.where(h_now >= 1, h_end > 1, h_end < 0)
    return bool(same.all())


def reconstruction_loss(out: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """Squared error summed over output channels (dim 1), averaged over everything else
    (batch, positions); optionally weighted element-wise (BRECQ's Fisher weights)."""
    per_channel_sum = out.numel() / out.shape[1]
    if weight is None:
        return F.mse_loss(out, target, reduction="sum") / per_channel_sum
    return ((out - target).square() * weight).sum() / per_channel_sum


def autograd_loss_and_grads(forward):
    """(loss, gradients to the soft weights) of `forward(x, ws)` by autograd: any unit, any loss weight."""
    def loss_and_grads(xb, yb, ws, wb=None):
        rec = reconstruction_loss(forward(xb, ws), yb, wb)
        return rec, torch.autograd.grad(rec, ws, allow_unused=True)  # nothing else (biases) is differentiated
    return loss_and_grads


def layer_loss_and_grads(layer: nn.Module):
    """(loss, [d loss / d weight]) of one conv or linear layer in closed form, without autograd.

    With out = layer(x; W) and loss = sum(weight * (out - y)^2) / P (P = outputs per channel),
    the weight gradient is the layer's weight-gradient kernel applied to 2 weight (out - y) / P:
    the same convolution-backward / matmul autograd would run, minus its graph bookkeeping,
    which is most of a step's cost on small layers.
    """
    bias = None if layer.bias is None else layer.bias.detach()
    if isinstance(layer, nn.Conv2d):
        if layer.padding_mode != "zeros" or isinstance(layer.padding, str):
            return autograd_loss_and_grads(lambda xb, ws: layer_forward(layer, xb, ws[0]))

        def conv_loss_and_grads(xb, yb, ws, wb=None):
            w = ws[0].detach()
            diff = F.conv2d(xb, w, bias, layer.stride, layer.padding, layer.dilation, layer.groups).sub_(yb)
            per = diff.numel() / diff.shape[1]
            g_out, sq = _output_grad(diff, wb, per)
            # the weight-gradient kernel autograd would call, without recording a graph (test: autograd)
            _, g_w, _ = torch.ops.aten.convolution_backward(
                g_out, xb, w, None, layer.stride, layer.padding, layer.dilation, False, [0, 0],
                layer.groups, [False, True, False])
            return sq.sum() / per, (g_w,)
        return conv_loss_and_grads
    if not isinstance(layer, nn.Linear):
        raise TypeError(f"layer_loss_and_grads: expected nn.Conv2d or nn.Linear, got {type(layer).__name__}")

    def linear_loss_and_grads(xb, yb, ws, wb=None):
        x2 = xb.reshape(-1, xb.shape[-1])
        diff = F.linear(x2, ws[0].detach(), bias).sub_(yb.reshape(len(x2), -1))
        per = diff.numel() / diff.shape[1]
        g_out, sq = _output_grad(diff, None if wb is None else wb.reshape(diff.shape), per)
        return sq.sum() / per, (torch.mm(g_out.t(), x2),)
    return linear_loss_and_grads


def _output_grad(diff: torch.Tensor, wb: torch.Tensor | None, per: float):
    """d loss / d out and the per-element loss terms, for loss = sum(wb * diff^2) / per."""
    if wb is None:
        return diff.mul(2.0 / per), diff.square()
    wd = diff * wb
    return wd.mul(2.0 / per), wd.mul_(diff)


INDEX_BLOCK = 1024  # batch indices drawn this many steps at a time: one randint call, not one per step
SAMPLINGS = ("with_replacement", "without_replacement")


def batch_indices(n: int, batch: int, count: int, generator: torch.Generator,
                  sampling: str = "with_replacement") -> torch.Tensor:
    """(count, batch) indices into n calibration examples, one row per optimisation step.

    with_replacement: every index drawn independently (an image may repeat within a batch);
    without_replacement: each batch `batch` distinct images, batches drawn independently, as the
    authors' `torch.randperm(n)[:batch]` per iteration (here a row-wise argsort of uniforms).
    """
    if sampling == "with_replacement":
        return torch.randint(n, (count, batch), generator=generator)
    if sampling != "without_replacement":
        raise ValueError(f"batch_sampling: {sampling!r} is not one of {list(SAMPLINGS)}")
    rows = max(1, (1 << 22) // n)  # bound the uniforms drawn at once to ~4M
    return torch.cat([torch.rand(min(rows, count - i), n, generator=generator).argsort(dim=1)[:, :batch]
                      for i in range(0, count, rows)])


@contextmanager
def flush_denormals():
    """Treat subnormal floats as 0 on this thread while inside (switched off after: torch
    cannot report the previous setting, and off is its default).

    Adam's first moment of a saturated V decays by 0.9 per step and turns subnormal after
    some 700 steps; subnormal arithmetic is many times slower on x86, and the values it
    would change are below 1e-38.
    """
    on = torch.set_flush_denormal(True)  # False where the CPU has no such mode
    try:
        yield
    finally:
        if on:
            torch.set_flush_denormal(False)


def reconstruct(forward, roundings: list[Rounding], x: torch.Tensor, target: torch.Tensor, *,
                iters: int, batch: int, lr: float, lam: float, warmup: float, beta_start: float,
                beta_end: float, weight: torch.Tensor | None = None, seed: int = 0, early_stop: bool = True,
                loss_and_grads=None, sampling: str = "with_replacement") -> dict:
    """Optimise the roundings so that forward(x, soft weights) matches `target`.

    `forward(x, ws)` is differentiated by autograd; a `loss_and_grads(x, y, ws, weight)`
    callable (e.g. `layer_loss_and_grads(layer)`) may be passed instead, as `forward=None,
    loss_and_grads=...`. Loss per batch: `reconstruction_loss` plus the rounding regulariser
    (after the warm-up). Batches are drawn by `batch_indices(..., sampling)`.
    Returns {"iters_run", "early_stop", "rec_loss", "seconds"} (seconds: the optimisation loop).
    """
    if iters == 0 or not roundings:
        return {"iters_run": 0, "early_stop": False, "rec_loss": float("nan"), "seconds": 0.0}
    if loss_and_grads is None:
        loss_and_grads = autograd_loss_and_grads(forward)
    params = [r.v for r in roundings]
    adam = Adam(params, lr)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    n = len(x)
    b = min(batch, n)
    warm = int(warmup * iters)
    out = {"iters_run": iters, "early_stop": False}
    start = time.perf_counter()
    with flush_denormals():
        for step in range(iters):
            if step % INDEX_BLOCK == 0:
                block = batch_indices(n, b, min(INDEX_BLOCK, iters - step), gen, sampling).to(x.device)
            idx = block[step % INDEX_BLOCK]
            ws = [r.soft_step() for r in roundings]
            rec, grads = loss_and_grads(x.index_select(0, idx), target.index_select(0, idx), ws,
                                        None if weight is None else weight.index_select(0, idx))
            beta = beta_at(step, iters, warmup, beta_start, beta_end)
            adam.step([r.grad_v(g, lam, beta) for r, g in zip(roundings, grads)])
            if early_stop and step >= warm and (step + 1) % EARLY_STOP_EVERY == 0 and step + 1 < iters:
                if all(_frozen_for_good(p, adam.state(i), lr, adam.betas, iters - step - 1)
                       for i, p in enumerate(params)):
                    out = {"iters_run": step + 1, "early_stop": True}
                    break
    return {**out, "rec_loss": float(rec.detach()), "seconds": round(time.perf_counter() - start, 4)}


# ---------------------------------------------------------------- carrying activations

@torch.no_grad()
def run_chunked(module: nn.Module, x: torch.Tensor, chunk: int = CHUNK) -> torch.Tensor:
    return torch.cat([module(x[i:i + chunk]) for i in range(0, len(x), chunk)])


@torch.no_grad()
def capture(module: nn.Module, layer: nn.Module, x: torch.Tensor, what: str, chunk: int = CHUNK) -> torch.Tensor:
    """The input (what="input") or output of `layer` while `module` runs on x (cloned)."""
    got = []

    def hook(mod, inp, out):
        got.append((inp[0] if what == "input" else out).detach().clone())
    handle = layer.register_forward_hook(hook)
    try:
        for i in range(0, len(x), chunk):
            module(x[i:i + chunk])
    finally:
        handle.remove()
    return torch.cat(got)


def layer_forward(layer: nn.Module, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    if isinstance(layer, nn.Conv2d):
        return layer._conv_forward(x, weight, layer.bias)
    return F.linear(x, weight, layer.bias)


def paired_units(model: nn.Module, fp_model: nn.Module, plan: dict) -> list[tuple[Unit, Unit]]:
    units, fp_units = reconstruction_units(model), reconstruction_units(fp_model)
    covered = {n for u in units for n in u.layers}
    missing = sorted(set(plan) - covered)
    if missing:
        raise ValueError(f"layers {missing} belong to no reconstruction unit of {type(model).__name__}; "
                         "its reconstruction_units() must cover every quantizable layer")
    return list(zip(units, fp_units))


def calibration_input(model: nn.Module, calib) -> torch.Tensor:
    """The calibration images as one float32 batch on the model's device; a list of batches
    (calibration rounds) is concatenated."""
    if calib is None:
        raise ValueError("this PTQ method needs calibration images (calib is None); "
                         "pass a calibration batch, e.g. pipeline.calibration_set(...)")
    dev = next(model.parameters()).device
    if isinstance(calib, (list, tuple)):
        calib = torch.cat([c.to(dev, torch.float32) for c in calib])
    return calib.to(dev, torch.float32)


ROUNDING_OPTIONS = ("adaround_iters", "adaround_batch", "adaround_lr", "adaround_warmup",
                    "adaround_beta_start", "adaround_beta_end", "batch_sampling")  # shared by AdaRound and BRECQ


def rounding_options(lam: float, adaround_iters=20000, adaround_batch=32, adaround_lr=1e-3,
                     adaround_warmup=0.2, adaround_beta_start=20.0, adaround_beta_end=2.0,
                     batch_sampling="with_replacement") -> dict:
    """`reconstruct`'s keyword arguments from the shared rounding options and a method's lambda."""
    return {"iters": adaround_iters, "lam": lam, "batch": adaround_batch, "lr": adaround_lr,
            "warmup": adaround_warmup, "beta_start": adaround_beta_start, "beta_end": adaround_beta_end,
            "sampling": batch_sampling}
