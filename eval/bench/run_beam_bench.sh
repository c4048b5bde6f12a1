#!/usr/bin/env bash
# Constrained beam search, llmrl (candle) vs transformers, same model, same prompts, same trie,
# same machine, f32 on CPU: for each B in BEAMS, prompts x B ranked items per second of
# beam_search / generate(num_beams=B, num_return_sequences=B, prefix_allowed_tokens_fn=trie),
# 3 trie ids then EOS. Both sides read one workload file (beam_torch.py workload) and report the
# top beam of prompt 0, so it is visible that they searched the same thing. Writes OUT (markdown
# with both sides and the ratio) and the raw JSON lines next to it (OUT with .jsonl).
#
# Each measurement runs in its own process, llmrl and transformers alternating. The numbers are
# only as good as the machine is idle: say so when it is shared.
#
# Usage:  eval/bench/run_beam_bench.sh
# Knobs (environment): MODEL (the SmolLM2-135M GGUF), BEAMS ("16 50"), PROMPTS (4),
#   TRIE (1000), ITERS (2), PY (python3), OUT (eval/results/beam_bench.md), NICE (0), BUILD (1)
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
MODEL="${MODEL:-models/SmolLM2-135M-Instruct/SmolLM2-135M-Instruct.Q4_1.gguf}"
BEAMS="${BEAMS:-16 50}"
PROMPTS="${PROMPTS:-4}"
TRIE="${TRIE:-1000}"
ITERS="${ITERS:-2}"
PY="${PY:-python3}"
OUT="${OUT:-eval/results/beam_bench.md}"
NICE="${NICE:-0}"
[[ -s "$MODEL" ]] || { echo "error: model $MODEL not found" >&2; exit 1; }

if [[ "${BUILD:-1}" == 1 ]]; then
  nice -n "$NICE" cargo build --release --example bench_beam >&2
fi
work="$(mktemp --suffix .json)"
trap 'rm -f "$work"' EXIT
"$PY" eval/bench/beam_torch.py workload --model "$MODEL" --prompts "$PROMPTS" --trie-size "$TRIE" --out "$work"

raw="${OUT%.md}.jsonl"
mkdir -p "$(dirname "$OUT")"
load_start="$(cut -d' ' -f1-3 /proc/loadavg)"
: > "$raw"
for b in $BEAMS; do
  nice -n "$NICE" target/release/examples/bench_beam --model "$MODEL" --work "$work" --beams "$b" --iters "$ITERS" | tee -a "$raw"
  nice -n "$NICE" "$PY" eval/bench/beam_torch.py run --model "$MODEL" --work "$work" --beams "$b" --iters "$ITERS" 2>/dev/null | tee -a "$raw"
done

"$PY" - "$raw" "$OUT" "$PROMPTS" "$TRIE" "$ITERS" "$load_start" "$(cut -d' ' -f1-3 /proc/loadavg)" \
  "$(git rev-parse --short HEAD)" <<'PYEOF'
import json, sys, platform, os
raw, out, prompts, trie, iters, load_start, load_end, commit = sys.argv[1:]
rows = [json.loads(l) for l in open(raw) if l.strip()]
by = {}
for r in rows:
    by.setdefault(r["beams"], {})[r["side"]] = r
lines = [
    "# Constrained beam search: llmrl vs transformers (CPU, f32)",
    "",
    f"SmolLM2-135M-Instruct (GGUF Q4_1, dequantized), {prompts} ragged chat prompts per call, "
    f"trie of {trie} random 3-token sequences then EOS, max_new_tokens 4, median of {iters} runs "
    f"after a warm-up, 2 threads each side. Machine: {platform.machine()}, {os.cpu_count()} cores, "
    f"load average {load_start} at the start and {load_end} at the end (other jobs skew both "
    f"sides; the ratio of neighbouring runs less so). llmrl at {commit}.",
    "",
    "| B | llmrl items/s | transformers items/s | speed (llmrl ÷ transformers) | same top beam |",
    "| --- | --- | --- | --- | --- |",
]
for b, s in sorted(by.items()):
    l, t = s.get("llmrl"), s.get("transformers")
    if not (l and t):
        continue
    same = "yes" if l["top_beam_prompt0"] == t["top_beam_prompt0"] else "no"
    lines.append(f"| {b} | {l['items_per_s']} | {t['items_per_s']} | "
                 f"{l['items_per_s'] / t['items_per_s']:.2f}× | {same} |")
lines += ["", "Command: `eval/bench/run_beam_bench.sh` (raw lines in the .jsonl beside this file)."]
open(out, "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
PYEOF
