#!/usr/bin/env bash
# RL variant at the same budget (started, killed at the deadline before its round 1: no numbers).
cd /work/wt/trackrec
exec nice -n 5 target/release/llmrl trackrec recipes/trackrec-tallrec-movie-grpo.toml \
  --set data.train=/work/shared/data/rec/tallrec/movie/valid.json \
  --set data.test=/work/shared/data/rec/tallrec/movie/test.json \
  --set trackrec.rounds=1 --set trackrec.train_prompts=16 --set trackrec.test_prompts=64 \
  --set trackrec.num_cots=4 --set generator.generation.max_new_tokens=48 \
  --set trackrec.bootstrap=1000 \
  --set validator.train.epochs=2.0 --set validator.optimizer.learning_rate=1e-4 \
  --set generator.optimizer.learning_rate=1e-5 --set generator.train.prompts_per_step=4 \
  \
  --set trackrec.baseline_no_cot=false --out runs/trackrec-movie-grpo-r1
