#!/usr/bin/env bash
# MovieLens-100K generative recommendation end to end, leave-one-out, history 10:
#   MiniLM item embeddings -> Semantic IDs (balanced RQ-KMeans 3 x 32, collisions reassigned:
#   a bijection, 3 tokens per item) -> a from-scratch SID decoder -> next-item SFT -> checkpoint
#   chosen on VALID -> GRPO (16 constrained beams, rank reward) and ROVER (16 constrained
#   samples, prefix credit) from it at the same budget -> each RL run's checkpoint chosen on
#   VALID -> test evaluation of all three beside popularity and SASRec, paired bootstrap.
#
#   eval/rec/run_ml100k.sh [ML100K_DIR] [OUT_DIR]
#
# ML100K_DIR holds ml-100k.inter / ml-100k.item (RecBole atomic files; default
# ../shared/data/rec/movielens/ml-100k, read in place). Everything lands in OUT_DIR (default
# runs/ml100k-genrec); every stage is skipped when its output exists, and a killed training
# stage continues with `llmrl train --resume`.
# Environment: LLMRL (binary, default target/release/llmrl), SID_INDEX (use an existing index
# instead of building one), SFT_SET / RL_SET (extra --set overrides, e.g. "train.epochs=1"),
# EVAL_USERS (valid users for checkpoint selection, default all), RL (which RL stages, default
# "grpo rover").
set -euo pipefail
cd "$(dirname "$0")/../.."
DATA=${1:-../shared/data/rec/movielens/ml-100k}
OUT=${2:-runs/ml100k-genrec}
LLMRL=${LLMRL:-target/release/llmrl}
INTER=$(realpath "$DATA/ml-100k.inter")
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
IDX=$OUT/sid/index.json
DATA_SET=(--set data.inter="$INTER" --set data.index="$IDX")

# 1. SID index (MiniOneRec format) from MiniLM vectors of the item text.
if [ -n "${SID_INDEX:-}" ]; then
  mkdir -p "$OUT/sid" && cp "$SID_INDEX" "$IDX"
elif [ ! -f "$IDX" ]; then
  [ -f models/all-MiniLM-L6-v2/model.safetensors ] || scripts/fetch_minilm.sh
  "$LLMRL" rec embed --items "$DATA/ml-100k.item" --model models/all-MiniLM-L6-v2 \
    --out "$OUT/items.safetensors"
  "$LLMRL" sid build --embeddings "$OUT/items.safetensors" --quantizer rq-kmeans-balanced \
    --levels 3 --codebook 32 --collisions reassign --seed 0 --out "$OUT/sid"
fi

# 2. A fresh from-scratch decoder over the SID tokens (2 x 128: ~10 min per SFT epoch on an
#    idle 2-core CPU).
[ -d "$OUT/init" ] || "$LLMRL" rec init-model --index "$IDX" \
  --layers 2 --hidden 128 --heads 4 --intermediate 512 --seed 0 --out "$OUT/init"

# Train a stage, or finish it when a kill left it halfway.
train() { # NAME RECIPE ARGS...
  local name=$1 recipe=$2; shift 2
  if [ -f "$OUT/$name/done" ]; then return; fi
  if [ -d "$OUT/$name" ]; then
    nice -n 5 "$LLMRL" train --resume "$OUT/$name"
  else
    nice -n 5 "$LLMRL" train "$recipe" --out "$OUT/$name" "$@"
  fi
  touch "$OUT/$name/done"
}

# The checkpoint of run $1 with the best VALID NDCG@10 (50 constrained beams); prints its path.
best_on_valid() {
  local run=$1 best= best_ndcg=-1 ck v n
  for ck in "$OUT/$run"/checkpoints/step_* ${2:-}; do
    v="$OUT/valid/$run/$(basename "$ck")"
    [ -f "$v/metrics.json" ] || "$LLMRL" rec eval --model "$ck/model" --index "$IDX" \
      --inter "$INTER" --split loo --part valid --beams 50 --no-factorized \
      --max-users "${EVAL_USERS:-0}" --out "$v" >&2
    n=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['models']['beam50']['test']['at'][3]['ndcg'])" "$v/metrics.json")
    echo "  $run $(basename "$ck"): valid NDCG@10 $n" >&2
    if python3 -c "import sys; sys.exit(0 if float(sys.argv[1]) > float(sys.argv[2]) else 1)" "$n" "$best_ndcg"; then
      best=$ck; best_ndcg=$n
    fi
  done
  echo "$best"
}

# 3. Next-item SFT, 1 epoch (checkpoints every quarter epoch).
train sft recipes/ml100k-sid-sft.toml --set model.source="$OUT/init" "${DATA_SET[@]}" \
  --set eval_data.inter="$INTER" --set eval_data.index="$IDX" \
  --set train.epochs=1 --set checkpoint.every=95 ${SFT_SET:+--set $SFT_SET}
SFT=$(best_on_valid sft)
echo "SFT checkpoint chosen on valid: $SFT"

# 4. RL from the chosen SFT checkpoint, same budget for each algorithm (100 steps x 32 prompts
#    x 16 completions); the SFT checkpoint itself competes in the valid choice.
declare -A BEST=([sft]=$SFT)
for algo in ${RL:-grpo rover}; do
  train "$algo" "recipes/ml100k-sid-$algo.toml" --set model.source="$SFT/model" "${DATA_SET[@]}" \
    --set generation.constraint.sid_index="$IDX" ${RL_SET:+--set $RL_SET}
  BEST[$algo]=$(best_on_valid "$algo")
  echo "$algo checkpoint chosen on valid: ${BEST[$algo]}"
done

# 5. Baselines with per-row results, then the test evaluation of each chosen checkpoint:
#    50 beams (MiniOneRec), 16 beams, HSRL's factorized scoring; paired bootstrap vs both.
[ -f "$OUT/baselines/metrics.json" ] || RAYON_NUM_THREADS=1 "$LLMRL" rec baseline \
  --inter "$INTER" --items "$DATA/ml-100k.item" --model popularity --model sasrec \
  --split loo --history 10 --learning-rate 2e-3 --max-epochs 2 --patience 3 --out "$OUT/baselines"
for name in sft ${RL:-grpo rover}; do
  vs_sft=()
  [ "$name" = sft ] || vs_sft=(--against sft="$OUT/test/sft/beam50.rows.jsonl")
  [ -f "$OUT/test/$name/metrics.json" ] || "$LLMRL" rec eval --model "${BEST[$name]}/model" \
    --index "$IDX" --inter "$INTER" --split loo --part test --beams 50 --also-beams 16 \
    --against popularity="$OUT/baselines/popularity.rows.jsonl" \
    --against sasrec="$OUT/baselines/sasrec.rows.jsonl" "${vs_sft[@]}" --out "$OUT/test/$name"
done
