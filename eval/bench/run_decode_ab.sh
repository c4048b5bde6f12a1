#!/usr/bin/env bash
# Interleaved A/B of greedy generation throughput: two builds of examples/bench_runtime and,
# optionally, the transformers peer (eval/bench/bench_torch.py), in one command. For each
# repetition and batch, OLD, NEW and the peer run one after the other, each in its own process
# (the order rotates per repetition), so background load on a shared machine skews all alike;
# each repetition also measures the machine's copy bandwidth (NEW's `--mode bandwidth`). Then
# one `--profile` run of OLD and of NEW per batch gives the per-phase decode-step times.
# Prints a markdown table: per side the median tok/s over the repetitions with its min–max, the
# per-repetition ratios NEW ÷ OLD and NEW ÷ peer (median, min–max; > 1: NEW faster), and NEW's
# decode step relative to its batch-1 step; the raw JSON lines stay in OUT.
#
# Usage:  cp target/release/examples/bench_runtime /tmp/bench_old   # before the change
#         cargo build --release --example bench_runtime             # after it
#         OLD=/tmp/bench_old PY=/path/to/python eval/bench/run_decode_ab.sh
# Knobs (environment): OLD (required), NEW (target/release/examples/bench_runtime), MODEL (the
#   GGUF in models/), BATCHES ("1 2 4 8 16 32"), NEW_TOKENS (64), REPS (3), ITERS (1),
#   OUT (/tmp/decode_ab.jsonl), PROFILE (1; 0 = no profile runs), PY (a python with torch,
#   transformers and gguf: runs the peer; unset = no peer), THREADS (nproc, both sides)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
: "${OLD:?set OLD to the bench_runtime binary built before the change}"
NEW="${NEW:-$root/target/release/examples/bench_runtime}"
MODEL="${MODEL:-models/SmolLM2-135M-Instruct/SmolLM2-135M-Instruct.Q4_1.gguf}"
BATCHES="${BATCHES:-1 2 4 8 16 32}"
NEW_TOKENS="${NEW_TOKENS:-64}"
REPS="${REPS:-3}"
ITERS="${ITERS:-1}"
OUT="${OUT:-/tmp/decode_ab.jsonl}"
PROFILE="${PROFILE:-1}"
PY="${PY:-}"
THREADS="${THREADS:-$(nproc)}"
export RAYON_NUM_THREADS="$THREADS" OMP_NUM_THREADS="$THREADS" MKL_NUM_THREADS="$THREADS"
export TOKENIZERS_PARALLELISM=false TQDM_DISABLE=1
: > "$OUT"
load_start="$(cut -d' ' -f1-3 /proc/loadavg)"
tag() { # side rep: the JSON line on stdin, tagged, appended to OUT
  python3 -c 'import json,sys; d=json.loads(sys.stdin.read()); d["ab_side"]=sys.argv[1]; d["ab_rep"]=int(sys.argv[2]); print(json.dumps(d))' "$1" "$2" | tee -a "$OUT" >&2
}
run() { # side rep batch
  local side="$1" rep="$2" b="$3"
  case "$side" in
    old) "$OLD" --model "$MODEL" --mode generate --batch "$b" --new-tokens "$NEW_TOKENS" --iters "$ITERS" | tag old "$rep" ;;
    new) "$NEW" --model "$MODEL" --mode generate --batch "$b" --new-tokens "$NEW_TOKENS" --iters "$ITERS" | tag new "$rep" ;;
    torch) "$PY" eval/bench/bench_torch.py generate --model "$MODEL" --batch "$b" \
      --new-tokens "$NEW_TOKENS" --iters "$ITERS" --threads "$THREADS" 2>/dev/null | tag torch "$rep" ;;
  esac
}
sides="old new"
[[ -n "$PY" ]] && sides="old new torch"
for rep in $(seq "$REPS"); do
  # Rotate the order so no side always runs first (or right after the peer's heavy start-up).
  read -r -a order <<< "$sides"
  shift_by=$(( (rep - 1) % ${#order[@]} ))
  order=("${order[@]:shift_by}" "${order[@]:0:shift_by}")
  for b in $BATCHES; do
    echo "== rep $rep, batch $b (${order[*]})" >&2
    for side in "${order[@]}"; do run "$side" "$rep" "$b"; done
  done
  "$NEW" --model "$MODEL" --mode bandwidth | tag bandwidth "$rep"
done
if [[ "$PROFILE" != 0 ]]; then
  for b in $BATCHES; do
    for side in old new; do
      bin="$OLD"; [[ "$side" == new ]] && bin="$NEW"
      "$bin" --model "$MODEL" --mode generate --batch "$b" --new-tokens "$NEW_TOKENS" --iters "$ITERS" --profile | tag "profile_$side" 0
    done
  done
fi
LOAD="$load_start / $(cut -d' ' -f1-3 /proc/loadavg)" python3 - "$OUT" <<'PY'
import json, os, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
gen = [r for r in rows if r.get("mode") == "generate" and r["ab_side"] in ("old", "new", "torch")]
sides = [s for s in ("old", "new", "torch") if any(r["ab_side"] == s for r in gen)]
batches = sorted({r["batch"] for r in gen})
tps = lambda side, b: {r["ab_rep"]: r["tokens_per_s"] for r in gen if r["ab_side"] == side and r["batch"] == b}
med = lambda v: statistics.median(v)
spread = lambda v: f"{med(v):.1f} ({min(v):.1f}–{max(v):.1f})"
rspread = lambda v: f"{med(v):.2f}× ({min(v):.2f}–{max(v):.2f})"
def ratios(a, b, bt):
    x, y = tps(a, bt), tps(b, bt)
    return [x[r] / y[r] for r in x if r in y]
head = ["batch"] + [f"{s} tok/s" for s in sides] + ["new ÷ old"]
if "torch" in sides:
    head += ["new ÷ torch", "old ÷ torch"]
head += ["new step ÷ new batch-1 step", "same first ids"]
print("| " + " | ".join(head) + " |")
print("|" + "---:|" * (len(head) - 1) + ":---:|")
new1 = med(list(tps("new", batches[0]).values())) / batches[0]
for b in batches:
    cells = [str(b)] + [spread(list(tps(s, b).values())) for s in sides]
    cells.append(rspread(ratios("new", "old", b)))
    if "torch" in sides:
        cells += [rspread(ratios("new", "torch", b)), rspread(ratios("old", "torch", b))]
    n = med(list(tps("new", b).values()))
    cells.append(f"{(b / n) / (1 / new1):.2f}")
    ids = {tuple(r["first_ids"]) for r in gen if r["batch"] == b}
    cells.append("yes" if len(ids) == 1 else "NO")
    print("| " + " | ".join(cells) + " |")
print()
print(f"{len(set(r['ab_rep'] for r in gen))} repetitions per cell, each one process with "
      f"{gen[0]['new_tokens']} new tokens (prefill included), tok/s median (min–max); ratios are "
      "per repetition (the sides ran back to back), median (min–max).")
bw = [r for r in rows if r.get("mode") == "bandwidth"]
if bw:
    c = [r["copy_gbps"] for r in bw]; rd = [r["read_gbps"] for r in bw]
    lim = [r["batch1_limit_tok_s_read"] for r in bw]
    print()
    print(f"memory bandwidth per repetition: copy {', '.join(f'{x:.1f}' for x in c)} GB/s (read+write), "
          f"read {', '.join(f'{x:.1f}' for x in rd)} GB/s; streaming the {bw[0]['weights_mb']:.0f} MB of f32 "
          f"weights once per token allows {med(lim):.1f} tok/s at batch 1 (read, median); new batch 1 = "
          f"{100 * new1 / med(lim):.0f} % of it (prefill included)")
for side in ("old", "new"):
    prof = [r for r in rows if r.get("ab_side") == f"profile_{side}"]
    if not prof:
        continue
    print()
    print(f"Per-phase decode step, {side} (`--profile`, one run per batch, ms per step):")
    print()
    keys = list(prof[0]["profile"]["per_step_ms"])
    print("| batch | " + " | ".join(keys) + " | step total |")
    print("|---:|" + "---:|" * (len(keys) + 1))
    for r in prof:
        p = r["profile"]["per_step_ms"]
        tot = sum(v for k, v in p.items() if k != "sampling_alone")
        print(f"| {r['batch']} | " + " | ".join(f"{p[k]:.2f}" for k in keys) + f" | {tot:.2f} |")
print()
print(f"load average start / end: {os.environ['LOAD']}")
PY
