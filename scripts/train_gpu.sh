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
minutes=$1 out=$2
shift 2
python=${PYTHON:-python3}
device=${DEVICE:-cuda}
val=${VAL:-tests/data/unseen}
count=${EVAL_COUNT:-64}
case ${MODE:-object} in  # the recipe, what training adds to it, and how the result is measured
object) recipe=prior_object.json train=(--val "$val") measure=(eval --data "$val" --count "$count") ;;
dynamic) recipe=tiny_dynamic.json train=() measure=(eval-clip --clips "$count") ;;
*)
    echo "MODE is object or dynamic, not $MODE" >&2
    exit 2 ;;
esac
cd "$(dirname "$0")/.."
mkdir -p "$out"
"$python" -m core train --recipe "core/train/recipes/$recipe" --stream-fraction 1 --steps 1000000000 \
    --minutes "$minutes" "${train[@]}" --out "$out/run" --device "$device" "$@"
cp "$out/run/model.safetensors" "$out/model.safetensors"
"$python" -m core "${measure[@]}" --checkpoint "$out/model.safetensors" --steps "${EVAL_STEPS:-20}" \
    --device "$device" --json "$out/metrics.json" --figure "$out/eval.png"
