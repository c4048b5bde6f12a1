#!/usr/bin/env bash
# RL from the SFT checkpoint chosen on valid (step_380, the end of the epoch): GRPO and ROVER, 60 steps each.
set -euo pipefail
cd /work/main
R=/work/runs/ml100k; D=/work/shared/data/rec/movielens/ml-100k
START=$R/sft/checkpoints/step_000380/model
for algo in grpo rover; do
  [ -d $R/$algo ] && continue
  nice -n 5 target/release/llmrl train recipes/ml100k-sid-$algo.toml --out $R/$algo \
    --set model.source=$START --set data.inter=$D/ml-100k.inter --set data.index=$R/sid/index.json \
    --set generation.constraint.sid_index=$R/sid/index.json --set train.max_steps=60 \
    --set checkpoint.every=30 > $R/$algo.log 2>&1 &
done
wait
