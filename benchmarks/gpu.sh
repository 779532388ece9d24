#!/usr/bin/env bash
# One GPU, one prepared run (< 10 minutes): the d512 6+6 model (Transformer-base) trained for
# 200 timed steps in float32, mixed_float16 and mixed_bfloat16, with tokens/s and MFU against
# the GPU's measured matmul peak (float32, float16, bfloat16). Toy translation data is generated
# by the engine's own toy source; nothing is read from disk.
#
#   bash benchmarks/gpu.sh [--smoke] [--steps N] [--output FILE.json]
#
# PYTHON (default .venv/bin/python, else python3) must have TensorFlow with CUDA; --smoke runs
# tiny sizes on any device (CPU included) to check the script. Results: benchmarks/results/gpu.json
# and a Markdown table on stdout.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}"
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}" KERAS_BACKEND=tensorflow PYTHONWARNINGS=ignore
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if [[ " $* " != *" --smoke "* ]]; then
  "$PYTHON" -c "import tensorflow as tf, sys; g = tf.config.list_physical_devices('GPU'); \
print('GPUs:', g, file=sys.stderr); sys.exit(0 if g else 'no GPU visible to TensorFlow: use --smoke to check the script on CPU')"
  nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv >&2 || true
fi
exec timeout 590 "$PYTHON" benchmarks/gpu_bench.py "$@"
