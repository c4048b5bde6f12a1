#!/usr/bin/env bash
# Starts a TrackRec run of recipes/trackrec-ml100k.toml on the team's MovieLens-100K files, or
# resumes it where a kill left it if OUT already holds one.
# Usage: [RECIPE=recipes/...toml] [LLMRL=path/to/llmrl] run.sh OUT [--set key=value]...
# (RECIPE defaults to recipes/trackrec-ml100k.toml, LLMRL to target/release/llmrl: a long run
# should use a copy, so a rebuild cannot change it midway). The runs of this folder (../README.md):
#   V on 64 prompts (the recipe before session 24):
#     run.sh /work/runs/trackrec-ml100k-r3/run --set trackrec.validator_prompts=0 \
#       --set validator.train.epochs=2 --set validator.optimizer.learning_rate=2e-5
#   the V diagnostic (512 prompts for G and V, stopped after eval-no-cot):
#     run.sh /work/runs/trackrec-vdiag/run --set trackrec.train_prompts=512
#   the sized run (the recipe as it is; start_v512.sh starts it from the diagnostic's stages):
#     run.sh /work/runs/trackrec-ml100k-v512/run
#   the RL variant (session 28, fresh machine; eval-no-cot is the S-DPO run's, skipped here):
#     RECIPE=recipes/trackrec-ml100k-grpo.toml run.sh /work/runs/trackrec-ml100k-grpo/run \
#       --set trackrec.baseline_no_cot=false
set -euo pipefail
cd "$(dirname "$0")/../../../../.."
RECIPE=${RECIPE:-recipes/trackrec-ml100k.toml}
LLMRL=${LLMRL:-target/release/llmrl}
OUT=$1
shift
if [ -f "$OUT/trackrec.resolved.toml" ]; then
  exec nice -n 5 "$LLMRL" trackrec --resume "$OUT"
fi
D=../shared/data/rec/movielens/ml-100k
exec nice -n 5 "$LLMRL" trackrec "$RECIPE" \
  --set data.inter="$(realpath $D/ml-100k.inter)" --set data.items="$(realpath $D/ml-100k.item)" \
  "$@" --out "$OUT"
