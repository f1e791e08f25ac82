"""The authors' grid-search candidates (`grid_search`) and learning-rate schedule (`lr_schedule`) on the
real photographs: the real-image study (params/cifar10-10k.yaml) with a few keys changed.

Usage: python benchmarks/protocol_keys_real.py [--store artifacts] [--out benchmarks/results/protocol_keys_real.txt]

Run it after `python -m ptqlib run params/cifar10-10k.yaml` into the same store: the ptqlib variants are then
read back, and only the authors' variants are computed (grid: 96 RTN/AdaRound quantizations and their queries;
schedule: the 17 models retrained with the cosine stepped once per epoch, shadows like the targets, then RTN).
Variants, on the 16-model pool by leave-one-out with full-precision shadows (the paper's threat model):
- grid_search fine (ptqlib) vs authors, RTN and AdaRound at 4, 2 and 1.58 bits on the same trained models
  (OBC is left out: exact OBC costs ~200 s per model here, and the preset runs it on one model only);
- lr_schedule per_step (ptqlib) vs per_epoch (authors), FP32 and RTN.
LiRA online (the real-image study's headline attack). Pooled TPR@1%FPR over 16 x 3,000 = 48,000
non-members with 95% intervals resampling models, and paired differences (authors - ptqlib) resampling the
same models in both.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from protocol_keys_digits import measure, write_report

from ptqlib.study import config, presets

PRESET = config.REPO_ROOT / "params" / "cifar10-10k.yaml"
ATTACK = "online"
COMMON = {"bits": [4, 2, 1.58], "last_layer_bits": [None], "attacks": [ATTACK], "threat_models": ["leave_one_out_fp"]}
VARIANTS = {
    "grid fine (ptqlib)": {"methods": ["rtn", "adaround"]},
    "grid authors": {"methods": ["rtn", "adaround"], "grid_search": "authors"},
    "lr per_step (ptqlib)": {"methods": ["rtn"]},
    "lr per_epoch (authors)": {"methods": ["rtn"], "lr_schedule": "per_epoch"},
}
PAIRS = [("grid fine (ptqlib)", "grid authors"), ("lr per_step (ptqlib)", "lr per_epoch (authors)")]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", default="artifacts")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "protocol_keys_real.txt"))
    args = parser.parse_args()
    base = {**presets.read_preset(PRESET), **COMMON}
    write_report(args.out, f"LiRA {ATTACK}, leave-one-out with full-precision shadows, the real-image study's 16-model "
                 "pool (CIFAR-10, 10k real images, JPEG; 16 x 3,000 non-members)",
                 *measure(base, VARIANTS, PAIRS, args.store, ATTACK, "leave_one_out_fp"), paired_over="models")
    return 0


if __name__ == "__main__":
    sys.exit(main())
