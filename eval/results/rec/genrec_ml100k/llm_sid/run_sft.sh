#!/usr/bin/env bash
# LLM variant (SmolLM2-135M-Instruct + 96 SID tokens), next-item SFT on 5 % of an epoch of all users' train positions.
cd /work/main
if [ -d /work/runs/llm-sid/sft ]; then exec nice -n 5 target/release/llmrl train --resume /work/runs/llm-sid/sft; fi
exec nice -n 5 target/release/llmrl train recipes/ml100k-llm-sid-sft.toml --out /work/runs/llm-sid/sft \
  --set data.inter=/work/shared/data/rec/movielens/ml-100k/ml-100k.inter --set eval_data.inter=/work/shared/data/rec/movielens/ml-100k/ml-100k.inter \
  --set data.index=/work/runs/ml100k-4ep/sid/index.json --set eval_data.index=/work/runs/ml100k-4ep/sid/index.json \
  --set model.add_tokens.file=/work/runs/ml100k/sid/tokens.json \
  --set data.max_users=0 --set train.epochs=0.05 --set checkpoint.every=100
