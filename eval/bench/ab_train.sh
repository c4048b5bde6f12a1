#!/usr/bin/env bash
# Interleaved A/B of two llmrl builds on one training recipe: runs A, B, A, B, ... (N each), so
# drift in machine load hits both sides alike, and prints per-run step seconds (from
# metrics.jsonl) and CPU seconds (user + sys, from /usr/bin/time) with the B/A ratio of medians.
# Usage: eval/bench/ab_train.sh BIN_A BIN_B RECIPE N [--set k=v ...]
# Example (the refactor check of issue 11):
#   eval/bench/ab_train.sh /work/wt/old/target/release/llmrl target/release/llmrl \
#       tests/fixtures/golden_metrics/smollm2-grpo.toml 3
set -euo pipefail
a=$1 b=$2 recipe=$3 n=$4
shift 4
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
printf 'run\tside\tstep_seconds(sum)\tcpu_seconds\twall_seconds\n'
for i in $(seq 1 "$n"); do
  for side in A B; do
    bin=$a; [[ $side == B ]] && bin=$b
    dir="$out/$side$i"
    /usr/bin/time -f '%U %S %e' -o "$out/time" "$bin" train "$recipe" --out "$dir" "$@" >/dev/null 2>&1
    read -r user sys wall < "$out/time"
    steps=$(python3 -c 'import json,sys; print(round(sum(json.loads(l)["step_seconds"] for l in open(sys.argv[1])),2))' "$dir/metrics.jsonl")
    cpu=$(python3 -c "print(round($user+$sys,2))")
    printf '%s\t%s\t%s\t%s\t%s\n' "$i" "$side" "$steps" "$cpu" "$wall" | tee -a "$out/rows.tsv"
  done
done
python3 - "$out/rows.tsv" <<'PY'
import statistics, sys
rows = [l.split('\t') for l in open(sys.argv[1]).read().split('\n') if l]
for col, name in [(2, 'step seconds'), (3, 'cpu seconds')]:
    med = {s: statistics.median(float(r[col]) for r in rows if r[1] == s) for s in 'AB'}
    print(f"median {name}: A {med['A']:.2f}  B {med['B']:.2f}  B/A {med['B']/med['A']:.3f}")
PY
