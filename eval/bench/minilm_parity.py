#!/usr/bin/env python3
"""Whole-catalogue check of `llmrl rec embed` against sentence-transformers on a RecBole .item
file with MovieLens columns (movie_title, release_year, class): rebuilds the texts with the
template of src/rec/items.rs (title; year: Y; genres: a, b), encodes them with
sentence-transformers (CPU, batch 32), and reports the time and the largest difference from the
embeddings llmrl wrote. Research data is read in place; nothing is written.

Needs: pip install torch sentence-transformers safetensors
Usage: python3 eval/bench/minilm_parity.py ITEM_FILE LLMRL_OUT.safetensors [MODEL_DIR]
"""

import json
import sys
import time

import numpy as np
from safetensors import safe_open
from sentence_transformers import SentenceTransformer

item_file, ours = sys.argv[1], sys.argv[2]
model_dir = sys.argv[3] if len(sys.argv) > 3 else "models/all-MiniLM-L6-v2"


def squash(s):
    return " ".join(s.split())


ids, texts = [], []
with open(item_file, encoding="utf-8") as f:
    header = [c.split(":")[0] for c in f.readline().rstrip("\n").split("\t")]
    for line in f:
        if not line.strip():
            continue
        row = dict(zip(header, line.rstrip("\n").split("\t")))
        parts = [squash(row["movie_title"])] if squash(row["movie_title"]) else []
        if squash(row.get("release_year", "")):
            parts.append(f"year: {squash(row['release_year'])}")
        genres = []
        for g in row.get("class", "").split():
            if g not in genres:
                genres.append(g)
        if genres:
            parts.append("genres: " + ", ".join(genres))
        ids.append(row["item_id"].strip())
        texts.append("; ".join(parts))

with safe_open(ours, "np") as f:
    got = f.get_tensor("embeddings")
    meta = f.metadata()
assert json.loads(meta["item_ids"]) == ids, "row order differs"

model = SentenceTransformer(model_dir, device="cpu")
t0 = time.time()
want = model.encode(texts, batch_size=32, convert_to_numpy=True)
secs = time.time() - t0
diff = np.abs(got - want.astype(np.float32))
print(
    f"{len(texts)} items: sentence-transformers {secs:.2f} s ({len(texts) / secs:.1f} items/s); "
    f"max |llmrl - st| {diff.max():.2e} (item {ids[int(diff.max(axis=1).argmax())]}), "
    f"mean {diff.mean():.2e}; min cosine {float((got * want).sum(axis=1).min()):.7f}"
)
