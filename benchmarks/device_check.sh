#!/usr/bin/env bash
# One call on a lent GPU (the device tool), after benchmarks/device_prepare.sh here:
#   run(command="bash benchmarks/device_check.sh", carry=[".whl", ".device"], timeout_s=600)
# 1. the GPU's name and jax's devices; 2. a short test subset on the GPU; 3. CIFAR-10 to
# 94 % with configs/cifar10_fast.py (bfloat16, seeds from $SEEDS, target from $TARGET);
# 4. the harness --quick. On the JPEG copy of CIFAR-10 even airbench94 stops near 91 %
# (docs/benchmarks.md), so 94 % may not be reached: the run still records the final
# accuracy and the time; TARGET=0.90 times a reachable mark.
# Everything lands in $OUT (logs, JSON); the last lines printed are the summary.
set -uo pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/jaxcnn-device}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH="$PWD:/tmp/site"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.csv"
python3 -c "import jax, flax, optax; print('jax', jax.__version__, jax.devices())" \
  | tee "$OUT/jax.txt" || exit 1
tar xzf .device/cifar10_jpg.tar.gz -C /tmp || exit 1

# Shapes, layers, the train step and fit on the GPU (no shared data there: those skip).
timeout 150 python3 -m pytest -q -x -p no:cacheprovider -o addopts="" \
  tests/test_shapes_flax.py tests/test_layers.py tests/test_train_units.py \
  tests/test_train_whitening_tta.py 2>&1 | tee "$OUT/pytest.log" | tail -3

timeout 300 python3 benchmarks/time_to_accuracy.py --config configs/cifar10_fast.py \
  --dataset folder:/tmp/cifar10_jpg --data-dir /tmp/jaxcnn-data --target "${TARGET:-0.94}" \
  --seeds "${SEEDS:-0,1,2}" --json \
  2>"$OUT/cifar94.err" | tee "$OUT/cifar94.jsonl"

timeout 120 python3 scripts/benchmark.py --quick --no-docs --json-out "$OUT/bench.json" \
  2>&1 | tee "$OUT/bench.log" | tail -25
python3 - "$OUT/cifar94.jsonl" <<'EOF'
import json, sys
sys.path.insert(0, ".")
from benchmarks.time_to_accuracy import format_result
for line in open(sys.argv[1]):
    if line.startswith("{"):
        print(format_result(json.loads(line)))
EOF
