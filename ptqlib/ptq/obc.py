"""OBC's exact OBQ (Frantar & Alistarh 2022) and its fast relative GPTQ (Frantar et al. 2023).

Per layer, the output error ||W X - Q X||^2 / n separates over output rows into
1/2 (w - q)^T H (w - q) with H = 2 X X^T / n, X the layer's calibration inputs (conv
inputs unfolded into patches: every position is a sample). Where X comes from is an option:
- "sequential": layers in forward order, X from the already-quantized prefix (carried unit by unit);
- "fp": every layer's H from the full-precision model in one pass (hooks feeding one
  `HessianAccumulator` per layer while one driver walks the calibration batches), then each
  layer quantized on its own, as the OBC authors' code does. Calibration may come in rounds
  (a list of batches, e.g. fresh augmentations): their samples are pooled into one H.
  Every layer's H is held at once (float64): about 0.74 GB for a CIFAR ResNet-18.

OBQ, per row: repeatedly pick the unquantized weight with the smallest (w_j - q_j)^2 / Hinv_jj
(a weight pushed more than half a step outside the grid goes first, the worst of them),
fix it to its grid point q_j, move the remaining weights by the optimal compensation
-Hinv[:, j] (w_j - q_j) / Hinv_jj and remove j from the inverse Hessian by the rank-1
downdate Hinv -= Hinv[:, j] Hinv[j, :] / Hinv_jj. Each step's loss is (w_j - q_j)^2 / (2 Hinv_jj)
and the steps add up to the row's final error. Rows run in parallel batches, each with its
own copy of Hinv. The downdates are delayed and applied OBQ_BLOCK at a time as one GEMM (a
step rebuilds only the row of Hinv it needs from the pending columns), and eliminated
indices are dropped at each such flush, so the work shrinks with the active set (about
D^3/3 per row instead of D^3) and runs at GEMM speed rather than at memory speed.

GPTQ: one column order for all rows, so one Hinv serves every row, in the Cholesky form
(upper factor U of Hinv: row i of U / U_ii is the column of the current inverse), with the
update inside a block of columns done eagerly and the rest lazily, one GEMM per block.

Inverting H (`obc_cholesky`): "strict" factors it in float64 and stops with a one-line error
when it is not positive definite (raise obc_damp); "authors" does what the OBC authors'
trueobs.py does: the Cholesky in float32 with TF32 off, and on failure 1 * I added to H (an
absolute amount, whatever H's scale) and the layer quantized anyway; the layer's stats record
`identity_added: 1.0` (the job's log and meta show it).

Every result carries `algorithm` ("obq" or "gptq") and the per-layer loss in `stats`.
The plain textbook OBQ that tests and benchmarks/bench_obc.py compare `obq_layer` with is
tests/reference_obq.py.
"""
from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import nn
from torch.nn import functional as F

from ptqlib.models.zoo import reconstruction_units
from .grid import CLIP_NORM, Grid, QuantizedWeight, fit_grid
from .reconstruction import CHUNK, calibration_input, run_chunked

GPTQ_BLOCK = 128  # GPTQ updates lazily in blocks of 128 columns (the GPTQ paper's; the result does not depend on it)

# Bytes for the per-row inverse-Hessian copies processed together. With blocked downdates the batch need
# not fit a cache: on the 2-core CPU batches of 32-128 rows ran within ~30% of each other at D = 576 and
# 1152, 8 rows ~2x slower at D = 576; 128 MB is 24 rows at D = 1152. On a GPU it should fill the device.
MEMORY_BUDGET = {"cpu": 128 * 2 ** 20, "cuda": 4 * 2 ** 30}
# Images per forward in the full-precision Hessian pass: a 32x32 conv's unfolded float64 patches
# take ~4.7 MB per image at D = 576, so memory stays bounded whatever the calibration size.
HESSIAN_CHUNK = 64
HESSIAN_SOURCES = ("sequential", "fp")
CHOLESKY_MODES = ("strict", "authors")
AUTHORS_FALLBACK = 1.0  # trueobs.py adds this times I to a Hessian whose Cholesky fails
OUTLIER = 0.25 * (1 + 1e-6)  # (w - q)^2 > OUTLIER * scale^2: pushed out of the grid
OBQ_BLOCK = 64  # OBQ applies its rank-1 downdates 64 at a time, one GEMM (same choices in exact arithmetic)


