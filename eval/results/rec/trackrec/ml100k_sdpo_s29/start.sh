#!/usr/bin/env bash
# The S-DPO run (recipes/trackrec-ml100k.toml) on the same machine as the GRPO run of
# ../ml100k_grpo_s28, from round 1: it takes that run's stages that do not depend on G's
# optimizer (eval-zero-shot, g0-cots, v0, eval-r0: same prompts, same V recipe, same stage
# seeds) by hard links, then resumes. Like the GRPO run it skips v-nocot/eval-no-cot (measured
# once: 0.675 [0.592, 0.749]). Run it with the same frozen binary:
#   LLMRL=/work/runs/bin/llmrl-trackrec start.sh
# and resume a killed run with ../ml100k_v512/run.sh "$OUT" (LLMRL set the same way).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
LLMRL=${LLMRL:-/work/runs/bin/llmrl-trackrec}
OUT=${OUT:-/work/runs/trackrec-ml100k-sdpo/run}
GRPO=${GRPO:-/work/runs/trackrec-ml100k-grpo/run}
[ ! -e "$OUT" ] || { echo "$OUT exists: resume it with $here/../ml100k_v512/run.sh $OUT"; exit 1; }
mkdir -p "$(dirname "$OUT")"
log="$(dirname "$OUT")/create.log"
LLMRL=$LLMRL "$here/../ml100k_v512/run.sh" "$OUT" --set trackrec.baseline_no_cot=false > "$log" 2>&1 &
pid=$!
while ! grep -q "stage eval-zero-shot" "$log" 2>/dev/null; do sleep 0.2; done
kill $pid; wait $pid 2>/dev/null || true
pkill -f "trackrec recipes/trackrec-ml100k.toml" || true
for f in train validator test; do cmp "$OUT/prompts/$f.jsonl" "$GRPO/prompts/$f.jsonl"; done
reused="eval-zero-shot g0-cots v0 eval-r0"
rm -rf "$OUT/stages"/*
for s in $reused; do cp -al "$GRPO/stages/$s" "$OUT/stages/"; done
grep -E '"stage":"(eval-zero-shot|eval-r0)"' "$GRPO/eval.jsonl" > "$OUT/eval.jsonl"
echo '{"done": ["eval-zero-shot", "g0-cots", "v0", "eval-r0"]}' > "$OUT/state.json"
echo "reused from $GRPO (hard links): $reused" > "$OUT/REUSED.txt"
LLMRL=$LLMRL nohup "$here/../ml100k_v512/run.sh" "$OUT" >> "$(dirname "$OUT")/run.log" 2>&1 &
echo "started $OUT"
