#!/usr/bin/env python3
"""Markdown tables of eval/rec/run_ml100k.sh's test evaluations.

usage: eval/rec/summarize_ml100k.py OUT_DIR [NAME ...]   (default names: sft grpo rover)
Reads OUT_DIR/baselines/metrics.json and OUT_DIR/test/NAME/metrics.json (llmrl rec eval).
"""
import json
import sys
from pathlib import Path

out = Path(sys.argv[1])
names = sys.argv[2:] or ["sft", "grpo", "rover"]
KS = [5, 10, 20]


def at(block):
    return {a["k"]: a for a in block["at"]}


def row(label, block):
    a = at(block)
    cells = [f"{a[k]['hr']:.4f}" for k in KS] + [f"{a[k]['ndcg']:.4f}" for k in KS]
    return f"| {label} | " + " | ".join(cells) + " |"


print("| ranker | HR@5 | HR@10 | HR@20 | NDCG@5 | NDCG@10 | NDCG@20 |")
print("|---|---|---|---|---|---|---|")
base = json.loads((out / "baselines/metrics.json").read_text())
for m in ["popularity", "sasrec"]:
    print(row(m, base["models"][m]["test"]))
tests = {}
for n in names:
    p = out / "test" / n / "metrics.json"
    if not p.exists():
        continue
    tests[n] = json.loads(p.read_text())
    for ranker in ["beam50", "beam16", "factorized"]:
        if ranker in tests[n]["models"]:
            print(row(f"{n} {ranker}", tests[n]["models"][ranker]["test"]))

print()
print("Paired bootstrap 95 % intervals of the differences (beam50 rows):")
print()
print("| difference | HR@10 | NDCG@10 |")
print("|---|---|---|")
for n, t in tests.items():
    for key, d in sorted(t.get("differences_95ci", {}).items()):
        if not key.startswith("beam50"):
            continue
        cells = []
        for metric in ["HR@10", "NDCG@10"]:
            v = d[metric]
            cells.append(f"{v['mean']:+.4f} [{v['lo']:+.4f}, {v['hi']:+.4f}]")
        print(f"| {n}: {key} | " + " | ".join(cells) + " |")
