#!/usr/bin/env bash
# TrackRec S-DPO on MovieLens-100K-built prompts, the TALLRec run's sizes (16 train prompts x 4 CoTs x <= 48 tokens, 1 round), 128 test prompts.
cd /work/main
exec nice -n 5 target/release/llmrl trackrec recipes/trackrec-ml100k.toml \
  --set data.inter=/work/shared/data/rec/movielens/ml-100k/ml-100k.inter \
  --set data.items=/work/shared/data/rec/movielens/ml-100k/ml-100k.item \
  --set trackrec.rounds=1 --set trackrec.train_prompts=16 --set trackrec.test_prompts=128 \
  --set trackrec.num_cots=4 --set generator.generation.max_new_tokens=48 \
  --set trackrec.bootstrap=1000 \
  --set validator.train.epochs=2.0 --set validator.optimizer.learning_rate=1e-4 \
  --set generator.optimizer.learning_rate=1e-5 --set generator.train.prompts_per_step=4 \
  --set generator.train.micro_batch_size=4 \
  --out /work/runs/trackrec-ml100k-r1
