"""A toy external verifier for the smoke recipe: scores a completion by the share of its
characters that are vowels, so a tiny random model gets varied, non-zero rewards and every
algorithm has a gradient. Speaks llmrl's JSON-lines protocol: one request per line in, one
{"score": ...} per line out."""
import json
import sys

for line in sys.stdin:
    req = json.loads(line)
    text = req.get("completion", "")
    score = sum(c in "aeiouAEIOU" for c in text) / max(len(text), 1)
    print(json.dumps({"score": score, "correct": score > 0.3, "reason": "vowel share"}), flush=True)
