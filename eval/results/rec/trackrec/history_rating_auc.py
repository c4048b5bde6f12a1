#!/usr/bin/env python3
"""A model-free reference for V on MovieLens-100K-built TrackRec prompts: score each test prompt
by the mean rating in its history (the user's leniency) and report the AUC against the labels,
with a 95 % bootstrap interval (1000 resamples, seed 0), as the trackrec evaluation does.

Usage: history_rating_auc.py RUN_DIR   (reads RUN_DIR/prompts/test.jsonl)
"""
import json
import random
import re
import sys


def auc(scores, labels):
    pos = [s for s, y in zip(scores, labels) if y]
    neg = [s for s, y in zip(scores, labels) if not y]
    if not pos or not neg:
        return None
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def main():
    rows = [json.loads(l) for l in open(f"{sys.argv[1]}/prompts/test.jsonl")]
    labels = [r["label"] == "Yes" for r in rows]
    scores = []
    for r in rows:
        ratings = [int(x) for x in re.findall(r"rated (\d)/5", r["history"])]
        scores.append(sum(ratings) / max(1, len(ratings)))
    rng = random.Random(0)
    boots = []
    for _ in range(1000):
        idx = [rng.randrange(len(rows)) for _ in rows]
        a = auc([scores[i] for i in idx], [labels[i] for i in idx])
        if a is not None:
            boots.append(a)
    boots.sort()
    lo, hi = boots[int(0.025 * len(boots))], boots[int(0.975 * len(boots)) - 1]
    print(json.dumps({"condition": "mean history rating (no model)", "count": len(rows),
                      "positives": sum(labels), "auc": auc(scores, labels), "auc_ci95": [lo, hi]}))


if __name__ == "__main__":
    main()
