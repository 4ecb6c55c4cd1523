#!/usr/bin/env bash
# A GPU lent for minutes: warm-start the object model from the shipped weights, train it on the torch
# ground-truth stream for MINUTES of wall time (CUDA: bf16 autocast, fused AdamW), evaluate it against
# the floors, and leave OUT_DIR/model.safetensors, OUT_DIR/metrics.json and OUT_DIR/eval.png.
# Needs only the code and its small files (python, torch, einops, safetensors, numpy, pillow, tqdm).
#
#   scripts/train_gpu.sh MINUTES OUT_DIR [more `python -m core train` options]
#   environment: PYTHON (python3), DEVICE (cuda), VAL (tests/data/unseen), EVAL_COUNT (64), EVAL_STEPS (20)
set -euo pipefail
if [ $# -lt 2 ]; then
    echo "usage: $0 MINUTES OUT_DIR [train options]" >&2
    exit 2
fi
minutes=$1 out=$2
shift 2
python=${PYTHON:-python3}
device=${DEVICE:-cuda}
val=${VAL:-tests/data/unseen}
cd "$(dirname "$0")/.."
mkdir -p "$out"
"$python" -m core train --recipe core/train/recipes/prior_object.json --stream-fraction 1 --steps 1000000000 \
    --minutes "$minutes" --val "$val" --out "$out/run" --device "$device" "$@"
cp "$out/run/model.safetensors" "$out/model.safetensors"
"$python" -m core eval --checkpoint "$out/model.safetensors" --data "$val" --count "${EVAL_COUNT:-64}" \
    --steps "${EVAL_STEPS:-20}" --device "$device" --json "$out/metrics.json" --figure "$out/eval.png"
