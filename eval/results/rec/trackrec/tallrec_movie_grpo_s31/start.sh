#!/usr/bin/env bash
# The GRPO variant of TrackRec on TALLRec's movie prompts at the S-DPO run's budget (sessions
# 30–31; README "Session 31"). It takes the stages that do not depend on G's optimizer
# (eval-zero-shot, v-nocot, eval-no-cot, g0-cots, v0, eval-r0) from the S-DPO run of
# ../tallrec_movie_s30 by hard links, so both runs' rounds are paired on the same V₀.
# Copy a build first, so a rebuild cannot change the run midway (both runs used 9e38171's):
#   cargo build --release && mkdir -p /work/runs/bin && cp target/release/llmrl /work/runs/bin/llmrl-trackrec
# Without the S-DPO run on this machine, start from scratch instead (its round 0 is the same):
#   llmrl trackrec recipes/trackrec-tallrec-movie-grpo.toml --set trackrec.baseline_no_cot=false --out "$OUT"
# The same command resumes a killed run at its stage and step.
set -euo pipefail
cd "$(dirname "$0")/../../../../.."
export LLMRL=${LLMRL:-/work/runs/bin/llmrl-trackrec}
FROM=${FROM:-/work/runs/trackrec-tallrec-movie/run}
OUT=${OUT:-/work/runs/trackrec-tallrec-movie-grpo/run}
if [ -f "$OUT/trackrec.resolved.toml" ]; then
  exec nice -n 5 "$LLMRL" trackrec --resume "$OUT"
fi
exec eval/results/rec/trackrec/reuse_stages.sh "$FROM" "$OUT" \
  "eval-zero-shot v-nocot eval-no-cot g0-cots v0 eval-r0" recipes/trackrec-tallrec-movie-grpo.toml
