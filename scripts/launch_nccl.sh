#!/usr/bin/env bash
# Data parallel over NCCL on one machine: one llmrl process per GPU, rank r on cuda:r, with the
# environment torchrun would give it (RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT; rank
# 0 hands the NCCL id to the others over TCP at MASTER_ADDR:MASTER_PORT). Needs a build with the
# `nccl` feature (FEATURES=nccl scripts/build_cuda.sh) and libnccl.so.2 on the GPU machine's
# library path (PyTorch's nvidia/nccl/lib). prompts_per_step must be a multiple of NGPUS; only
# rank 0 writes the run directory, so --out is required.
# Usage: scripts/launch_nccl.sh NGPUS target/cuda/release/llmrl train RECIPE --out DIR [--set k=v]...
# Several machines: run the same command on each with RANK/LOCAL_RANK set per process, WORLD_SIZE
# the total, MASTER_ADDR the first machine's address (this script covers one machine).
set -euo pipefail
n=${1:?usage: scripts/launch_nccl.sh NGPUS LLMRL train RECIPE --out DIR [--set k=v]...}
shift
export WORLD_SIZE=$n MASTER_ADDR=${MASTER_ADDR:-127.0.0.1} MASTER_PORT=${MASTER_PORT:-29500}
pids=()
for r in $(seq 0 $((n - 1))); do
  RANK=$r LOCAL_RANK=$r "$@" --device "cuda:$r" &
  pids+=($!)
done
status=0
for p in "${pids[@]}"; do
  wait "$p" || status=1
done
exit $status
