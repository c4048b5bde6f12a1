#!/usr/bin/env bash
# Valid NDCG@10 (50 constrained beams, 943 users) of RL checkpoints 60, 150, 240.
cd /work/main
R=/work/runs/ml100k; D=/work/shared/data/rec/movielens/ml-100k
one() { # algo
  local a=$1
  for s in 240 150 60; do
    ck=$R/$a/checkpoints/step_000$s; [ $s = 60 ] && ck=$R/$a-step60-keep
    v=$R/valid/$a/step_$s
    [ -f $v/metrics.json ] || nice -n 5 target/release/llmrl rec eval --model $ck/model --index $R/sid/index.json \
      --inter $D/ml-100k.inter --split loo --part valid --beams 50 --no-factorized --out $v > $R/valid_${a}_$s.log 2>&1
    python3 -c "import json,sys; m={a['k']:a for a in json.load(open(sys.argv[1]))['models']['beam50']['test']['at']}; print(sys.argv[2], 'HR@10', round(m[10]['hr'],4), 'NDCG@10', round(m[10]['ndcg'],4))" $v/metrics.json "$a $s"
  done
}
one grpo & one rover & wait
