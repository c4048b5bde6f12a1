"""Table of held-out evaluations (llmrl eval output dirs) side by side, recomputed from each
problems.jsonl over the first P problems (so a model evaluated on more problems is compared on the
same ones), with training-curve digests from metrics.jsonl. Usage:
  python eval/countdown/summarize.py P NAME=EVAL_DIR[:METRICS.jsonl] ... > table.md"""
import json
import sys


def digest(path, w=8):
    rows = [json.loads(l) for l in open(path)]
    k = min(w, len(rows))
    mean = lambda key, part: sum(r.get(key, float("nan")) for r in part) / len(part)
    arrow = lambda key: f"{mean(key, rows[:k]):.3f} → {mean(key, rows[-k:]):.3f}"
    return [arrow("accuracy"), arrow("entropy"), arrow("format_rate"), f"{mean('step_seconds', rows):.0f}", str(len(rows))]


P = int(sys.argv[1])
ks = None
lines = []
for arg in sys.argv[2:]:
    name, rest = arg.split("=", 1)
    eval_dir, _, metrics = rest.partition(":")
    probs = [json.loads(l) for l in open(f"{eval_dir}/problems.jsonl")][:P]
    assert len(probs) == P, f"{eval_dir} has {len(probs)} problems, fewer than {P}"
    ks = ks or sorted(int(k) for k in probs[0]["pass_at_k"])
    avg = lambda f: sum(f(p) for p in probs) / len(probs)
    solved = [p for p in probs if p["num_correct"] > 0]
    per_solved = sum(p["distinct_correct"] for p in solved) / max(1, len(solved))
    cells = [f"{avg(lambda p: p['pass_at_k'][str(k)]):.3f}" for k in ks]
    cells += [f"{len(solved)}/{len(probs)}", f"{per_solved:.2f}", f"{avg(lambda p: float(p['maj_correct'])):.3f}",
              f"{avg(lambda p: p['mean_score']):.3f}", f"{avg(lambda p: p['distinct_n'][3]):.3f}"]
    cells += digest(metrics) if metrics else [""] * 5
    lines.append(f"| {name} | " + " | ".join(cells) + " |")
head = [f"pass@{k}" for k in ks] + ["solved", "distinct correct / solved", "maj@n", "mean score", "distinct-4"]
head += ["train accuracy (first → last 8 steps)", "entropy", "format rate", "s/step", "steps"]
print("| model | " + " | ".join(head) + " |")
print("| --- " * (len(head) + 1) + "|")
print("\n".join(lines))
