"""AdaRound (Nagel et al. 2020), layer by layer, and the rounding machinery BRECQ reuses.

Each weight is rounded down or up on the layer's fixed grid (the core's `fit_grid`):
`codes = clamp(floor(W/s) + z + h(V), 0, L-1)` with the rectified sigmoid
`h(V) = clamp(sigmoid(V) (zeta - gamma) + gamma, 0, 1)`, V initialised so that h(V) is the
fractional part of W/s (the soft weight starts equal to W). Adam on V minimises the
reconstruction error of the layer's output plus `lambda * sum(1 - |2h - 1|^beta)`; the
regulariser is off during the warm-up, then beta falls linearly from beta_start to
beta_end over the remaining iterations (the schedule scales with the iteration count).
The hard rounding is `floor + 1[V >= 0]`.

Inputs come from the already-quantized network, targets from the FP network: both are
carried forward unit by unit (`models.reconstruction_units`), never recomputed from the
model input.
"""
from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn import functional as F

from ..models import Unit, reconstruction_units
from ..quantize import Grid, QuantizedWeight, fit_grid, register

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

    The optimisation step does the chain rule V -> soft weight by hand (`soft_step` and
    `grad_v`): autograd then only sees weight -> output -> loss, which keeps a step close to
    the cost of one forward + backward of the layer. Gradient flows to V where h is not
    saturated and both neighbouring grid points exist (a clipped weight has a fixed code).
    """

    def __init__(self, weight: torch.Tensor, grid: Grid):
        w2d = weight.detach().flatten(1).float()
        self.shape, self.grid = weight.shape, grid
        x = w2d / grid.scale
        floor = torch.floor(x)
        self.base = floor + grid.zero  # code of the grid point just below W (before clamping)
        self.v = initial_logits(x - floor).requires_grad_(True)
        inside = (self.base >= 0) & (self.base <= grid.levels - 2)
        self._dscale = inside * grid.scale * (ZETA - GAMMA)  # d weight / d h, times d h / d raw sigmoid
        self._cache = None

    def soft_weight(self, h: torch.Tensor) -> torch.Tensor:
        """The soft-rounded weight for a given h (differentiable; used by tests)."""
        codes = torch.clamp(self.base + h, 0, self.grid.levels - 1)
        return ((codes - self.grid.zero) * self.grid.scale).view(self.shape)

    @torch.no_grad()
    def soft_step(self) -> torch.Tensor:
        """The current soft weight as a fresh leaf that collects d loss / d weight."""
        sig = torch.sigmoid(self.v)
        raw = sig * (ZETA - GAMMA) + GAMMA
        h = raw.clamp(0.0, 1.0)
        self._cache = (sig, raw, h)
        w = self.soft_weight(h)
        return w.requires_grad_(True)

    @torch.no_grad()
    def grad_v(self, w: torch.Tensor, lam: float, beta: float | None) -> None:
        """Set v.grad from the weight's gradient, plus the regulariser's (if beta is not None)."""
        sig, raw, h = self._cache
        dh = torch.where((raw >= 0) & (raw <= 1), sig * (1 - sig), 0.0)  # d h / d V / (zeta - gamma)
        g = (w.grad.view_as(dh) * self._dscale) if w.grad is not None else torch.zeros_like(dh)
        if beta is not None:  # d/dV lam * sum(1 - |2h - 1|^beta)
            t = 2 * h - 1
            g = g - (2 * lam * beta * (ZETA - GAMMA)) * t.abs().pow(beta - 1) * torch.sign(t)
        self.v.grad = g * dh

    def hard_codes(self) -> torch.Tensor:
        return torch.clamp(self.base + (self.v.detach() >= 0).float(), 0, self.grid.levels - 1)

    def quantized(self) -> QuantizedWeight:
        return QuantizedWeight(self.grid, self.hard_codes())


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
    end = v.detach() - reach
    h_now, h_end = rectified_sigmoid(v.detach()), _raw_h(end)
    same = torch.where(h_now >= 1, h_end > 1, h_end < 0)
    return bool(same.all())


def _adam(params, lr):
    try:
        return torch.optim.Adam(params, lr=lr, fused=True)
    except (RuntimeError, TypeError):
        return torch.optim.Adam(params, lr=lr)


def reconstruct(forward, roundings: list[Rounding], x: torch.Tensor, target: torch.Tensor, *,
                iters: int, batch: int, lr: float, lam: float, warmup: float, beta_start: float,
                beta_end: float, weight: torch.Tensor | None = None, seed: int = 0, early_stop: bool = True) -> dict:
    """Optimise the roundings so that forward(x, soft weights) matches `target`.

    Loss per batch: sum over output channels (dim 1) of the squared error, mean over the
    rest (batch, positions), optionally weighted element-wise by `weight` (Fisher), plus the
    rounding regulariser. Returns {"iters_run", "early_stop", "rec_loss"}.
    """
    if iters == 0 or not roundings:
        return {"iters_run": 0, "early_stop": False, "rec_loss": float("nan")}
    params = [r.v for r in roundings]
    opt = _adam(params, lr)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    n = len(x)
    b = min(batch, n)
    warm = int(warmup * iters)
    rec = torch.zeros(())
    step = 0
    for step in range(iters):
        idx = torch.randint(n, (b,), generator=gen).to(x.device)
        ws = [r.soft_step() for r in roundings]
        out = forward(x[idx], ws)
        err = (out - target[idx]).square()
        if weight is not None:
            err = err * weight[idx]
        rec = err.sum(1).mean()
        rec.backward()
        beta = beta_at(step, iters, warmup, beta_start, beta_end)
        for r, w in zip(roundings, ws):
            r.grad_v(w, lam, beta)
        opt.step()
        if early_stop and step >= warm and (step + 1) % EARLY_STOP_EVERY == 0 and step + 1 < iters:
            betas = opt.param_groups[0]["betas"]
            if all(_frozen_for_good(p, opt.state[p], lr, betas, iters - step - 1) for p in params):
                return {"iters_run": step + 1, "early_stop": True, "rec_loss": float(rec.detach())}
    return {"iters_run": step + 1, "early_stop": False, "rec_loss": float(rec.detach())}


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
    if calib is None:
        raise ValueError("this PTQ method needs calibration images (calib is None); "
                         "pass a calibration batch, e.g. pipeline.calibration_set(...)")
    dev = next(model.parameters()).device
    return calib.to(dev, torch.float32)


def rounding_options(adaround_iters=20000, adaround_lambda=0.01, adaround_batch=32, adaround_lr=1e-3,
                     adaround_warmup=0.2, adaround_beta_start=20.0, adaround_beta_end=2.0) -> dict:
    return {"iters": adaround_iters, "lam": adaround_lambda, "batch": adaround_batch, "lr": adaround_lr,
            "warmup": adaround_warmup, "beta_start": adaround_beta_start, "beta_end": adaround_beta_end}


# ---------------------------------------------------------------- the method

@register("adaround")
def adaround(model: nn.Module, plan: dict[str, int], calib, *, symmetric: bool = False,
             clip_norm: float = 2.4, seed: int = 0, **options) -> dict[str, QuantizedWeight]:
    """Layer-wise AdaRound: each layer in forward order, input from the quantized prefix."""
    ropts = rounding_options(**{k: v for k, v in options.items() if k.startswith("adaround_")})
    fp_model = copy.deepcopy(model).eval()
    model.eval()
    x_q = calibration_input(model, calib)
    x_fp = x_q
    out, stats = {}, {}
    for unit, fp_unit in paired_units(model, fp_model, plan):
        ids = {id(m): n for n, m in unit.module.named_modules()}
        fp_ids = dict(fp_unit.module.named_modules())
        model_layers = dict(model.named_modules())
        for name in unit.layers:
            if name not in plan:
                continue
            layer = model_layers[name]
            fp_layer = fp_ids[ids[id(layer)]]
            x_in = capture(unit.module, layer, x_q, "input")
            target = capture(fp_unit.module, fp_layer, x_fp, "output")
            w = layer.weight.detach()
            grid = fit_grid(w.flatten(1), plan[name], symmetric=symmetric, norm=clip_norm)
            r = Rounding(w, grid)
            stats[name] = reconstruct(lambda xb, ws: layer_forward(layer, xb, ws[0]), [r], x_in, target,
                                      seed=seed, **ropts)
            out[name] = r.quantized()
            out[name].stats = stats[name]
            with torch.no_grad():
                layer.weight.copy_(out[name].weight(w.shape))
        x_q, x_fp = run_chunked(unit.module, x_q), run_chunked(fp_unit.module, x_fp)
    return out

