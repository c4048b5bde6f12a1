#!/usr/bin/env bash
# Diagnostic for issue 16: can SmolLM2 as V learn the ML-100K preference task from 512 prompts (no CoT)?
# (the 64-prompt V of trackrec-ml100k-r3 scored AUC 0.507; the history's mean rating alone gives 0.674)
cd /work/main
OUT=/work/runs/trackrec-vdiag/run
if [ -f "$OUT/trackrec.resolved.toml" ]; then
  exec nice -n 5 target/release/llmrl trackrec --resume "$OUT"
fi
exec nice -n 5 target/release/llmrl trackrec recipes/trackrec-ml100k.toml \
  --set data.inter=/work/shared/data/rec/movielens/ml-100k/ml-100k.inter \
  --set data.items=/work/shared/data/rec/movielens/ml-100k/ml-100k.item \
  --set trackrec.train_prompts=512 \
  --set validator.optimizer.learning_rate=5e-5 \
  --set validator.train.epochs=1 \
  --out "$OUT"
