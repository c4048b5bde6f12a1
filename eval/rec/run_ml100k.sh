#!/usr/bin/env bash
# MovieLens-100K generative recommendation end to end: SID index -> from-scratch SID decoder ->
# next-item SFT -> [RL: another stage, see below] -> full-catalogue evaluation beside the
# classic baselines, leave-one-out, history 10.
#
#   eval/rec/run_ml100k.sh [ML100K_DIR] [OUT_DIR]
#
# ML100K_DIR holds ml-100k.inter / ml-100k.item (RecBole atomic files; default
# ../shared/data/rec/movielens/ml-100k). Everything lands in OUT_DIR (default runs/ml100k-genrec).
# Environment: LLMRL (binary, default target/release/llmrl), SID_INDEX (use an existing index
# instead of building one), SFT_SET (extra --set overrides for the SFT recipe, e.g.
# "train.epochs=2"), EVAL_USERS (valid users for checkpoint selection, default all).
set -euo pipefail
cd "$(dirname "$0")/../.."
DATA=${1:-../shared/data/rec/movielens/ml-100k}
OUT=${2:-runs/ml100k-genrec}
LLMRL=${LLMRL:-target/release/llmrl}
INTER=$DATA/ml-100k.inter
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)

# 1. SID index (MiniOneRec format) and its token list.
if [ -n "${SID_INDEX:-}" ]; then
  mkdir -p "$OUT/sid" && cp "$SID_INDEX" "$OUT/sid/index.json"
elif "$LLMRL" sid build --help >/dev/null 2>&1; then
  # The SID helper's command (issue 13 item 2): MiniLM item embeddings, RQ-KMeans 3 x 16 +
  # an ordinal level for collisions.
  # (flags as planned in issue 13; adjust to the command as it lands)
  "$LLMRL" sid build --items "$DATA/ml-100k.item" --levels 3 --codes 16 --collisions ordinal \
    --out "$OUT/sid"
else
  echo "no SID index: set SID_INDEX=... or build llmrl with \`sid build\`" >&2
  echo "(eval/rec/temp_sid_index.py makes a temporary one with numpy + scikit-learn)" >&2
  exit 1
fi

# 2. A fresh from-scratch decoder over the SID tokens.
[ -d "$OUT/init" ] || "$LLMRL" rec init-model --index "$OUT/sid/index.json" \
  --layers 2 --hidden 128 --heads 4 --intermediate 512 --seed 0 --out "$OUT/init"

# 3. Next-item SFT (checkpoints every 100 steps).
[ -d "$OUT/sft" ] || nice -n 5 "$LLMRL" train recipes/ml100k-sid-sft.toml --out "$OUT/sft" \
  --set model.source="$OUT/init" \
  --set data.inter="$(realpath "$INTER")" --set data.index="$OUT/sid/index.json" \
  --set eval_data.inter="$(realpath "$INTER")" --set eval_data.index="$OUT/sid/index.json" \
  ${SFT_SET:+--set $SFT_SET}

# 4. RL (GRPO / ROVER over constrained beams or trie-constrained samples) -- ANOTHER HELPER'S
#    STAGE (issue 13 item 5, RL half). It starts from the checkpoint chosen in step 5 and its
#    checkpoints go through the same step 5/6 evaluation:
#      "$LLMRL" train recipes/ml100k-sid-grpo.toml --set model.source="$BEST" --out "$OUT/rl"

# 5. Choose the SFT checkpoint on the VALID split only (NDCG@10 of 50 constrained beams).
BEST= ; BEST_NDCG=-1
for ck in "$OUT"/sft/checkpoints/step_*; do
  v="$OUT/valid/$(basename "$ck")"
  [ -f "$v/metrics.json" ] || "$LLMRL" rec eval --model "$ck/model" --index "$OUT/sid/index.json" \
    --inter "$INTER" --split loo --part valid --beams 50 --no-factorized \
    --max-users "${EVAL_USERS:-0}" --out "$v"
  n=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['models']['beam50']['test']['at'][3]['ndcg'])" "$v/metrics.json")
  if python3 -c "import sys; sys.exit(0 if float(sys.argv[1]) > float(sys.argv[2]) else 1)" "$n" "$BEST_NDCG"; then
    BEST=$ck; BEST_NDCG=$n
  fi
done
echo "best checkpoint on valid: $BEST (NDCG@10 $BEST_NDCG)"

# 6. Baselines with per-row results, then the test evaluation of the chosen checkpoint:
#    50 beams (MiniOneRec), 16 beams, HSRL's factorized scoring; paired bootstrap vs both.
[ -f "$OUT/baselines/metrics.json" ] || RAYON_NUM_THREADS=1 "$LLMRL" rec baseline \
  --inter "$INTER" --items "$DATA/ml-100k.item" --model popularity --model sasrec \
  --split loo --history 10 --learning-rate 2e-3 --max-epochs 2 --patience 3 --out "$OUT/baselines"
"$LLMRL" rec eval --model "$BEST/model" --index "$OUT/sid/index.json" --inter "$INTER" \
  --split loo --part test --beams 50 --also-beams 16 \
  --against popularity="$OUT/baselines/popularity.rows.jsonl" \
  --against sasrec="$OUT/baselines/sasrec.rows.jsonl" --out "$OUT/test"