# ---------------------------------------------------------------- Hessian

def layer_samples(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The layer's inputs as rows of samples (n, D); D matches weight.flatten(1)."""
    if isinstance(layer, nn.Conv2d):
        if layer.groups != 1 or layer.padding_mode != "zeros" or isinstance(layer.padding, str):
            raise NotImplementedError(f"OBC/GPTQ support plain convs (groups=1, zero padding); got {layer}")
        cols = F.unfold(x, layer.kernel_size, layer.dilation, layer.padding, layer.stride)  # (N, D, P)
        return cols.transpose(1, 2).reshape(-1, cols.shape[1])
    return x.reshape(-1, x.shape[-1])


class HessianAccumulator:
    """H = 2 X X^T / n over every sample seen (float64), fed by a forward hook."""

    def __init__(self, layer: nn.Module):
        d = layer.weight[0].numel()
        self.layer, self.n = layer, 0
        self.h = torch.zeros(d, d, dtype=torch.float64, device=layer.weight.device)

    def __call__(self, mod, inp, out):
        s = layer_samples(self.layer, inp[0].detach()).double()
        self.h.addmm_(s.T, s, alpha=2.0)
        self.n += len(s)

    def hessian(self) -> torch.Tensor:
        return self.h / max(1, self.n)


def prepare_hessian(h: torch.Tensor, w2d: torch.Tensor, damp: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Dead inputs (diag 0) get H_ii = 1 and a zero weight column; then relative dampening."""
    h = h.clone()
    w2d = w2d.clone()
    dead = torch.diagonal(h) == 0
    h[dead, dead] = 1.0
    w2d[:, dead] = 0.0
    if damp > 0:
        h += damp * torch.diagonal(h).mean() * torch.eye(len(h), dtype=h.dtype, device=h.device)
    return h, w2d


class NotPositiveDefinite(ValueError):
    """A layer Hessian has no Cholesky factor (strict mode)."""


def inverse(h: torch.Tensor, cholesky: str = "strict", info: dict | None = None) -> torch.Tensor:
    """H^-1 by Cholesky. strict: in H's dtype, NotPositiveDefinite when H is not positive definite;
    authors: in float32, adding AUTHORS_FALLBACK * I once when that fails (noted in `info`)."""
    if cholesky not in CHOLESKY_MODES:
        raise ValueError(f"obc_cholesky: {cholesky!r} is not one of {list(CHOLESKY_MODES)}")
    if cholesky == "authors":
        h = h.float()
    chol, status = torch.linalg.cholesky_ex(h)
    if status.item() != 0 and cholesky == "authors":
        h = h + AUTHORS_FALLBACK * torch.eye(len(h), dtype=h.dtype, device=h.device)
        chol, status = torch.linalg.cholesky_ex(h)
        if info is not None:
            info["identity_added"] = AUTHORS_FALLBACK
    if status.item() != 0:
        raise NotPositiveDefinite(
            "the layer Hessian is not positive definite (smallest diagonal entry "
            f"{h.diagonal().min().item():.3g}); raise obc_damp, or set obc_cholesky: authors to add 1*I as the "
            "OBC authors do")
    return torch.cholesky_inverse(chol)


@contextmanager
def tf32_off(enabled: bool = True):
    """TF32 matmuls and convolutions off while inside (the OBC authors' setting), restored after."""
    if not enabled:
        yield
        return
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


# ---------------------------------------------------------------- OBQ

def obq_rows(w: torch.Tensor, hinv: torch.Tensor, grid: Grid, max_steps: int | None = None,
             outlier_first: bool = True, block: int = OBQ_BLOCK) -> dict:
    """Exact greedy OBQ for a batch of rows (P, D) sharing the inverse Hessian (D, D).

    `grid` holds the rows' scale and zero (P, 1). Returns codes (P, D, by original column),
    losses (P, steps, in order of elimination) and, for tests, the state after
    `max_steps` steps: `hinv` (P, m, m) over the active columns `active` (P, m).

    Each row keeps its inverse as it stood at the last flush plus the columns eliminated since
    (`pending`); a step rebuilds only the one row of the current inverse it needs, and every
    `block` steps the pending rank-1 downdates are applied as one batched GEMM and the
    eliminated columns dropped. Same choices as the one-update-per-step form (tests/reference_obq.py),
    at a GEMM's speed instead of a memory-bound rank-1 update per step.
    """
    p, d = w.shape
    dt, dev = hinv.dtype, w.device
    w = w.to(dt).clone()
    s, z, top = grid.scale.to(dt), grid.zero.to(dt), grid.levels - 1
    hb = hinv.unsqueeze(0).repeat(p, 1, 1)  # one copy per row: rows diverge after their first step
    diag = torch.diagonal(hb, dim1=1, dim2=2).clone()  # the current diagonal, kept up to date every step
    perm = torch.arange(d, device=dev).repeat(p, 1)  # original column of each active slot
    codes = torch.zeros(p, d, dtype=dt, device=dev)
    steps = d if max_steps is None else max_steps
    losses = torch.zeros(p, steps, dtype=dt, device=dev)
    ar = torch.arange(p, device=dev)
    limit = OUTLIER * s.square()
    block = max(1, min(block, steps or 1))
    pending = torch.zeros(p, block, d, dtype=dt, device=dev)  # current-inverse columns eliminated since the flush
    pivots = torch.ones(p, block, dtype=dt, device=dev)
    done = torch.zeros(p, d, dtype=torch.bool, device=dev)  # eliminated since the flush
    k = 0
    for step in range(steps):
        m = w.shape[1]
        c = torch.clamp(torch.round(w / s) + z, 0, top)
        err = w - (c - z) * s
        err2 = err.square()
        j = torch.where(done, torch.inf, err2 / diag).argmin(1)
        if outlier_first:
            out = (err2 > limit) & ~done
            if bool(out.any()):
                j = torch.where(out.any(1), torch.where(out, err2, -1.0).argmax(1), j)
        h = hb[ar, j]  # row j (== column j) of the inverse at the flush, then the pending downdates
        if k:
            h = h - torch.bmm((pending[ar, :k, j] / pivots[:, :k]).unsqueeze(1), pending[:, :k, :m]).squeeze(1)
        hjj = h[ar, j]
        e = err[ar, j]
        losses[:, step] = e.square() / hjj / 2
        codes[ar, perm[ar, j]] = c[ar, j]
        w.sub_(h * (e / hjj).unsqueeze(1))
        diag.sub_(h * h / hjj.unsqueeze(1))
        pending[:, k, :m] = h
        pivots[:, k] = hjj
        done[ar, j] = True
        k += 1
        if k == block or step == steps - 1:
            hb, w, perm, diag = _flush(hb, w, perm, diag, done, pending[:, :k, :m], pivots[:, :k])
            done = torch.zeros_like(w, dtype=torch.bool)
            k = 0
    return {"codes": codes, "losses": losses, "hinv": hb, "active": perm, "w": w}


def _flush(hb, w, perm, diag, done, pending, pivots):
    """Drop the eliminated slots (order kept) and apply their downdates: hb -= sum_i u_i u_i^T / pivot_i."""
    p, k, m = pending.shape
    keep = torch.sort(done.to(torch.uint8), dim=1, stable=True).indices[:, :m - k]  # active slots, in order
    kept = torch.empty(p, m - k, m - k, dtype=hb.dtype, device=hb.device)
    u = torch.empty(p, k, m - k, dtype=hb.dtype, device=hb.device)
    for i in range(p):  # per row index_select: ~6x faster than a batched gather on CPU
        torch.index_select(hb[i].index_select(0, keep[i]), 1, keep[i], out=kept[i])
        torch.index_select(pending[i], 1, keep[i], out=u[i])
    kept.baddbmm_((u / pivots.unsqueeze(2)).transpose(1, 2), u, alpha=-1.0)
    return kept, w.gather(1, keep), perm.gather(1, keep), diag.gather(1, keep)


def obq_layer(w2d: torch.Tensor, h: torch.Tensor, grid: Grid, damp: float,
              budget: int | None = None, dtype=torch.float32, cholesky: str = "strict",
              info: dict | None = None, block: int = OBQ_BLOCK) -> tuple[torch.Tensor, torch.Tensor]:
    """Codes (R, D) and per-row losses (R,) of exact OBQ; rows in batches sized to `budget`.

    `cholesky` and `info`: see `inverse`; `block`: see `obq_rows`."""
    hd, wd = prepare_hessian(h, w2d, damp)
    hinv = inverse(hd, cholesky, info).to(dtype)
    r, d = wd.shape
    if budget is None:
        budget = MEMORY_BUDGET.get(w2d.device.type, MEMORY_BUDGET["cpu"])
    rows = max(1, min(r, budget // (d * d * hinv.element_size())))
    codes, losses = [], []
    threads = torch.get_num_threads()
    if w2d.device.type == "cpu":  # thousands of small cache-resident steps: one thread is faster,
        torch.set_num_threads(1)  # and several stall badly on a shared CPU (measured 1.5 s vs 250 s)
    try:
        for i in range(0, r, rows):
            g = Grid(grid.scale[i:i + rows], grid.zero[i:i + rows], grid.levels)
            res = obq_rows(wd[i:i + rows], hinv, g, block=block)
            codes.append(res["codes"])
            losses.append(res["losses"].sum(1))
    finally:
        torch.set_num_threads(threads)
    return torch.cat(codes).to(w2d.dtype), torch.cat(losses)


# ---------------------------------------------------------------- GPTQ

def gptq_layer(w2d: torch.Tensor, h: torch.Tensor, grid: Grid, damp: float, block: int = 128,
               dtype=torch.float32, cholesky: str = "strict",
               info: dict | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Codes (R, D) and per-row losses (R,) of GPTQ in the natural column order (`cholesky`, `info`: `inverse`)."""
    hd, wd = prepare_hessian(h, w2d, damp)
    u = torch.linalg.cholesky(inverse(hd, cholesky, info).double(), upper=True).to(dtype)
    w = wd.to(dtype).clone()
    s, z, top = grid.scale.to(dtype), grid.zero.to(dtype), grid.levels - 1
    r, d = w.shape
    codes = torch.zeros_like(w)
    losses = torch.zeros(r, dtype=dtype, device=w.device)
    for i1 in range(0, d, block):
        i2 = min(i1 + block, d)
        wb = w[:, i1:i2]  # a view: updated in place
        errs = torch.zeros(r, i2 - i1, dtype=dtype, device=w.device)
        for k in range(i2 - i1):
            col = wb[:, k:k + 1]
            c = torch.clamp(torch.round(col / s) + z, 0, top)
            diff = col - (c - z) * s
            ukk = u[i1 + k, i1 + k]
            codes[:, i1 + k:i1 + k + 1] = c
            losses += diff.squeeze(1).square() / ukk.square() / 2
            e = diff / ukk
            wb[:, k:] -= e * u[i1 + k, i1 + k:i2]
            errs[:, k:k + 1] = e
        if i2 < d:
            w[:, i2:] -= errs @ u[i1:i2, i2:]
    return codes.to(w2d.dtype), losses


# ---------------------------------------------------------------- the drivers

def _quantize_layer(name: str, layer: nn.Module, h: torch.Tensor, samples: int, levels: int, solve, algorithm: str,
                    symmetric: bool, clip_norm: float, hessian: str, grid_search: str) -> QuantizedWeight:
    w2d = layer.weight.detach().flatten(1).float()
    grid = fit_grid(w2d, levels, symmetric=symmetric, norm=clip_norm, search=grid_search)
    info = {}
    try:
        codes, losses = solve(w2d, h, grid, info)
    except NotPositiveDefinite as err:
        raise NotPositiveDefinite(f"obc_cholesky: layer {name}: {err}") from None
    q = QuantizedWeight(grid, codes)
    q.algorithm = algorithm
    q.stats = {"loss": float(losses.sum()), "samples": samples, **info}
    if hessian != "sequential":
        q.stats["hessian"] = hessian
    return q


def _sequential(model: nn.Module, plan: dict[str, int], calib, solve, algorithm: str, symmetric: bool,
                clip_norm: float, grid_search: str) -> dict[str, QuantizedWeight]:
    """Layers in forward order; each layer's H from inputs of the already-quantized prefix."""
    x_q = calibration_input(model, calib)
    model.eval()
    modules = dict(model.named_modules())
    out = {}
    units = reconstruction_units(model)
    missing = sorted(set(plan) - {n for u in units for n in u.layers})
    if missing:
        raise ValueError(f"layers {missing} belong to no reconstruction unit of {type(model).__name__}")
    for unit in units:
        for name in unit.layers:
            if name not in plan:
                continue
            layer = modules[name]
            acc = HessianAccumulator(layer)
            handle = layer.register_forward_hook(acc)
            try:
                with torch.no_grad():
                    for i in range(0, len(x_q), CHUNK):
                        unit.module(x_q[i:i + CHUNK])
            finally:
                handle.remove()
            q = _quantize_layer(name, layer, acc.hessian(), acc.n, plan[name], solve, algorithm, symmetric,
                                clip_norm, "sequential", grid_search)
            out[name] = q
            with torch.no_grad():
                layer.weight.copy_(q.weight(layer.weight.shape))
        x_q = run_chunked(unit.module, x_q)
    return out


@torch.no_grad()
def fp_hessians(model: nn.Module, names, calib, chunk: int = HESSIAN_CHUNK) -> dict[str, HessianAccumulator]:
    """Every named layer's Hessian accumulator, fed by one pass of `model` as it is.

    `calib` is one batch or a list of batches (calibration rounds); all their samples are
    pooled. Batches go to the model's device `chunk` images at a time.
    """
    if calib is None:
        raise ValueError("OBC/GPTQ need calibration images (calib is None); "
                         "pass a calibration batch or a list of them, e.g. pipeline.calibration_set(...)")
    modules = dict(model.named_modules())
    unknown = sorted(set(names) - set(modules))
    if unknown:
        raise KeyError(f"fp_hessians: no layers {unknown} in {type(model).__name__}")
    accs = {n: HessianAccumulator(modules[n]) for n in names}
    handles = [modules[n].register_forward_hook(acc) for n, acc in accs.items()]
    model.eval()
    dev = next(model.parameters()).device
    try:
        for batch in (calib if isinstance(calib, (list, tuple)) else [calib]):
            for i in range(0, len(batch), chunk):
                model(batch[i:i + chunk].to(dev, torch.float32))
    finally:
        for handle in handles:
            handle.remove()
    return accs


def _full_precision(model: nn.Module, plan: dict[str, int], calib, solve, algorithm: str, symmetric: bool,
                    clip_norm: float, grid_search: str) -> dict[str, QuantizedWeight]:
    """Every layer's H from the FP model in one pass, then each layer quantized from its FP weights."""
    accs = fp_hessians(model, list(plan), calib)
    modules = dict(model.named_modules())
    out = {name: _quantize_layer(name, modules[name], acc.hessian(), acc.n, plan[name], solve, algorithm, symmetric,
                                 clip_norm, "fp", grid_search) for name, acc in accs.items()}
    with torch.no_grad():
        for name, q in out.items():
            modules[name].weight.copy_(q.weight(modules[name].weight.shape))
    return out


def _drive(model, plan, calib, solve, algorithm, symmetric, clip_norm, hessian, grid_search, cholesky):
    if hessian not in HESSIAN_SOURCES:
        raise ValueError(f"obc_hessian: {hessian!r} is not one of {list(HESSIAN_SOURCES)}")
    if cholesky not in CHOLESKY_MODES:
        raise ValueError(f"obc_cholesky: {cholesky!r} is not one of {list(CHOLESKY_MODES)}")
    driver = _sequential if hessian == "sequential" else _full_precision
    with tf32_off(cholesky == "authors"):
        return driver(model, plan, calib, solve, algorithm, symmetric, clip_norm, grid_search)


# ---------------------------------------------------------------- the methods

def obc(model: nn.Module, plan: dict[str, int], calib, *, obc_damp: float = 0.01, obc_hessian: str = "sequential", grid_search: str = "fine",
        obc_cholesky: str = "strict") -> dict[str, QuantizedWeight]:
    """Exact OBQ on every layer (cost O(rows * D^3): use "gptq" for very wide layers on CPU)."""
    return _drive(model, plan, calib,
                  lambda w, h, g, info: obq_layer(w, h, g, obc_damp, cholesky=obc_cholesky, info=info), "obq",
                  False, CLIP_NORM, obc_hessian, grid_search, obc_cholesky)


def gptq(model: nn.Module, plan: dict[str, int], calib, *,
         obc_damp: float = 0.01, obc_hessian: str = "sequential", grid_search: str = "fine",
         obc_cholesky: str = "strict") -> dict[str, QuantizedWeight]:
    """GPTQ on every layer, in the natural column order (O(D^3 + rows * D^2) per layer)."""
    return _drive(model, plan, calib,
                  lambda w, h, g, info: gptq_layer(w, h, g, obc_damp, GPTQ_BLOCK, cholesky=obc_cholesky, info=info),
                  "gptq", False, CLIP_NORM, obc_hessian, grid_search, obc_cholesky)
