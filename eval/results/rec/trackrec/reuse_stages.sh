#!/usr/bin/env bash
# Starts a TrackRec run that takes some finished stages of another run by hard links, then
# resumes it: e.g. the GRPO variant of a recipe from its S-DPO run's stages that do not depend
# on G's optimizer (eval-zero-shot, v-nocot, eval-no-cot, g0-cots, v0, eval-r0), so the two
# variants share them and their rounds can be compared paired. The runs must have the same
# prompts (checked) and the same V recipe and seed (the caller's responsibility).
# Usage: [LLMRL=frozen/llmrl] reuse_stages.sh FROM_RUN OUT_RUN "STAGE ..." RECIPE [--set k=v]...
# A killed run resumes with: $LLMRL trackrec --resume OUT_RUN
set -euo pipefail
LLMRL=${LLMRL:-target/release/llmrl}
FROM=$1 OUT=$2 STAGES=$3
shift 3
[ ! -e "$OUT" ] || { echo "$OUT exists: resume it with $LLMRL trackrec --resume $OUT"; exit 1; }
mkdir -p "$(dirname "$OUT")"
log="$(dirname "$OUT")/create.log"
# The run directory (recipe, prompts) is written before the first stage starts.
"$LLMRL" trackrec "$@" --out "$OUT" > "$log" 2>&1 &
pid=$!
while ! grep -q "^stage " "$log" 2>/dev/null; do
  kill -0 $pid 2>/dev/null || { cat "$log"; exit 1; }
  sleep 0.2
done
kill $pid; wait $pid 2>/dev/null || true
for f in train validator test; do cmp "$OUT/prompts/$f.jsonl" "$FROM/prompts/$f.jsonl"; done
rm -rf "$OUT/stages"/* "$OUT/eval.jsonl"
done_list=""
for s in $STAGES; do
  cp -al "$FROM/stages/$s" "$OUT/stages/"
  grep -F "\"stage\":\"$s\"" "$FROM/eval.jsonl" >> "$OUT/eval.jsonl" || true
  done_list="$done_list${done_list:+, }\"$s\""
done
echo "{\"done\": [$done_list]}" > "$OUT/state.json"
echo "reused from $FROM (hard links): $STAGES" > "$OUT/REUSED.txt"
nohup nice -n 5 "$LLMRL" trackrec --resume "$OUT" >> "$(dirname "$OUT")/run.log" 2>&1 &
echo "started $OUT (pid $!)"
