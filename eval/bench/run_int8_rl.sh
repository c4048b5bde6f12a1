#!/usr/bin/env bash
# GRPO on Countdown from the quickstart SFT warm start (recipes/quickstart.toml, 4 steps of
# 4 prompts x 8 samples), rollouts from exact vs int8 weights (token-truncated correction, cap 2),
# same seed; then both evaluated on 64 held-out problems x 4 samples. The SFT run is shared.
# Usage: [LLMRL=binary] [OUT=dir] eval/bench/run_int8_rl.sh   (eval/results/speed/int8_rollouts.md)
set -e
cd "$(dirname "$0")/../.."
L=${LLMRL:-target/release/llmrl}
D=${OUT:-runs/int8rl}
mkdir -p $D
[ -d $D/sft ] || nice -n 5 $L train recipes/quickstart-sft.toml --out $D/sft
warm=$(ls -d $D/sft/checkpoints/step_* | tail -n 1)/model
for p in exact int8; do
  [ -f $D/rl-$p/checkpoints/step_000004/manifest.json ] || nice -n 5 $L train recipes/quickstart.toml --set "model.source=$warm" \
    --set train.max_steps=4 --set "generation.rollout_precision=\"$p\"" --out $D/rl-$p
done
for p in exact int8; do
  [ -f $D/eval-$p/summary.json ] || nice -n 5 $L eval --model $D/rl-$p --recipe recipes/quickstart-sft.toml --n 4 --max-problems 64 --batch 8 --out $D/eval-$p > /dev/null
done
echo done
