#!/usr/bin/env bash
# Side-by-side CPU runtime benchmark, llmrl (candle) vs PyTorch + transformers, same model, same
# machine, same thread count, f32:
#   0. the machine's limits: memory bandwidth and f32 GEMM rate (bench_runtime --mode bandwidth),
#      before and after the generation rows, and what they allow at batch 1 and at large batches
#   1. greedy generation tokens/s at each batch in GEN_BATCHES, exactly NEW_TOKENS new tokens
#   2. forward+backward time and peak RSS for TRAIN_B x TRAIN_T tokens (next-token NLL)
# and writes OUT (markdown table with both sides and ratios, the command, machine info), keeping
# the raw JSON lines next to it (OUT with .jsonl).
#
# Each measurement runs in its own process (so VmHWM is that measurement's), llmrl and torch
# alternating. Run it on an otherwise idle machine: background load skews the numbers.
#
# Usage (from any directory):   eval/bench/run_runtime_bench.sh
# Knobs (environment):  MODEL (default: scripts/fetch_model.sh's GGUF), THREADS (nproc),
#   ITERS (3), NEW_TOKENS (128), GEN_BATCHES ("1 8"), TRAIN_B (8), TRAIN_T (256),
#   PY (/work/pyenv/bin/python), OUT (eval/results/runtime_bench.md), NICE (0; e.g. 19),
#   BUILD (1; 0 = use the already built target/release/examples/bench_runtime)
# Tiny sanity run:  NEW_TOKENS=8 GEN_BATCHES=1 TRAIN_B=1 TRAIN_T=32 ITERS=1 OUT=/tmp/rb.md \
#   eval/bench/run_runtime_bench.sh
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"

command_line="$(for v in MODEL THREADS ITERS NEW_TOKENS GEN_BATCHES TRAIN_B TRAIN_T PY OUT NICE BUILD; do
  if [[ -n "${!v:-}" ]]; then printf "%s=%q " "$v" "${!v}"; fi; done)eval/bench/run_runtime_bench.sh"

MODEL="${MODEL:-$(scripts/fetch_model.sh)}"
THREADS="${THREADS:-$(nproc)}"
ITERS="${ITERS:-3}"
NEW_TOKENS="${NEW_TOKENS:-128}"
GEN_BATCHES="${GEN_BATCHES:-1 8}"
TRAIN_B="${TRAIN_B:-8}"
TRAIN_T="${TRAIN_T:-256}"
PY="${PY:-/work/pyenv/bin/python}"
OUT="${OUT:-eval/results/runtime_bench.md}"
NICE="${NICE:-0}"

[[ -s "$MODEL" ]] || { echo "error: model $MODEL not found; run scripts/fetch_model.sh" >&2; exit 1; }
[[ -x "$PY" ]] || { echo "error: python $PY not found; set PY to one with torch+transformers+gguf" >&2; exit 1; }

if [[ "${BUILD:-1}" != 0 ]]; then
  echo "building examples/bench_runtime.rs (release)..." >&2
  nice -n "$NICE" cargo build --release --example bench_runtime >&2
fi
bin="$root/target/release/examples/bench_runtime"

mkdir -p "$(dirname "$OUT")"
jsonl="${OUT%.md}.jsonl"
: > "$jsonl"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

load_start="$(cut -d' ' -f1-3 /proc/loadavg)"
# Same thread count on both sides: candle reads RAYON_NUM_THREADS; torch gets --threads.
export RAYON_NUM_THREADS="$THREADS" OMP_NUM_THREADS="$THREADS" MKL_NUM_THREADS="$THREADS"
export TOKENIZERS_PARALLELISM=false TQDM_DISABLE=1

llmrl() { nice -n "$NICE" "$bin" --model "$MODEL" --iters "$ITERS" "$@" | tee -a "$jsonl" >&2; }
torch() { nice -n "$NICE" "$PY" eval/bench/bench_torch.py --model "$MODEL" --iters "$ITERS" \
  --threads "$THREADS" "$@" | tee -a "$jsonl" >&2; }

# The machine's limits (memory bandwidth, f32 GEMM rate), before and after the generation rows.
echo "== machine limits" >&2
llmrl --mode bandwidth
for b in $GEN_BATCHES; do
  echo "== generate: batch $b, $NEW_TOKENS new tokens" >&2
  llmrl --mode generate --batch "$b" --new-tokens "$NEW_TOKENS"
  torch generate --batch "$b" --new-tokens "$NEW_TOKENS"
done

llmrl --mode bandwidth

echo "== train: $TRAIN_B x $TRAIN_T tokens" >&2
ids="$work/ids.txt"
nice -n "$NICE" "$PY" eval/bench/bench_torch.py ids --model "$MODEL" --batch "$TRAIN_B" \
  --seq-len "$TRAIN_T" --out "$ids"
llmrl --mode train --ids "$ids"
torch train --ids "$ids"

# Values reach Python through the environment, so no quoting can break its source.
BENCH_CMD="$command_line" BENCH_MODEL="$MODEL" BENCH_THREADS="$THREADS" BENCH_ITERS="$ITERS" \
BENCH_LOAD_START="$load_start" "$PY" - "$work/meta.json" <<'EOF'
import json, os, subprocess, sys
sh = lambda c: subprocess.run(c, shell=True, capture_output=True, text=True).stdout.strip()
e = os.environ
json.dump({
    "command": e["BENCH_CMD"],
    "model": e["BENCH_MODEL"],
    "threads": e["BENCH_THREADS"],
    "iters": e["BENCH_ITERS"],
    "cpu": sh("lscpu | grep 'Model name' | sed 's/.*: *//'"),
    "nproc": sh("nproc"),
    "mem": sh("free -g | awk '/Mem:/ {print $2 \" GiB\"}'"),
    "load_start": e["BENCH_LOAD_START"],
    "load_end": sh("cut -d' ' -f1-3 /proc/loadavg"),
    "git": sh("git rev-parse --short HEAD") + (" (dirty)" if sh("git status --porcelain --untracked-files=no") else ""),
    "rustc": sh("rustc --version"),
    "date": sh("date -u +%Y-%m-%dT%H:%MZ"),
}, open(sys.argv[1], "w"))
EOF
"$PY" eval/bench/report.py "$jsonl" "$work/meta.json" "$OUT"
cat "$OUT"
