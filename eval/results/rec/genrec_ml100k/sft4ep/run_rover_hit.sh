#!/usr/bin/env bash
# ROVER control from the 4-epoch SFT on the hit reward (issue 13), same budget as the GRPO run.
cd /work/main
SFT_SET="train.epochs=4" RL=rover RL_SET="verifier.reward=hit" SID_INDEX=/work/runs/ml100k/sid/index.json \
  exec eval/rec/run_ml100k.sh /work/shared/data/rec/movielens/ml-100k /work/runs/ml100k-4ep
