#!/usr/bin/env bash
# Memory of the scale options on SmolLM2-135M-Instruct (GGUF, f32 on CPU), peak RSS by
# /usr/bin/time -v. Run from the repository root after `cargo build --release --examples`
# and scripts/fetch_model.sh. Results: eval/results/scale/README.md.
#  1. One GRPO step (2 prompts x 4 samples x <= 64 tokens, every sample trained, KL beta 0.04 so
#     the reference model is live), full fine-tuning vs LoRA r = 16 on every projection.
#  2. One forward+backward of 8 x 512 tokens (bench_runtime --mode train), with and without
#     activation recomputation, full fine-tuning and LoRA.
set -euo pipefail
OUT=eval/results/scale
BIN=target/release/llmrl
MODEL=models/SmolLM2-135M-Instruct/SmolLM2-135M-Instruct.Q4_1.gguf
LORA='model.lora={ r = 16, alpha = 32, target_modules = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"] }'
COMMON=(--set train.max_steps=1 --set train.skip_zero_advantage=false --set algorithm.beta=0.04
        --set log.rollouts_every=0)
TMP=$(mktemp -d)
peak() { grep "Maximum resident" "$1" | awk '{print $NF/1024 " MiB"}'; }

/usr/bin/time -v $BIN train recipes/quickstart.toml "${COMMON[@]}" --out $TMP/full 2> $OUT/grpo_full.time
/usr/bin/time -v $BIN train recipes/quickstart.toml "${COMMON[@]}" --set "$LORA" --out $TMP/lora 2> $OUT/grpo_lora.time
cp $TMP/full/metrics.jsonl $OUT/grpo_full.metrics.jsonl
cp $TMP/lora/metrics.jsonl $OUT/grpo_lora.metrics.jsonl
du -sb $TMP/full/checkpoints/step_000001 $TMP/lora/checkpoints/step_000001 > $OUT/checkpoint_sizes.txt
echo "grpo full: $(peak $OUT/grpo_full.time); lora: $(peak $OUT/grpo_lora.time)"

# 8 rows of 513 token ids (seeded), for 8 x 512 positions.
python3 -c "
import random; random.seed(0)
for _ in range(8): print(' '.join(str(random.randrange(49152)) for _ in range(513)))
" > $TMP/ids.txt
for args in "" "--gradient-checkpointing" "--lora-r 16" "--lora-r 16 --gradient-checkpointing"; do
  name=$(echo "fwdbwd $args" | tr -s ' -' '_' | sed 's/_$//')
  /usr/bin/time -v target/release/examples/bench_runtime --model $MODEL --mode train \
    --ids $TMP/ids.txt --iters 1 $args > $OUT/$name.json 2> $OUT/$name.time
  echo "$name: $(peak $OUT/$name.time) $(python3 -c "import json;d=json.load(open('$OUT/$name.json'));print('phase peak', d['phase_peak_rss_mb'], 'MiB, loss', d['loss'], 's', d['median_s'])")"
done
rm -rf $TMP
# Rollout generation with an adapter: merged (what rollouts use) vs unmerged, batch 8 x 64 tokens.
for args in "" "--lora-r 16" "--lora-r 16 --unmerged"; do
  name=$(echo "generate $args" | tr -s ' -' '_' | sed 's/_$//')
  target/release/examples/bench_runtime --model $MODEL --mode generate --batch 8 --new-tokens 64 \
    --iters 3 $args > $OUT/$name.json
  echo "$name: $(python3 -c "import json;d=json.load(open('$OUT/$name.json'));print(d.get('tokens_per_s'), 'tok/s')")"
done
