#!/usr/bin/env python3
"""A model-free reference for V on TrackRec prompts: score each test prompt by the user's leniency
as its history shows it and report the AUC against the labels, with a 95 % bootstrap interval
(1000 resamples, seed 0), as the trackrec evaluation does. MovieLens-100K-built prompts: the mean
rating in the history. TALLRec prompts (no ratings, a liked and a disliked list): the liked share.

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


def leniency(history):
    ratings = [int(x) for x in re.findall(r"rated (\d)/5", history)]
    if ratings:
        return sum(ratings) / len(ratings)
    # TALLRec: 'User Preference: "A", "B"\nUser Unpreference: "C"' (either list may be empty).
    liked = re.search(r"User Preference:(.*)", history)
    disliked = re.search(r"User Unpreference:(.*)", history)
    n_liked = len(re.findall(r'"[^"]*"', liked.group(1))) if liked else 0
    n_disliked = len(re.findall(r'"[^"]*"', disliked.group(1))) if disliked else 0
    return n_liked / max(1, n_liked + n_disliked)


def main():
    rows = [json.loads(l) for l in open(f"{sys.argv[1]}/prompts/test.jsonl")]
    labels = [r["label"] == "Yes" for r in rows]
    scores = [leniency(r["history"]) for r in rows]
    rng = random.Random(0)
    boots = []
    for _ in range(1000):
        idx = [rng.randrange(len(rows)) for _ in rows]
        a = auc([scores[i] for i in idx], [labels[i] for i in idx])
        if a is not None:
            boots.append(a)
    boots.sort()
    lo, hi = boots[int(0.025 * len(boots))], boots[int(0.975 * len(boots)) - 1]
    rated = any(re.search(r"rated \d/5", r["history"]) for r in rows)
    condition = "mean history rating (no model)" if rated else "liked share of the history (no model)"
    print(json.dumps({"condition": condition, "count": len(rows),
                      "positives": sum(labels), "auc": auc(scores, labels), "auc_ci95": [lo, hi]}))


if __name__ == "__main__":
    main()
