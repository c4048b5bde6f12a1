#!/usr/bin/env bash
# Test evaluation of the LLM variant (SmolLM2 + SID tokens) beside popularity, SASRec and the 4-epoch SID decoder,
# 50 constrained beams (beam 16 and factorized scoring off by default: ~3x the time for a 135M model here),
# MiniOneRec prompt, no chat template; paired bootstrap on the same users.
cd /work/main
D=/work/shared/data/rec/movielens/ml-100k; R=/work/runs/ml100k-4ep
CK=${CK:-$(ls -d /work/runs/llm-sid/sft/checkpoints/step_* | sort | tail -1)}
exec nice -n 5 target/release/llmrl rec eval --model "$CK/model" --index $R/sid/index.json \
  --inter $D/ml-100k.inter --split loo --part test --template minionerec_sid \
  --beams 50 ${EXTRA:---no-factorized} --max-users "${USERS:-0}" \
  --against popularity=$R/baselines/popularity.rows.jsonl --against sasrec=$R/baselines/sasrec.rows.jsonl \
  --against sid_decoder_sft4ep=$R/test/sft/beam50.rows.jsonl \
  --out /work/runs/llm-sid/test${USERS:+_$USERS}
