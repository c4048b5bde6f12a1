#!/usr/bin/env bash
# The Countdown experiment on SmolLM2-135M-Instruct, CPU: SFT warm start, then GRPO and ROVER
# from the same checkpoint with the same prompts, samples, steps and seed; held-out evaluation of
# zero-shot, SFT, GRPO and ROVER; curves with `llmrl report`. Results: eval/results/countdown/.
# Usage: eval/countdown/run_all.sh [RL_STEPS] [EVAL_PROBLEMS] [EVAL_N]
set -euo pipefail
cd "$(dirname "$0")/../.."
RL_STEPS=${1:-8}
P=${2:-32}
N=${3:-8}
BIN=target/release/llmrl
OUT=eval/results/countdown
GGUF=$(scripts/fetch_model.sh)
cargo build --release
mkdir -p "$OUT"
ev() { # name model
  [ -e "$OUT/eval_$1/summary.json" ] || $BIN eval --model "$2" --recipe recipes/countdown-sft.toml \
    --n "$N" --max-problems "$P" --max-new-tokens 128 --batch 4 --out "$OUT/eval_$1" > /dev/null
}
[ -e runs/countdown-sft/checkpoints/step_000030 ] || $BIN train recipes/countdown-sft.toml --out runs/countdown-sft
SFT=runs/countdown-sft/checkpoints/step_000030/model
for algo in grpo rover; do
  [ -e runs/countdown-$algo/checkpoints ] && [ -n "$(ls runs/countdown-$algo/checkpoints)" ] || \
    $BIN train recipes/countdown-$algo.toml --set train.max_steps="$RL_STEPS" --set model.source="../$SFT" --out runs/countdown-$algo
done
ev sft "$SFT"
ev grpo runs/countdown-grpo
ev rover runs/countdown-rover
ev zero_shot "$GGUF"
$BIN report runs/countdown-grpo runs/countdown-rover --out "$OUT/curves" || true
$BIN report runs/countdown-sft --out "$OUT/curves_sft" || true
for r in sft grpo rover; do cp runs/countdown-$r/metrics.jsonl "$OUT/metrics_$r.jsonl"; done
