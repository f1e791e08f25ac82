"""AdaRound (Nagel et al. 2020), layer by layer, on the reconstruction core.

Each layer, in forward order, learns its up/down rounding (`reconstruction.Rounding`) so that
its output on inputs from the already-quantized network matches the FP layer's output on FP
inputs. Both inputs are carried forward unit by unit (`models.reconstruction_units`), never
recomputed from the model input. BatchNorm is not folded: the target is the conv's own output.
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from .grid import CLIP_NORM, QuantizedWeight, reconstruction_grid
from .reconstruction import (Rounding, calibration_input, capture, layer_loss_and_grads, paired_units,
                             reconstruct, rounding_options, run_chunked)


def adaround(model: nn.Module, plan: dict[str, int], calib, *, seed: int = 0, adaround_lambda: float = 0.01, grid_search: str = "fine",
             **rounding) -> dict[str, QuantizedWeight]:
    """Layer-wise AdaRound: each layer in forward order, input from the quantized prefix.

    `rounding` holds the shared rounding options (`reconstruction.ROUNDING_OPTIONS`)."""
    ropts = rounding_options(adaround_lambda, **rounding)
    fp_model = copy.deepcopy(model).eval()
    model.eval()
    x_q = calibration_input(model, calib)
    x_fp = x_q
    out = {}
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
            grid = reconstruction_grid(w.flatten(1), plan[name], False, CLIP_NORM, grid_search)
            r = Rounding(w, grid)
            stats = reconstruct(None, [r], x_in, target, seed=seed, loss_and_grads=layer_loss_and_grads(layer),
                                **ropts)
            out[name] = r.quantized()
            out[name].stats = stats
            with torch.no_grad():
                layer.weight.copy_(out[name].weight(w.shape))
        x_q, x_fp = run_chunked(unit.module, x_q), run_chunked(fp_unit.module, x_fp)
    return out
