#!/usr/bin/env bash
# One RL step end to end, llmrl beside TRL's GRPOTrainer, on this machine: 4 Countdown prompts x 8
# generations x <= 128 new tokens, GRPO (dapo loss, beta 0), f32 on CPU, 2 threads, from the same
# SFT warm-start checkpoint (so rewards are realistic), identical prompt token ids.
# llmrl is timed twice: as shipped (zero-advantage samples skip their forward/backward; the update
# is the same) and with train.skip_zero_advantage=false (the full computation TRL does).
# Usage: eval/bench/run_rl_step_bench.sh [MODEL_DIR]   → eval/results/rl_step_bench.md
set -euo pipefail
cd "$(dirname "$0")/../.."
MODEL=${1:-runs/countdown-sft/checkpoints/step_000030/model}
PY=${PYTHON:-/work/pyenv/bin/python}
OUT=eval/results/rl_step_bench.md
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
[ -e "$MODEL/config.json" ] || { echo "no HF model dir at $MODEL (run eval/countdown/run_all.sh for the SFT warm start)"; exit 1; }
MODEL=$(realpath "$MODEL") # a relative or absolute path alike
cargo build --release -q
export RAYON_NUM_THREADS=2
step() { # name extra-set...
  local name=$1; shift
  target/release/llmrl train recipes/countdown-grpo.toml --set train.max_steps=1 \
    --set model.source="$MODEL" --set log.rollouts_every=1 --set checkpoint.every=0 "$@" \
    --out "$TMP/$name" > "$TMP/$name.log" 2>&1
  head -1 "$TMP/$name/metrics.jsonl"
}
SKIP=$(step skip)
FULL=$(step full --set train.skip_zero_advantage=false)
# The same four prompts (chat-templated text) for TRL, with their numbers and targets.
"$PY" - "$TMP/skip/rollouts/step_000001.jsonl" > "$TMP/prompts.jsonl" <<'PYEOF'
import json, re, sys
seen = []
for line in open(sys.argv[1]):
    p = json.loads(line)["prompt"]
    if p not in seen:
        seen.append(p)
for p in seen:
    m = re.search(r"Using the numbers \[([^\]]*)\], create an equation that equals (\d+)", p)
    print(json.dumps({"prompt": p, "nums": [int(x) for x in m.group(1).split(",")], "target": int(m.group(2))}))
PYEOF
"$PY" eval/bench/trl_grpo_step.py --model "$MODEL" --prompts "$TMP/prompts.jsonl" --out "$TMP/trl.json" --threads 2 > "$TMP/trl.log" 2>&1 \
  || { tail -30 "$TMP/trl.log"; exit 1; }
"$PY" - "$SKIP" "$FULL" "$TMP/trl.json" "$MODEL" "$(nproc)" > "$OUT" <<'PYEOF'
import json, sys, platform, subprocess
skip, full, trl = json.loads(sys.argv[1]), json.loads(sys.argv[2]), json.load(open(sys.argv[3]))
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.processor())
commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
t = trl["step_seconds"]
print("# One RL step, llmrl vs TRL GRPOTrainer\n")
print(f"Command: `eval/bench/run_rl_step_bench.sh {sys.argv[4]}` (llmrl {commit}, TRL {trl['trl_version']}, torch {trl['torch_version']}).")
print(f"Machine: {cpu}, {sys.argv[5]} cores, 2 threads each side, f32, one run each.\n")
print("Step: 4 Countdown prompts x 8 generations x <= 128 new tokens, GRPO (dapo, beta 0, eps 0.2), AdamW lr 1e-5,")
print("micro-batches of 8, one optimizer step; same SFT checkpoint and prompt ids on both sides; TRL with")
print("gradient checkpointing off (its default is on, which costs it time).\n")
print("| | step s | generation s | rest s | mean completion tokens | reward mean | speed vs TRL (TRL s ÷ llmrl s) |")
print("| --- | --- | --- | --- | --- | --- | --- |")
for name, m in [("llmrl (as shipped: zero-advantage samples skipped)", skip), ("llmrl (skip off: full computation)", full)]:
    print(f"| {name} | {m['step_seconds']:.1f} | {m['gen_seconds']:.1f} | {m['step_seconds'] - m['gen_seconds']:.1f} | {m['response_length_mean']:.1f} | {m['reward_mean']:.3f} | {t / m['step_seconds']:.2f}x |")
print(f"| TRL GRPOTrainer | {t:.1f} | {trl['gen_seconds']:.1f} | {t - trl['gen_seconds']:.1f} | {trl['completion_length_mean'] or float('nan'):.1f} | {trl['reward_mean'] or float('nan'):.3f} | 1.00x |")
print(f"\nllmrl trained {skip.get('nonzero_advantage_rate', float('nan')):.0%} of the samples with skip on (the others had zero advantage).")
print("Completions differ between the sides (different samplers), so lengths and rewards differ; the")
print("per-token cost is what the ratio compares, with lengths shown to read it by.")
PYEOF
cat "$OUT"
