#!/usr/bin/env bash
# TrackRec on MovieLens-100K-built prompts at the recipe's own sizes (issue 16): 64 train prompts x 4 CoTs
# x <= 64 tokens, 3 rounds, 200 test prompts; G's S-DPO lr 1e-5 (TrackRec's 1e-6 leaves a 135M G where
# it started within 8 steps). Resumes where a kill left it.
cd /work/main
OUT=/work/runs/trackrec-ml100k-r3/run
if [ -f "$OUT/trackrec.resolved.toml" ]; then
  exec nice -n 5 target/release/llmrl trackrec --resume "$OUT"
fi
exec nice -n 5 target/release/llmrl trackrec recipes/trackrec-ml100k.toml \
  --set data.inter=/work/shared/data/rec/movielens/ml-100k/ml-100k.inter \
  --set data.items=/work/shared/data/rec/movielens/ml-100k/ml-100k.item \
  --set generator.optimizer.learning_rate=1e-5 \
  --out "$OUT"
