"""Weight-only post-training quantization: one grid, several ways of choosing the codes.

- `grid`: the per-channel uniform grid every method shares, and round-to-nearest (RTN).
- `reconstruction`: the learned rounding, its loss and optimiser loop, activation capture
  (shared by AdaRound and BRECQ).
- `adaround`: AdaRound, layer by layer.
- `brecq`: the same rounding optimised per reconstruction unit, BatchNorm folded.
- `obc`: exact OBQ (greedy, optimal compensation) and its fast relative GPTQ.
- `bn`: BatchNorm folding and BatchNorm re-tuning after quantization.
- `methods`: the table of methods (`QUANTIZERS`: name -> function), the options each reads, and
  `quantize_model`.
"""
from .grid import Grid, QuantizedWeight, fit_grid, n_levels, round_to_nearest
from .methods import (METHOD_OPTIONS, QUANTIZERS, apply_quantized, layer_bits_plan, method_option_names,
                      quantize_model, recipe_label)

__all__ = ["Grid", "QuantizedWeight", "fit_grid", "n_levels", "round_to_nearest", "METHOD_OPTIONS",
           "QUANTIZERS", "apply_quantized", "layer_bits_plan", "method_option_names", "quantize_model", "recipe_label"]
