#!/usr/bin/env bash
# A GPU lent for minutes: warm-start a model from the shipped weights, train it on the torch
# ground-truth stream for MINUTES of wall time (CUDA: bf16 autocast, fused AdamW), evaluate it against
# the floors, and leave OUT_DIR/model.safetensors, OUT_DIR/metrics.json and OUT_DIR/eval.png.
# MODE=object (the default): the object model (recipe prior_object.json), measured by `eval` on VAL;
# MODE=dynamic: the dynamic model on streamed clips (recipe tiny_dynamic.json), measured by `eval-clip`
# on EVAL_COUNT held-out clips beside the per-frame floor.
# Needs only the code and its small files (python, torch, einops, safetensors, numpy, pillow, tqdm).
#
#   scripts/train_gpu.sh MINUTES OUT_DIR [more `python -m core train` options]
#   environment: MODE (object), PYTHON (python3), DEVICE (cuda), VAL (tests/data/unseen), EVAL_COUNT (64),
#   EVAL_STEPS (20)
set -euo pipefail
if [ $# -lt 2 ]; then
    echo "usage: $0 MINUTES OUT_DIR [train options]" >&2
    exit 2
fi
minutes=$1 out=$2 mode=${MODE:-object}
shift 2
if [ "$mode" != object ] && [ "$mode" != dynamic ]; then
    echo "MODE is object or dynamic, not $mode" >&2
    exit 2
fi
python=${PYTHON:-python3}
device=${DEVICE:-cuda}
val=${VAL:-tests/data/unseen}
cd "$(dirname "$0")/.."
mkdir -p "$out"
measure=(--steps "${EVAL_STEPS:-20}" --device "$device" --json "$out/metrics.json" --figure "$out/eval.png")
case $mode in
object)
    "$python" -m core train --recipe core/train/recipes/prior_object.json --stream-fraction 1 \
        --steps 1000000000 --minutes "$minutes" --val "$val" --out "$out/run" --device "$device" "$@"
    cp "$out/run/model.safetensors" "$out/model.safetensors"
    "$python" -m core eval --checkpoint "$out/model.safetensors" --data "$val" --count "${EVAL_COUNT:-64}" \
        "${measure[@]}" ;;
dynamic)
    "$python" -m core train --recipe core/train/recipes/tiny_dynamic.json --stream-fraction 1 \
        --steps 1000000000 --minutes "$minutes" --out "$out/run" --device "$device" "$@"
    cp "$out/run/model.safetensors" "$out/model.safetensors"
    "$python" -m core eval-clip --checkpoint "$out/model.safetensors" --clips "${EVAL_COUNT:-64}" \
        "${measure[@]}" ;;
esac
