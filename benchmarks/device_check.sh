#!/usr/bin/env bash
# One accelerator, under 8 minutes: CIARD step img/s and MFU for ResNet-18 / ResNet-56 /
# WRN-34-10 students at batch 128 in fp32 and bf16 + channels-last, ResNet-18 and WRN-34-10 at
# batch 512, then the aggregate img/s of 1, 2 and 4 small trials packed on the device
# (benchmarks/device_check.py). Add --compile by hand: on an H200 it made the step slower and
# compiling the WRN-34-10 step took over 3 minutes (docs/gpus-and-clusters.md).
# On a machine without a GPU it runs the same on the CPU, smaller:
#   benchmarks/device_check.sh            # GPU if there is one
#   DEVICE=cpu benchmarks/device_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
DEVICE=${DEVICE:-$($PY -c "import torch; print('cuda' if torch.cuda.is_available() else 'cpu')")}
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
if [ "$DEVICE" = cuda ]; then
    timeout 150 "$PY" benchmarks/device_check.py --device cuda --batch 128 --seconds 5 --pack
    timeout 100 "$PY" benchmarks/device_check.py --device cuda --batch 512 --seconds 4 \
        --students resnet18 wrn34_10 --pack
    timeout 120 "$PY" benchmarks/device_check.py --device cuda --batch 128 \
        --skip-architectures --pack 1 2 4 --pack-seconds 10
else  # 2-core CPUs: a small batch, short timings, fewer packed trials
    timeout 420 "$PY" benchmarks/device_check.py --device cpu --batch 4 --warmup 1 \
        --seconds 3 --pack 1 2 --pack-seconds 10 --threads 1
fi
