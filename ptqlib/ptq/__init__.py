"""The calibration-based PTQ methods, each a strategy on the quantizer core of `ptqlib.quantize`.

- `adaround`: AdaRound, layer by layer (learned up/down rounding, annealed regulariser).
- `brecq`: the same rounding optimised per reconstruction unit, BatchNorm folded.
- `obc`: exact OBQ (greedy, optimal compensation) and its fast relative GPTQ.
- `bn`: BatchNorm folding and the optional re-estimation of BatchNorm statistics.

Importing `ptqlib.quantize` imports these modules, which registers "adaround", "brecq",
"obc" and "gptq" next to "rtn".
"""

from .. import quantize  # noqa: E402,F401  (the core first: it imports and registers the methods)
