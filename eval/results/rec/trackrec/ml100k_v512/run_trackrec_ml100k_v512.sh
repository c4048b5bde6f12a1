#!/usr/bin/env bash
# Issue 16, the sized TrackRec run on MovieLens-100K-built prompts with the recipe's own sizes:
# G on 64 prompts x 4 CoTs x <= 64 tokens, V on 512 prompts (G's among them), 3 rounds, 188 test
# prompts. Resumes where a kill left it.
cd /work/main
OUT=/work/runs/trackrec-ml100k-v512/run
if [ -f "$OUT/trackrec.resolved.toml" ]; then
  exec nice -n 5 target/release/llmrl trackrec --resume "$OUT"
fi
exec nice -n 5 target/release/llmrl trackrec recipes/trackrec-ml100k.toml \
  --set data.inter=/work/shared/data/rec/movielens/ml-100k/ml-100k.inter \
  --set data.items=/work/shared/data/rec/movielens/ml-100k/ml-100k.item \
  --out "$OUT"
