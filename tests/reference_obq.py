"""The textbook OBQ (Frantar & Alistarh 2022), one row and one weight at a time, in float64 numpy.

Slow and plain, for tests and benchmarks/bench_obc.py to check `ptqlib.ptq.obc.obq_layer`
against: no batching, no index swapping, no cached diagonal; the full D x D inverse is
downdated in place (eliminated rows and columns become 0) and the active set is a boolean mask.
"""
import numpy as np
import torch

from ptqlib.ptq.grid import Grid
from ptqlib.ptq.obc import OUTLIER, inverse, prepare_hessian


def obq_reference(w2d: torch.Tensor, h: torch.Tensor, grid: Grid, damp: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Codes (R, D) and per-row losses (R,) of greedy OBQ with the outlier-first rule."""
    hd, wd = prepare_hessian(h.double(), w2d.double(), damp)
    hinv0 = inverse(hd).numpy()
    s_all, z_all = grid.scale.double().numpy()[:, 0], grid.zero.double().numpy()[:, 0]
    top = grid.levels - 1
    codes = np.zeros(wd.shape)
    losses = np.zeros(len(wd))
    for r, row in enumerate(wd.numpy()):
        w, hinv, s, z = row.copy(), hinv0.copy(), s_all[r], z_all[r]
        active = np.ones(len(w), dtype=bool)
        for _ in range(len(w)):
            c = np.clip(np.round(w / s) + z, 0, top)
            err2 = (w - (c - z) * s) ** 2
            outliers = active & (err2 > OUTLIER * s * s)
            if outliers.any():  # pushed outside its rounding cell: quantize the worst one now
                j = int(np.argmax(np.where(outliers, err2, -1.0)))
            else:
                j = int(np.argmin(np.where(active, err2 / np.where(active, np.diag(hinv), 1.0), np.inf)))
            e = w[j] - (c[j] - z) * s
            losses[r] += e * e / hinv[j, j] / 2
            codes[r, j] = c[j]
            w -= hinv[:, j] * (e / hinv[j, j])
            hinv -= np.outer(hinv[:, j], hinv[j, :]) / hinv[j, j]
            active[j] = False
    return torch.from_numpy(codes).to(w2d.dtype), torch.from_numpy(losses)
