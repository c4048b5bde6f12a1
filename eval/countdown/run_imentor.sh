#!/usr/bin/env bash
# GRPO + i-MENTOR on Countdown from the same SFT warm start, steps, samples and seed as
# eval/countdown/run_all.sh's GRPO run; then the same held-out evaluation.
# Usage: eval/countdown/run_imentor.sh [RL_STEPS] [EVAL_PROBLEMS] [EVAL_N]
set -euo pipefail
cd "$(dirname "$0")/../.."
RL_STEPS=${1:-5}
P=${2:-16}
N=${3:-8}
BIN=target/release/llmrl
OUT=eval/results/countdown
SFT=runs/countdown-sft/checkpoints/step_000030/model
[ -n "$(ls runs/countdown-grpo-imentor/checkpoints 2>/dev/null)" ] || \
  $BIN train recipes/countdown-grpo-imentor.toml --set train.max_steps="$RL_STEPS" --set model.source="../$SFT" --out runs/countdown-grpo-imentor
[ -e "$OUT/eval_grpo_imentor/summary.json" ] || $BIN eval --model runs/countdown-grpo-imentor --recipe recipes/countdown-sft.toml \
  --n "$N" --max-problems "$P" --max-new-tokens 128 --batch 4 --out "$OUT/eval_grpo_imentor" > /dev/null
cp runs/countdown-grpo-imentor/metrics.jsonl "$OUT/metrics_grpo_imentor.jsonl"
$BIN report runs/countdown-grpo runs/countdown-grpo-imentor --out "$OUT/curves_imentor"
