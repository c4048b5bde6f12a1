#!/usr/bin/env bash
# Stop the SFT at its step-200 checkpoint (3.3 % of an epoch; time), evaluate it on test, then start the TrackRec sized run.
C=/work/runs/llm-sid/sft/checkpoints/step_000200
while [ ! -f "$C/manifest.json" ]; do sleep 15; done
sleep 10
pkill -f "llm-sid/sft"
sleep 5
CK=$C /work/runs/llm-sid/run_eval.sh > /work/runs/llm-sid/eval.log 2>&1
/work/runs/run_trackrec_ml100k_r3.sh > /work/runs/trackrec-ml100k-r3/run.log 2>&1
