#!/usr/bin/env bash
# One accelerator, under 10 minutes (issue 29's device check):
#   1. CIARD step img/s and MFU for ResNet-18 / ResNet-56 / WRN-34-10 students at batch 128 and
#      ResNet-18 / WRN-34-10 at batch 512, fp32 and bf16 + channels-last, each as the eager step
#      (a host read per output), the sync-free step and the step captured as a CUDA graph;
#   2. 20 captured steps against 20 eager ones (same weights and seed: losses and weights);
#   3. the aggregate img/s of 1, 2 and 4 small trials packed on the device;
#   4. the epoch path against its step (benchmarks/epoch_path.py: the paper preset on synthetic
#      CIFAR-10 files, bf16 + channels-last), eager and with compute.cuda_graph.
# (benchmarks/device_check.py, benchmarks/epoch_path.py). Add --compile by hand: on an H200 it
# made the step slower and compiling the WRN-34-10 step took over 3 minutes.
# On a machine without a GPU it runs the same on the CPU, smaller and without graphs:
#   benchmarks/device_check.sh            # GPU if there is one
#   DEVICE=cpu benchmarks/device_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
DEVICE=${DEVICE:-$($PY -c "import torch; print('cuda' if torch.cuda.is_available() else 'cpu')")}
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
if [ "$DEVICE" = cuda ]; then
    timeout 240 "$PY" benchmarks/device_check.py --device cuda --batch 128 --seconds 3 \
        --graph-check --pack
    timeout 120 "$PY" benchmarks/device_check.py --device cuda --batch 512 --seconds 3 \
        --students resnet18 wrn34_10 --pack
    timeout 120 "$PY" benchmarks/device_check.py --device cuda --batch 128 \
        --skip-architectures --pack 1 2 4 --pack-seconds 10
    for graph in false true; do
        timeout 120 "$PY" benchmarks/epoch_path.py --device cuda --cifar 2000 --epochs 3 \
            compute.amp=bf16 compute.channels_last=true compute.cuda_graph=$graph
    done
else  # 2-core CPUs: a small batch, short timings, fewer packed trials, digits' epoch path
    timeout 420 "$PY" benchmarks/device_check.py --device cpu --batch 4 --warmup 1 \
        --seconds 3 --pack 1 2 --pack-seconds 10 --threads 1
    timeout 300 "$PY" benchmarks/epoch_path.py --device cpu \
        --config search_spaces/base/digits.yaml
fi
