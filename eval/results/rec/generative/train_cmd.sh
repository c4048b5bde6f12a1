#!/bin/bash
# The experiment's SFT run (the same recipe as eval/rec/run_ml100k.sh, steps cut for the shared CPU).
set -e
cd /tmp/genrec
I=/work/shared/data/rec/movielens/ml-100k/ml-100k.inter
X=/tmp/genrec/ml100k.index.json
rm -rf run/init
./llmrl rec init-model --index $X --layers 2 --hidden 128 --heads 4 --intermediate 512 --seed 0 --out run/init
RAYON_NUM_THREADS=2 nice -n 5 ./llmrl train /work/wt/genrec/recipes/ml100k-sid-sft.toml --out run/sft \
  --set model.source=/tmp/genrec/run/init --set data.inter=$I --set data.index=$X \
  --set eval_data.inter=$I --set eval_data.index=$X \
  --set train.epochs=0.26346 --set checkpoint.every=25 \
  --set optimizer.learning_rate=3e-3 --set 'optimizer.lr_schedule={ name = "cosine", warmup_steps = 10, min_lr_ratio = 0.05 }'
