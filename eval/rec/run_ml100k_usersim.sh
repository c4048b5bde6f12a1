#!/usr/bin/env bash
# The SID recommender of eval/rec/run_ml100k.sh trained by GRPO against the LLM user simulator
# (issue 15), then evaluated on the real held-out logs: does the simulator's reward move HR/NDCG?
#   1. the keyword pass over every item (llmrl usersim build; resumable) and the simulator's
#      fidelity on held-out ratings (llmrl usersim eval);
#   2. GRPO from the SFT checkpoint with [verifier] name = "usersim" (recipes/ml100k-sid-usersim.toml:
#      16 constrained beams per prompt, reward = the simulated user's calibrated like score);
#   3. test HR/NDCG of the last checkpoint (50 beams, leave-one-out), paired bootstrap against
#      the SFT model's rows from run_ml100k.sh.
#
#   eval/rec/run_ml100k_usersim.sh [ML100K_DIR] [GENREC_OUT] [USERSIM_OUT]
#
# GENREC_OUT is run_ml100k.sh's output (SID index, sft/, test/sft/); USERSIM_OUT the keyword
# table's directory (default runs/usersim-ml100k). Environment: LLMRL, SFT_CKPT (default the
# SFT run's newest checkpoint), STEPS (default 60), RESULTS (default
# eval/results/rec/usersim/ml100k), BETA (the KL weight to the SFT model, default the recipe's
# 1e-3; another value names the run usersim-grpo-beta$BETA).
set -euo pipefail
cd "$(dirname "$0")/../.."
DATA=${1:-../shared/data/rec/movielens/ml-100k}
OUT=$(cd "${2:-runs/ml100k-genrec}" && pwd)
SIM=${3:-runs/usersim-ml100k}
LLMRL=${LLMRL:-target/release/llmrl}
RESULTS=${RESULTS:-eval/results/rec/usersim/ml100k}
INTER=$(realpath "$DATA/ml-100k.inter")
IDX=$OUT/sid/index.json
SFT_CKPT=${SFT_CKPT:-$(ls -d "$OUT"/sft/checkpoints/step_* | tail -1)}
STEPS=${STEPS:-60}
BETA=${BETA:-0.001}
NAME=usersim-grpo
[ "$BETA" = 0.001 ] || NAME=usersim-grpo-beta$BETA

# 1. Keyword table (SmolLM2-135M-Instruct; ~45 min on an idle 2-core CPU) and fidelity.
[ -f "$SIM/keywords.jsonl" ] || nice -n 5 "$LLMRL" usersim build --items "$DATA/ml-100k.item" \
  --batch-size 32 --max-new-tokens 40 --temperature 0.5 --seed 0 --out "$SIM"
[ -f "$RESULTS/summary.json" ] || "$LLMRL" usersim eval --profiles "$SIM" --inter "$INTER" \
  --episodes 100 --seed 0 --out "$RESULTS"

# 2. GRPO against the simulator (a killed run continues with --resume).
RUN=$OUT/$NAME
if [ ! -f "$RUN/done" ]; then
  if [ -d "$RUN" ]; then
    nice -n 5 "$LLMRL" train --resume "$RUN"
  else
    nice -n 5 "$LLMRL" train recipes/ml100k-sid-usersim.toml --out "$RUN" \
      --set model.source="$SFT_CKPT/model" --set data.inter="$INTER" --set data.index="$IDX" \
      --set generation.constraint.sid_index="$IDX" --set verifier.profiles="$(realpath "$SIM")" \
      --set verifier.inter="$INTER" --set train.max_steps="$STEPS" --set checkpoint.every=30 \
      --set algorithm.beta="$BETA"
  fi
  touch "$RUN/done"
fi

# 3. The real metric, before (SFT, run_ml100k.sh's test rows) and after, at every checkpoint.
mkdir -p "$RESULTS/$NAME"
for ck in "$RUN"/checkpoints/step_*; do
  t="$OUT/test/$NAME/$(basename "$ck")"
  [ -f "$t/metrics.json" ] || "$LLMRL" rec eval --model "$ck/model" \
    --index "$IDX" --inter "$INTER" --split loo --part test --beams 50 \
    --against sft="$OUT/test/sft/beam50.rows.jsonl" --out "$t"
  cp "$t/metrics.json" "$RESULTS/$NAME/test_metrics_$(basename "$ck").json"
done
cp "$RUN/metrics.jsonl" "$RESULTS/$NAME/metrics.jsonl"
cp "$OUT/test/sft/metrics.json" "$RESULTS/test_metrics_sft.json"
echo "BETA=$BETA STEPS=$STEPS SFT_CKPT=$SFT_CKPT $0 $*" > "$RESULTS/$NAME/command.txt"
