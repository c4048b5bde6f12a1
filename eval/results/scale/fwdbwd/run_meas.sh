#!/usr/bin/env bash
# blocks 2 and 3 of eval/results/scale/run.sh, with main's bench_runtime (commit 1e2a233 build)
set -uo pipefail
OUT=/tmp/dp/scale/out; mkdir -p $OUT
MODEL=/work/main/models/SmolLM2-135M-Instruct/SmolLM2-135M-Instruct.Q4_1.gguf
BR=/tmp/dp/scale/bench_runtime
peak() { grep "Maximum resident" "$1" | awk '{print $NF/1024 " MiB"}'; }
python3 -c "
import random; random.seed(0)
for _ in range(8): print(' '.join(str(random.randrange(49152)) for _ in range(513)))
" > $OUT/ids.txt
for args in "" "--gradient-checkpointing" "--lora-r 16" "--lora-r 16 --gradient-checkpointing"; do
  name=$(echo "fwdbwd $args" | tr -s ' -' '_' | sed 's/_$//')
  /usr/bin/time -v $BR --model $MODEL --mode train --ids $OUT/ids.txt --iters 1 $args > $OUT/$name.json 2> $OUT/$name.time
  echo "$name: $(peak $OUT/$name.time) $(cat $OUT/$name.json | tr '\n' ' ')"
done
for args in "" "--lora-r 16" "--lora-r 16 --unmerged" "--lora-r 16" "--lora-r 16 --unmerged"; do
  name=$(echo "generate $args" | tr -s ' -' '_' | sed 's/_$//')
  $BR --model $MODEL --mode generate --batch 8 --new-tokens 64 --iters 3 $args > $OUT/$name.json 2>$OUT/$name.err
  echo "$name: $(cat $OUT/$name.json | tr '\n' ' ')"
done
echo ALLDONE
