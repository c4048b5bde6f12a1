#!/usr/bin/env bash
# Exact vs int8 decoding (bench_runtime --int8), alternated exact/int8/int8/exact per batch in
# one command: greedy, EOS masked, NEW new tokens, median of ITERS. One JSON line per run.
# Usage: [BATCHES="1 8 32"] [NEW=64] [ITERS=3] eval/bench/run_int8_bench.sh > out.jsonl
# (needs `cargo build --release --example bench_runtime`; eval/results/speed/int8_rollouts.md)
cd "$(dirname "$0")/../.."
M=models/SmolLM2-135M-Instruct/SmolLM2-135M-Instruct.Q4_1.gguf
for b in ${BATCHES:-1 8 32 64 128}; do
  for f in "" --int8 --int8 ""; do
    target/release/examples/bench_runtime --model $M --mode generate --batch $b --new-tokens ${NEW:-64} --iters ${ITERS:-3} $f
  done
done
