#!/usr/bin/env bash
# The device check for the CUDA build (issue 6), one short script for the GPU machine:
#   1. logit parity of the tiny fixtures, CUDA bf16 vs CPU f32 and vs transformers;
#   2. a few training steps of recipes/countdown-rover.toml on SmolLM2-135M-Instruct (bf16);
#   3. runtime side by side with PyTorch + transformers on the same GPU: generation tok/s at
#      batch 8 and 64, forward+backward of 8 x 512 tokens, peak memory.
# Build first, here (no GPU needed): scripts/build_cuda.sh; carry target/cuda/dist.
# Writes into ${OUT:-eval/results/gpu}.
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT="${OUT:-eval/results/gpu}"
# Binaries: target/cuda/dist/llmrl-cuda.tar.xz from scripts/build_cuda.sh (carried as is).
BIN=/tmp/llmrl-cuda/bin
mkdir -p /tmp/llmrl-cuda && tar -C /tmp/llmrl-cuda -xJf target/cuda/dist/llmrl-cuda.tar.xz
PY="${PY:-python3}"
mkdir -p "$OUT"
# cuBLAS/NVRTC/cuRAND/cudart of the machine's PyTorch (cu13 wheels).
NV="$($PY -c 'import nvidia, os; print(os.path.dirname(nvidia.__path__[0]))' 2>/dev/null || true)/nvidia/cu13/lib"
export LD_LIBRARY_PATH="$NV:${LD_LIBRARY_PATH:-}"
MODEL="${MODEL:-models/SmolLM2-135M-Instruct/SmolLM2-135M-Instruct.Q4_1.gguf}"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/gpu.txt"

echo "== 1. parity"
$BIN/gpu_parity cuda:0 | tee "$OUT/parity.jsonl"

echo "== 2. training steps (ROVER, bf16)"
rm -rf /tmp/gpu_rover
$BIN/llmrl train recipes/countdown-rover.toml --set model.source="../$MODEL" --set model.device=cuda:0 \
  --set train.max_steps=3 --out /tmp/gpu_rover 2>&1 | tail -3
cp /tmp/gpu_rover/metrics.jsonl "$OUT/rover_metrics.jsonl"

echo "== 3. runtime vs PyTorch"
# candle reports no peak GPU memory: sample the device's used memory during the llmrl runs.
nvidia-smi --query-gpu=timestamp,memory.used --format=csv -lms 200 > "$OUT/llmrl_gpu_memory.csv" &
SMI=$!
$PY eval/bench/bench_torch.py ids --model "$MODEL" --batch 8 --seq-len 512 --out /tmp/gpu_ids.txt 2>/dev/null || true
for b in 8 64; do
  $BIN/bench_runtime --model "$MODEL" --device cuda:0 --mode generate --batch $b | tee -a "$OUT/bench.jsonl"
done
$BIN/bench_runtime --model "$MODEL" --device cuda:0 --mode train --ids /tmp/gpu_ids.txt | tee -a "$OUT/bench.jsonl"
kill $SMI
for b in 8 64; do
  $PY eval/bench/bench_torch.py generate --model "$MODEL" --device cuda --dtype bfloat16 --batch $b | tee -a "$OUT/bench_torch.jsonl"
done
$PY eval/bench/bench_torch.py train --model "$MODEL" --device cuda --dtype bfloat16 --ids /tmp/gpu_ids.txt | tee -a "$OUT/bench_torch.jsonl"
