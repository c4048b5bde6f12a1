"""Would continuous batching speed up the 12 x 64 Countdown evaluation? A replay, no model run.

Takes the completion lengths of a finished evaluation (its problems.jsonl, tokenized with the
model's tokenizer, +1 for the EOS, capped at --max-new-tokens) and a decode-step cost per live
row count, interpolated linearly between measured points (ms per decode step at batch 1, 8, 32,
64 and 128 from `bench_runtime --mode generate --profile`, prefill excluded). Then it replays
  - chunked: --batch problems per generate() call, each call's rows decoding until its longest
    finishes (rows that finish leave the batch, as llmrl does now);
  - continuous: at most batch x n rows live, a finished row's slot taken by the next waiting
    sample at the next step (admission and its prefill are free here, so this is an upper bound).
Usage: python eval/bench/continuous_batching_sim.py PROBLEMS.jsonl TOKENIZER_DIR
"""
import argparse
import json

from transformers import AutoTokenizer

ap = argparse.ArgumentParser()
ap.add_argument("problems")
ap.add_argument("tokenizer")
ap.add_argument("--max-problems", type=int, default=12)
ap.add_argument("--batch", type=int, default=2)
ap.add_argument("--max-new-tokens", type=int, default=128)
# (rows, ms per decode step): session 27, idle 2-core Xeon; 1/8/32 from runtime_bench.md's
# session-24 rows (tok/s at 128 new tokens), 64/128 from --profile runs (prefill excluded).
ap.add_argument("--cost", default="1:40,8:57,32:152,64:231,128:436")
a = ap.parse_args()

pts = sorted((int(r), float(ms)) for r, ms in (p.split(":") for p in a.cost.split(",")))


def cost(rows):
    if rows == 0:
        return 0.0
    for (r0, c0), (r1, c1) in zip(pts, pts[1:]):
        if rows <= r1:
            return c0 + (c1 - c0) * (rows - r0) / (r1 - r0)
    (r0, c0), (r1, c1) = pts[-2], pts[-1]
    return c1 + (c1 - c0) * (rows - r1) / (r1 - r0)


tok = AutoTokenizer.from_pretrained(a.tokenizer)
problems = [json.loads(line) for line in open(a.problems)][: a.max_problems]
lens = [
    [min(a.max_new_tokens, len(tok(s["completion"])["input_ids"]) + 1) for s in p["samples"]]
    for p in problems
]
n = len(lens[0])

chunked = 0.0
for i in range(0, len(lens), a.batch):
    rows = [x for p in lens[i : i + a.batch] for x in p]
    for step in range(max(rows)):
        chunked += cost(sum(1 for x in rows if x > step))

queue = [x for p in lens for x in p]
live, continuous = [], 0.0
while queue or live:
    while queue and len(live) < a.batch * n:
        live.append(queue.pop(0))
    continuous += cost(len(live))
    live = [x - 1 for x in live if x > 1]

flat = [x for p in lens for x in p]
print(
    json.dumps(
        {
            "samples": len(flat),
            "mean_new_tokens": round(sum(flat) / len(flat), 1),
            "at_cap": sum(x >= a.max_new_tokens for x in flat),
            "chunked_decode_s": round(chunked / 1e3, 1),
            "continuous_decode_s": round(continuous / 1e3, 1),
            "speedup": round(chunked / continuous, 3),
        }
    )
)
