#!/usr/bin/env bash
# Starts a TrackRec run of recipes/trackrec-ml100k.toml on the team's MovieLens-100K files, or
# resumes it where a kill left it if OUT already holds one.
# Usage: run.sh OUT [--set key=value]...   (the runs of this folder, see ../README.md):
#   V on 64 prompts (the recipe before session 24):
#     run.sh /work/runs/trackrec-ml100k-r3/run --set trackrec.validator_prompts=0 \
#       --set validator.train.epochs=2 --set validator.optimizer.learning_rate=2e-5
#   the V diagnostic (512 prompts for G and V, stopped after eval-no-cot):
#     run.sh /work/runs/trackrec-vdiag/run --set trackrec.train_prompts=512
#   the sized run (the recipe as it is; start_v512.sh starts it from the diagnostic's stages):
#     run.sh /work/runs/trackrec-ml100k-v512/run
set -euo pipefail
cd "$(dirname "$0")/../../../../.."
OUT=$1
shift
if [ -f "$OUT/trackrec.resolved.toml" ]; then
  exec nice -n 5 target/release/llmrl trackrec --resume "$OUT"
fi
D=../shared/data/rec/movielens/ml-100k
exec nice -n 5 target/release/llmrl trackrec recipes/trackrec-ml100k.toml \
  --set data.inter="$(realpath $D/ml-100k.inter)" --set data.items="$(realpath $D/ml-100k.item)" \
  "$@" --out "$OUT"
