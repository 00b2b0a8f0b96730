#!/usr/bin/env bash
# The GPU benchmark in one call: spade's CUDA backend against PyTorch on the same GPU.
#
#   OUT=bench_out bench/run_gpu_bench.sh PATH/TO/spade_cuda_bench
#
# Steps, in order of importance, each under `timeout` (its cap, or what is left of BUDGET_S,
# default 500 s): spade forward + FastSPADE (1024 augmentations, twice), spade OBC on the peer's
# layers, PyTorch forward + device ceilings, spade forward with TF32, PyTorch FastSPADE
# (bench/spade_pytorch.py --device cuda, twice), the PyTorch OBC peer, and last spade OBC on all
# 53 layers with whatever time is left. Every step's stdout/stderr goes to $OUT/<step>.log (the
# PyTorch FastSPADE JSON line to $OUT/pytorch_fastspade.out); the results are $OUT/*.json. Ends
# with the side-by-side table (bench/gpu_pytorch.py summary, also in $OUT/summary.md).
# Environment: OUT (default ./bench_out), PYTHON (python3), BUDGET_S, AUGS (1024), OBC_AUGS (64),
# OBC_LAYERS (the peer's default layers; 1x1 convs, where both sides prune unstructured).
set -u
BIN=${1:?usage: OUT=dir bench/run_gpu_bench.sh PATH/TO/spade_cuda_bench}
BIN=$(realpath "$BIN")
HERE=$(cd "$(dirname "$0")" && pwd)
OUT=${OUT:-./bench_out}
PY=${PYTHON:-python3}
BUDGET=${BUDGET_S:-500}
AUGS=${AUGS:-1024}
OBC_AUGS=${OBC_AUGS:-64}
OBC_LAYERS=${OBC_LAYERS:-layer1.0.conv1,layer2.0.conv1,layer3.0.conv1,layer4.0.conv1,layer4.1.conv1}
mkdir -p "$OUT"
start=$SECONDS

# step NAME CAP_S CMD...: runs CMD with stdout+stderr in $OUT/NAME.log under a timeout of
# min(CAP_S, time left); skipped when under 20 s are left.
step() {
  local name=$1 cap=$2
  shift 2
  local left=$((BUDGET - (SECONDS - start)))
  local limit=$((cap < left ? cap : left))
  if ((limit < 20)); then
    echo "[skip] $name: ${left}s of the budget left"
    return
  fi
  echo "[run ] $name (limit ${limit}s)"
  local t0=$SECONDS
  timeout -k 10 "$limit" "$@" >"$OUT/$name.log" 2>&1
  local rc=$?
  echo "[done] $name: rc $rc after $((SECONDS - t0))s$([ $rc = 124 ] && echo ' (TIMED OUT)')"
  if [ $rc != 0 ]; then tail -n 15 "$OUT/$name.log" | sed 's/^/       /'; fi
}

if ldd "$BIN" | grep -q "not found"; then
  echo "warning: $BIN misses shared libraries (set LD_LIBRARY_PATH):"
  ldd "$BIN" | grep "not found"
fi
nvidia-smi -L | tee "$OUT/nvidia-smi.txt"
nvidia-smi --query-gpu=name,clocks.max.sm,clocks.max.mem,power.limit,temperature.gpu --format=csv >>"$OUT/nvidia-smi.txt" 2>&1

step spade 150 "$BIN" --cases forward,fastspade --augs "$AUGS" --out "$OUT/spade.json"
step spade_obc_subset 90 "$BIN" --cases obc --obc-augs "$OBC_AUGS" --obc-layers "$OBC_LAYERS" \
  --out "$OUT/spade_obc_subset.json"
step pytorch 90 "$PY" "$HERE/gpu_pytorch.py" forward --out "$OUT/pytorch.json"
step spade_tf32 60 "$BIN" --cases forward --tf32 --out "$OUT/spade_tf32.json"
step pytorch_fastspade 150 bash -c "'$PY' '$HERE/spade_pytorch.py' --device cuda --augs $AUGS --batch 256 \
  --repeat 2 --threads $(nproc) >'$OUT/pytorch_fastspade.out'"
step pytorch_obc 90 "$PY" "$HERE/gpu_pytorch.py" obc --augs "$OBC_AUGS" --layers "$OBC_LAYERS" \
  --out "$OUT/pytorch_obc.json"
step spade_obc_all 600 "$BIN" --cases obc --obc-augs "$OBC_AUGS" --out "$OUT/spade_obc_all.json"

echo "total $((SECONDS - start))s; logs and JSON in $OUT"
"$PY" "$HERE/gpu_pytorch.py" summary --dir "$OUT" | tee "$OUT/summary.md"
