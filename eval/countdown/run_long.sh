#!/usr/bin/env bash
# The longer Countdown side-by-side on SmolLM2-135M-Instruct, CPU: GRPO and ROVER (and any other
# recipe named in ALGOS) from the same SFT warm start with the same prompts, samples, steps, seed
# and learning rate; then pass@k up to k = N on the same held-out problems and `llmrl report`.
# Usage: eval/countdown/run_long.sh [RL_STEPS] [LR] [EVAL_PROBLEMS] [EVAL_N]
#        ALGOS="grpo rover rover-imentor" to choose the recipes (recipes/countdown-$ALGO.toml).
# Results: eval/results/countdown/long_s${RL_STEPS}/ (the SFT model's evaluation is k64_sft/).
set -euo pipefail
cd "$(dirname "$0")/../.."
STEPS=${1:-24}
LR=${2:-2e-5}
P=${3:-16}
N=${4:-64}
ALGOS=${ALGOS:-grpo rover}
BIN=target/release/llmrl
SFT=runs/countdown-sft/checkpoints/step_000030/model
OUT=eval/results/countdown/long_s$STEPS
mkdir -p "$OUT"
cargo build --release -q
[ -e "$SFT/config.json" ] || $BIN train recipes/countdown-sft.toml --out runs/countdown-sft
[ -e eval/results/countdown/k64_sft/summary.json ] || $BIN eval --model "$SFT" --recipe recipes/countdown-sft.toml \
  --n 64 --max-problems 16 --max-new-tokens 128 --batch 2 --out eval/results/countdown/k64_sft > /dev/null
runs=()
for algo in $ALGOS; do
  run=runs/long-s$STEPS-$algo
  runs+=("$run")
  if [ -e "$run/run.json" ] && [ ! -e "$run/checkpoints/step_$(printf %06d "$STEPS")" ]; then
    $BIN train --resume "$run"            # interrupted: continue exactly
  elif [ ! -e "$run/run.json" ]; then
    $BIN train recipes/countdown-$algo.toml --set train.max_steps="$STEPS" \
      --set optimizer.learning_rate="$LR" --set model.source="$PWD/$SFT" \
      --set checkpoint.every=6 --set checkpoint.keep_last=1 --out "$run"
  fi
  cp "$run/metrics.jsonl" "$OUT/metrics_$algo.jsonl"
done
for algo in $ALGOS; do
  [ -e "$OUT/eval_$algo/summary.json" ] || $BIN eval --model runs/long-s$STEPS-$algo --recipe recipes/countdown-sft.toml \
    --n "$N" --max-problems "$P" --max-new-tokens 128 --batch 2 --out "$OUT/eval_$algo" > /dev/null
done
$BIN report "${runs[@]}" --out "$OUT/curves"
