#!/usr/bin/env bash
# The TrackRec RL variant at the sized run's budget, from the frozen binary of 39b9dd1.
cd /work/wt-head
RECIPE=recipes/trackrec-ml100k-grpo.toml LLMRL=/work/runs/bin/llmrl-trackrec \
  /work/wt-head/eval/results/rec/trackrec/ml100k_v512/run.sh /work/runs/trackrec-ml100k-grpo/run \
  --set trackrec.baseline_no_cot=false
