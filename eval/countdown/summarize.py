"""Table of held-out evaluations (llmrl eval summaries) side by side, with per-solved-problem
diversity recomputed from problems.jsonl (older summaries lack it), and training-curve digests
from metrics.jsonl. Usage:
  python eval/countdown/summarize.py NAME=EVAL_DIR[:METRICS.jsonl] ... > table.md"""
import json
import sys


def digest(path, w=6):
    rows = [json.loads(l) for l in open(path)]
    acc = [r["accuracy"] for r in rows]
    rew = [r["reward_mean"] for r in rows]
    ent = [r.get("entropy", float("nan")) for r in rows]
    sec = [r["step_seconds"] for r in rows]
    k = min(w, len(rows))
    mean = lambda xs: sum(xs) / len(xs)
    return (f"{mean(rew[:k]):.3f} → {mean(rew[-k:]):.3f}", f"{mean(acc[:k]):.3f} → {mean(acc[-k:]):.3f}",
            f"{mean(ent[:k]):.3f} → {mean(ent[-k:]):.3f}", f"{mean(sec):.0f}", len(rows))


ks = None
lines = []
for arg in sys.argv[1:]:
    name, rest = arg.split("=", 1)
    eval_dir, _, metrics = rest.partition(":")
    s = json.load(open(f"{eval_dir}/summary.json"))
    probs = [json.loads(l) for l in open(f"{eval_dir}/problems.jsonl")]
    solved = [p for p in probs if p["num_correct"] > 0]
    per_solved = sum(p["distinct_correct"] for p in solved) / max(1, len(solved))
    ks = ks or sorted(int(k) for k in s["pass_at_k"])
    cells = [f"{s['pass_at_k'][str(k)]:.3f}" for k in ks]
    cells += [f"{len(solved)}/{len(probs)}", f"{per_solved:.2f}", f"{s['maj_at_n']:.3f}", f"{s['distinct_n'][3]:.3f}"]
    d = digest(metrics) if metrics else ("", "", "", "", "")
    lines.append(f"| {name} | " + " | ".join(cells) + " | " + " | ".join(str(x) for x in d) + " |")
head = [f"pass@{k}" for k in ks] + ["solved", "distinct correct / solved", "maj@n", "distinct-4"]
head += ["train reward (first → last 6 steps)", "train accuracy", "entropy", "s/step", "steps"]
print("| model | " + " | ".join(head) + " |")
print("| --- " * (len(head) + 1) + "|")
print("\n".join(lines))
