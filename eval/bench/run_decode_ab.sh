#!/usr/bin/env bash
# Interleaved A/B of greedy generation throughput, two builds of examples/bench_runtime in one
# command: for each repetition and batch, OLD then NEW, each in its own process, so background
# load on a shared machine skews both alike; then the machine's copy bandwidth (NEW's
# `--mode bandwidth`). Prints a markdown table of median tok/s per batch and the ratio
# NEW ÷ OLD (> 1: NEW faster), and keeps the raw JSON lines in OUT.
#
# Usage:  cp target/release/examples/bench_runtime /tmp/bench_old   # before the change
#         cargo build --release --example bench_runtime             # after it
#         OLD=/tmp/bench_old eval/bench/run_decode_ab.sh
# Knobs (environment): OLD (required), NEW (target/release/examples/bench_runtime), MODEL (the
#   GGUF in models/), BATCHES ("1 2 4 8 16 32 64"), NEW_TOKENS (64), REPS (2), ITERS (1),
#   OUT (/tmp/decode_ab.jsonl), PROFILE (0; 1 = one extra `--profile` run of NEW per batch)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
: "${OLD:?set OLD to the bench_runtime binary built before the change}"
NEW="${NEW:-$root/target/release/examples/bench_runtime}"
MODEL="${MODEL:-models/SmolLM2-135M-Instruct/SmolLM2-135M-Instruct.Q4_1.gguf}"
BATCHES="${BATCHES:-1 2 4 8 16 32 64}"
NEW_TOKENS="${NEW_TOKENS:-64}"
REPS="${REPS:-2}"
ITERS="${ITERS:-1}"
OUT="${OUT:-/tmp/decode_ab.jsonl}"
PROFILE="${PROFILE:-0}"
: > "$OUT"
load_start="$(cut -d' ' -f1-3 /proc/loadavg)"
run() { # side binary args...
  local side="$1" bin="$2"; shift 2
  "$bin" --model "$MODEL" "$@" | python3 -c 'import json,sys; d=json.loads(sys.stdin.read()); d["ab_side"]=sys.argv[1]; print(json.dumps(d))' "$side" | tee -a "$OUT" >&2
}
for rep in $(seq "$REPS"); do
  for b in $BATCHES; do
    echo "== rep $rep, batch $b" >&2
    run old "$OLD" --mode generate --batch "$b" --new-tokens "$NEW_TOKENS" --iters "$ITERS"
    run new "$NEW" --mode generate --batch "$b" --new-tokens "$NEW_TOKENS" --iters "$ITERS"
  done
done
if [[ "$PROFILE" != 0 ]]; then
  for b in $BATCHES; do
    run profile "$NEW" --mode generate --batch "$b" --new-tokens "$NEW_TOKENS" --iters "$ITERS" --profile
  done
fi
run bandwidth "$NEW" --mode bandwidth
LOAD="$load_start / $(cut -d' ' -f1-3 /proc/loadavg)" python3 - "$OUT" <<'PY'
import json, os, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
gen = [r for r in rows if r.get("mode") == "generate"]
bw = next(r for r in rows if r.get("mode") == "bandwidth")
print(f"| batch | old tok/s | new tok/s | new ÷ old | new s/step ÷ batch-1 s/step | same first ids |")
print("|---:|---:|---:|---:|---:|:---:|")
med = lambda side, b: statistics.median(r["tokens_per_s"] for r in gen if r["ab_side"] == side and r["batch"] == b)
batches = sorted({r["batch"] for r in gen})
new1 = med("new", batches[0]) / batches[0]
for b in batches:
    o, n = med("old", b), med("new", b)
    ids = {tuple(r["first_ids"]) for r in gen if r["batch"] == b and r["ab_side"] in ("old", "new")}
    step_ratio = (b / n) / (1 / new1)
    print(f"| {b} | {o:.1f} | {n:.1f} | {n / o:.2f}× | {step_ratio:.2f} | {'yes' if len(ids) == 1 else 'NO'} |")
print()
print(f"copy bandwidth {bw['copy_gbps']:.1f} GB/s (read+write), read {bw['read_gbps']:.1f} GB/s; "
      f"f32 weights {bw['weights_mb']:.0f} MB: batch-1 limit {bw['batch1_limit_tok_s_copy']:.1f} tok/s (copy), "
      f"{bw['batch1_limit_tok_s_read']:.1f} tok/s (read); new batch 1 = "
      f"{100 * med('new', batches[0]) / batches[0] / bw['batch1_limit_tok_s_copy']:.0f} % of the copy limit")
prof = [r for r in rows if r.get("ab_side") == "profile"]
if prof:
    print()
    keys = list(prof[0]["profile"]["per_step_ms"])
    print("| batch | " + " | ".join(keys) + " | (ms per decode step) |")
    print("|---:|" + "---:|" * len(keys) + "---|")
    for r in prof:
        p = r["profile"]["per_step_ms"]
        print(f"| {r['batch']} | " + " | ".join(f"{p[k]:.2f}" for k in keys) + " | |")
print()
print(f"load average start / end: {os.environ['LOAD']}")
PY
