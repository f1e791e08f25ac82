#!/usr/bin/env bash
# GPU check (at most ~5 minutes on one GPU): the smoke preset on CUDA, then a short CIFAR-shaped
# ResNet-18 training burst for one model, for several concurrent models, and for several models
# batched with torch.func (which of the two multi-model modes is faster decides how to fill a GPU).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
work=$(mktemp -d)
sed -e "s|^store:.*|store: $work/artifacts|" params/smoke.yaml > "$work/smoke.yaml"
echo "device: cuda" >> "$work/smoke.yaml"
echo "reports: $work/reports" >> "$work/smoke.yaml"
time "$PY" -m ptqlib run "$work/smoke.yaml" --no-progress
"$PY" benchmarks/bench_gpu.py --seconds 20 --concurrent 4
