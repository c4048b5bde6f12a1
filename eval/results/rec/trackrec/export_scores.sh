#!/usr/bin/env bash
# Copies what `llmrl report` needs of a TrackRec run into DEST, small enough to commit: the
# resolved recipe, run.json, eval.jsonl, each evaluation's per-prompt scores reduced to
# (id, label, p_yes), and G's greedy CoTs for the test prompts without the prompt's own fields
# (id, label, cot, cot_tokens, finish). The prompts themselves (TALLRec's and MovieLens' rows, research use only)
# stay out of the repository. A later run on the same test prompts (another machine, another
# session) can then be drawn beside it and compared prompt by prompt.
# Usage: export_scores.sh RUN_DIR DEST
set -euo pipefail
RUN=$1 DEST=$2
mkdir -p "$DEST/stages"
cp "$RUN/trackrec.resolved.toml" "$RUN/run.json" "$RUN/eval.jsonl" "$DEST/"
keep() { # FIELDS IN OUT: each JSON line of IN reduced to FIELDS (comma-separated)
  mkdir -p "$(dirname "$3")"
  python3 -c '
import json, sys
keys = sys.argv[1].split(",")
for line in open(sys.argv[2]):
    if line.strip():
        r = json.loads(line)
        print(json.dumps({k: r[k] for k in keys if k in r}, ensure_ascii=False))
' "$1" "$2" > "$3"
}
for s in "$RUN"/stages/eval-*; do
  [ -f "$s/scores.jsonl" ] || continue
  keep id,label,p_yes "$s/scores.jsonl" "$DEST/stages/$(basename "$s")/scores.jsonl"
done
for s in "$RUN"/stages/g*-cots; do
  [ -f "$s/test.jsonl" ] || continue
  keep id,label,cot,cot_tokens,finish "$s/test.jsonl" "$DEST/stages/$(basename "$s")/test.jsonl"
done
