#!/usr/bin/env bash
# TrackRec's loop (S-DPO on G) on TALLRec's movie prompts at the recipe's own sizes, with the
# no-CoT baseline (session 30; README "Session 30"). Copy a build first, so a rebuild cannot
# change the run midway (session 30 used 9e38171's):
#   cargo build --release && mkdir -p /work/runs/bin && cp target/release/llmrl /work/runs/bin/llmrl-trackrec
# The same command resumes a killed run at its stage and step.
set -euo pipefail
cd "$(dirname "$0")/../../../../.."
LLMRL=${LLMRL:-/work/runs/bin/llmrl-trackrec}
OUT=${OUT:-/work/runs/trackrec-tallrec-movie/run}
if [ -f "$OUT/trackrec.resolved.toml" ]; then
  exec nice -n 5 "$LLMRL" trackrec --resume "$OUT"
fi
mkdir -p "$(dirname "$OUT")"
exec nice -n 5 "$LLMRL" trackrec recipes/trackrec-tallrec-movie.toml --out "$OUT"
