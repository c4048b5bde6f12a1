#!/usr/bin/env python3
"""Table of the SID recommender trained against the user simulator (eval/rec/run_ml100k_usersim.sh):
per run and checkpoint, the simulated reward during training and the real test metrics beside SFT.

usage: summarize_usersim_rl.py RESULTS_DIR GENREC_OUT > RESULTS_DIR/rl_table.md
RESULTS_DIR holds one folder per run (metrics.jsonl, test_metrics_step_N.json) and
test_metrics_sft.json; GENREC_OUT/test/<run>/<step>/beam50.rows.jsonl gives the diversity columns.
"""
import collections
import json
import pathlib
import sys

res, out = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])


def at10(m, model="beam50"):
    a = next(x for x in m["models"][model]["test"]["at"] if x["k"] == 10)
    return a["hr"], a["ndcg"]


def diversity(rows_path):
    rows = [json.loads(l) for l in open(rows_path)]
    top1 = collections.Counter(r["ranking"][0][0] for r in rows)
    top10 = {i[0] for r in rows for i in r["ranking"][:10]}
    item, n = top1.most_common(1)[0]
    return len(top1), len(top10), f"{item} ({n / len(rows):.0%})"


sft = json.load(open(res / "test_metrics_sft.json"))
hr, nd = at10(sft)
d1, d10, most = diversity(out / "test/sft/beam50.rows.jsonl")
print("| run | step | simulated reward (mean of the 10 steps up to it) | test HR@10 | test NDCG@10 "
      "| NDCG@10 − SFT [95 % paired bootstrap] | distinct top-1 items | distinct items in top-10 "
      "lists | most frequent top-1 (share of users) |")
print("| --- | ---: | ---: | ---: | ---: | --- | ---: | ---: | --- |")
print(f"| SFT (start) | 0 | — | {hr:.4f} | {nd:.4f} | — | {d1} | {d10} | {most} |")
for run in sorted(p for p in res.iterdir() if p.is_dir() and (p / "metrics.jsonl").exists()):
    lines = [json.loads(l) for l in open(run / "metrics.jsonl")]
    first = sum(l["reward_mean"] for l in lines[:10]) / min(10, len(lines))
    print(f"| {run.name} | 1–10 | {first:.3f} | | | | | | |")
    for t in sorted(run.glob("test_metrics_step_*.json")):
        step = int(t.stem.split("_")[-1])
        m = json.load(open(t))
        hr, nd = at10(m)
        ci = m["differences_95ci"]["beam50 - sft"]["NDCG@10"]
        window = [l["reward_mean"] for l in lines if step - 10 < l["step"] <= step]
        rew = sum(window) / len(window)
        rows = out / "test" / run.name / f"step_{step:06d}" / "beam50.rows.jsonl"
        d1, d10, most = diversity(rows)
        print(f"| {run.name} | {step} | {rew:.3f} | {hr:.4f} | {nd:.4f} | {ci['mean']:+.4f} "
              f"[{ci['lo']:+.4f}, {ci['hi']:+.4f}] | {d1} | {d10} | {most} |")
