#!/usr/bin/env bash
# The TrackRec RL variant at the S-DPO run's budget (session 28's run; README "Session 28").
# First copy a build, so a rebuild cannot change the run midway (session 28 used 39b9dd1's):
#   cargo build --release && mkdir -p /work/runs/bin && cp target/release/llmrl /work/runs/bin/llmrl-trackrec
# The same command resumes a killed run at its stage and step.
cd "$(dirname "$0")/../../../../.."
RECIPE=recipes/trackrec-ml100k-grpo.toml LLMRL=${LLMRL:-/work/runs/bin/llmrl-trackrec} \
  exec eval/results/rec/trackrec/ml100k_v512/run.sh "${OUT:-/work/runs/trackrec-ml100k-grpo/run}" \
  --set trackrec.baseline_no_cot=false
