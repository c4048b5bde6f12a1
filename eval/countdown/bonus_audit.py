"""Who the training signal went to, per run, from the rollouts `llmrl train` logs
(RUN/rollouts/step_*.jsonl): malformed completions (no parseable answer: format part 0), wrong
but well-formed answers, and correct ones, with their mean advantage (after any exploration
bonus) and the share of them pushed up (advantage > 0). Usage:
  python eval/countdown/bonus_audit.py NAME=RUN_DIR ... > bonus_audit.md"""
import glob
import json
import sys

print("| run | malformed / samples | malformed: mean advantage | malformed pushed up | wrong well-formed: mean advantage | wrong well-formed pushed up | correct: mean advantage |")
print("| --- | --- | --- | --- | --- | --- | --- |")
for arg in sys.argv[1:]:
    name, run = arg.split("=", 1)
    kinds = {"malformed": [], "wrong": [], "correct": []}
    for path in sorted(glob.glob(f"{run}/rollouts/step_*.jsonl")):
        for line in open(path):
            r = json.loads(line)
            kind = "correct" if r["correct"] else "wrong" if r["parts"].get("format", 0) > 0 else "malformed"
            kinds[kind].append(r["advantage"])
    total = sum(len(v) for v in kinds.values())
    mean = lambda v: f"{sum(v) / len(v):+.3f}" if v else "–"
    up = lambda v: f"{sum(a > 0 for a in v)}/{len(v)}"
    m, w, c = kinds["malformed"], kinds["wrong"], kinds["correct"]
    print(f"| {name} | {len(m)}/{total} | {mean(m)} | {up(m)} | {mean(w)} | {up(w)} | {mean(c)} |")
