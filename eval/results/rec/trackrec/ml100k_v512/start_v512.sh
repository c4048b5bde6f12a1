#!/usr/bin/env bash
# Creates the sized ML-100K TrackRec run and reuses the V-without-CoT stages of the diagnostic
# run /work/runs/trackrec-vdiag (same 512 V prompts, same V recipe and stage seeds), then resumes.
set -e
OUT=/work/runs/trackrec-ml100k-v512/run
DIAG=/work/runs/trackrec-vdiag/run
mkdir -p /work/runs/trackrec-ml100k-v512
$(dirname "$0")/run.sh $OUT > /work/runs/trackrec-ml100k-v512/create.log 2>&1 &
pid=$!
while ! grep -q "stage eval-zero-shot" /work/runs/trackrec-ml100k-v512/create.log 2>/dev/null; do sleep 0.2; done
kill $pid; sleep 1; pkill -f "trackrec recipes/trackrec-ml100k.toml" || true
cmp $OUT/prompts/validator.jsonl $DIAG/prompts/train.jsonl
cmp $OUT/prompts/test.jsonl $DIAG/prompts/test.jsonl
rm -rf $OUT/stages/eval-zero-shot
for s in eval-zero-shot v-nocot eval-no-cot; do cp -r $DIAG/stages/$s $OUT/stages/; done
cp $DIAG/eval.jsonl $OUT/eval.jsonl
echo '{"done": ["eval-zero-shot", "v-nocot", "eval-no-cot"]}' > $OUT/state.json
echo "reused from $DIAG: eval-zero-shot v-nocot eval-no-cot" > $OUT/REUSED.txt
nohup $(dirname "$0")/run.sh $OUT >> /work/runs/trackrec-ml100k-v512/run.log 2>&1 &
