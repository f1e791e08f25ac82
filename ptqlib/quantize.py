"""Temporary alias of `ptqlib.ptq` for modules not yet moved to it (to be removed)."""
from .ptq import (METHOD_NAMES, METHODS, Grid, QuantizedWeight, apply_quantized, fit_grid,  # noqa: F401
                  layer_bits_plan, method_option_names, n_levels, quantize_model, recipe_label, round_to_nearest)
