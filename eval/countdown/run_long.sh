#!/usr/bin/env bash
# The longer Countdown side-by-side on SmolLM2-135M-Instruct, CPU: RL runs from the same SFT warm
# start with the same prompts, samples, steps, seed and learning rate; then pass@k up to k = N on
# the same held-out problems and `llmrl report`.
# Usage: eval/countdown/run_long.sh [RL_STEPS] [LR] [EVAL_PROBLEMS] [EVAL_N]
#   RUNS="NAME:RECIPE[:KEY=VALUE,...] ..." chooses the runs (recipes/countdown-$RECIPE.toml plus
#   overrides); the default is GRPO as shipped (1 optimizer step per rollout batch), GRPO with 4
#   mini-batches (the optimizer steps ROVER takes), and ROVER. Runs are trained in order, then
#   evaluated in order; an interrupted run resumes exactly.
# Results: eval/results/countdown/long_s${RL_STEPS}/ (the SFT model's evaluation is k64_sft/, on
# 16 problems; the table compares every model on the first EVAL_PROBLEMS of them).
set -euo pipefail
cd "$(dirname "$0")/../.."
STEPS=${1:-24}
LR=${2:-2e-5}
P=${3:-12}
N=${4:-64}
RUNS=${RUNS:-grpo:grpo grpo-mb4:grpo:train.num_minibatches=4 rover:rover}
BIN=target/release/llmrl
SFT=runs/countdown-sft/checkpoints/step_000030/model
OUT=eval/results/countdown/long_s$STEPS
mkdir -p "$OUT"
cargo build --release -q
[ -e "$SFT/config.json" ] || $BIN train recipes/countdown-sft.toml --out runs/countdown-sft
[ -e eval/results/countdown/k64_sft/summary.json ] || $BIN eval --model "$SFT" --recipe recipes/countdown-sft.toml \
  --n 64 --max-problems 16 --max-new-tokens 128 --batch 2 --out eval/results/countdown/k64_sft > /dev/null
names=()
for spec in $RUNS; do
  IFS=: read -r name recipe sets <<< "$spec"
  names+=("$name")
  run=runs/long-s$STEPS-$name
  extra=()
  for kv in ${sets//,/ }; do extra+=(--set "$kv"); done
  if [ -e "$run/run.json" ] && [ ! -e "$run/checkpoints/step_$(printf %06d "$STEPS")" ]; then
    $BIN train --resume "$run"            # interrupted: continue exactly
  elif [ ! -e "$run/run.json" ]; then
    $BIN train recipes/countdown-$recipe.toml --set train.max_steps="$STEPS" \
      --set optimizer.learning_rate="$LR" --set model.source="$PWD/$SFT" \
      --set checkpoint.every=6 --set checkpoint.keep_last=1 ${extra[@]+"${extra[@]}"} --out "$run"
  fi
  cp "$run/metrics.jsonl" "$OUT/metrics_$name.jsonl"
done
for name in "${names[@]}"; do
  [ -e "$OUT/eval_$name/summary.json" ] || $BIN eval --model runs/long-s$STEPS-$name --recipe recipes/countdown-sft.toml \
    --n "$N" --max-problems "$P" --max-new-tokens 128 --batch 2 --out "$OUT/eval_$name" > /dev/null
done
$BIN report "${names[@]/#/runs/long-s$STEPS-}" --out "$OUT/curves"
args=(SFT=eval/results/countdown/k64_sft)
for name in "${names[@]}"; do args+=("$name=$OUT/eval_$name:$OUT/metrics_$name.jsonl"); done
python3 eval/countdown/summarize.py "$P" "${args[@]}" > "$OUT/table.md"
cat "$OUT/table.md"
