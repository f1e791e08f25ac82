"""The table of PTQ methods, the options each reads, and `quantize_model`, their one entry point.

A method is a function `(model, plan, calib, **options) -> {layer: QuantizedWeight}` that
may change `model`'s weights in place; `plan` maps every layer to quantize to its number
of grid levels. `quantize_model` hands each method a copy of the model and only the options
it reads (`METHOD_OPTIONS`), so a caller may pass one merged set of options to every method,
and build a job's key from exactly the options that can change its result.
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from ptqlib.models.zoo import quantizable_layers
from .adaround import adaround
from .brecq import brecq
from .grid import QuantizedWeight, n_levels, round_to_nearest
from .obc import gptq, obc
from .reconstruction import ROUNDING_OPTIONS

QUANTIZERS = {"rtn": round_to_nearest, "adaround": adaround, "brecq": brecq, "obc": obc, "gptq": gptq}

GRID_OPTIONS = ("grid_search",)
METHOD_OPTIONS = {
    "rtn": GRID_OPTIONS,
    "adaround": GRID_OPTIONS + ("seed", "adaround_lambda") + ROUNDING_OPTIONS,
    "brecq": GRID_OPTIONS + ("seed", "brecq_lambda", "brecq_loss") + ROUNDING_OPTIONS,
    "obc": GRID_OPTIONS + ("obc_damp", "obc_hessian", "obc_cholesky"),
    "gptq": GRID_OPTIONS + ("obc_damp", "obc_hessian", "obc_cholesky"),
}
ALL_OPTIONS = frozenset(o for names in METHOD_OPTIONS.values() for o in names)
# A method's own code version: bump it when the method's arithmetic changes its results, so that
# only that method's stored jobs are recomputed (it enters a quantize job's key when above 1).
# obc 2: OBQ's downdates applied in blocks (one GEMM per OBQ_BLOCK steps; float rounding differs).
METHOD_VERSIONS = {"obc": 2}


def _check_method(method: str) -> None:
    if method not in QUANTIZERS:
        raise KeyError(f"method {method!r} is not available; known: {list(QUANTIZERS)}")


def method_option_names(method: str) -> tuple[str, ...]:
    """The keyword options `method` reads (`seed` is the batch-sampling seed of the rounding, 0 by default)."""
    _check_method(method)
    return METHOD_OPTIONS[method]


def layer_bits_plan(layer_names: list[str], bits: float, last_layer_bits=None,
                    overrides: dict | None = None) -> dict[str, float]:
    """Bit-width of every quantizable layer: body width, then the last layer, then named overrides."""
    bits_by_layer = {name: bits for name in layer_names}
    if last_layer_bits is not None:
        bits_by_layer[layer_names[-1]] = last_layer_bits
    for name, b in (overrides or {}).items():
        if name not in bits_by_layer:
            raise KeyError(f"layer_bits: unknown layer {name!r}; quantizable layers are {layer_names}")
        bits_by_layer[name] = b
    return bits_by_layer


def apply_quantized(model: nn.Module, qweights: dict[str, QuantizedWeight]) -> nn.Module:
    """Write the dequantized weights into the model (in place)."""
    layers = dict(quantizable_layers(model))
    with torch.no_grad():
        for name, qw in qweights.items():
            w = layers[name].weight
            w.copy_(qw.weight(w.shape).to(w.dtype))
    return model


def quantize_model(model: nn.Module, method: str, bits_plan: dict[str, float], calib=None,
                   **options) -> tuple[nn.Module, dict[str, QuantizedWeight]]:
    """A quantized copy of `model` made by `method`; the FP model is left untouched.

    `calib` is one batch of calibration images or a list of batches (calibration rounds).
    Options another method reads are ignored; an option no method reads is an error.
    """
    _check_method(method)
    unknown = sorted(set(options) - ALL_OPTIONS)
    if unknown:
        raise TypeError(f"quantize_model: unknown options {unknown}; valid: {sorted(ALL_OPTIONS)}")
    qmodel = copy.deepcopy(model).eval()
    plan = {name: n_levels(b) for name, b in bits_plan.items()}
    own = {k: v for k, v in options.items() if k in METHOD_OPTIONS[method]}
    qweights = QUANTIZERS[method](qmodel, plan, calib, **own)
    return apply_quantized(qmodel, qweights), qweights


def recipe_label(method: str, bits: float, last_layer_bits=None) -> str:
    """Human label used in every table: e.g. 'fp32', 'rtn 1.58b', 'rtn 1.58b + 8b last'."""
    if method == "fp32":
        return "fp32"
    label = f"{method} {bits:g}b"
    return label + (f" + {last_layer_bits:g}b last" if last_layer_bits is not None else "")


@torch.no_grad()
def keep_pruned_zeros(pruned: nn.Module, qmodel: nn.Module, qweights: dict) -> None:
    """Set every weight that is zero in `pruned` back to zero in the quantized model (in place).

    0 is on the grid (code = the channel's zero point), so the codes stay valid; methods that
    compensate errors on other weights (OBC, GPTQ) would otherwise move some pruned weights off zero.
    A grid searched from a raw range of one sign (grid_search "authors") has no 0: its nearest code.
    """
    layers = dict(quantizable_layers(pruned))
    for name, q in qweights.items():
        zero = (layers[name].weight.detach() == 0).flatten(1)
        zero_code = q.grid.zero.clamp(0, q.grid.levels - 1)
        q.codes = torch.where(zero, zero_code.expand_as(q.codes), q.codes)
    apply_quantized(qmodel, qweights)
