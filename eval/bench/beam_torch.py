#!/usr/bin/env python3
"""Transformers side of eval/bench/run_beam_bench.sh (the peer of examples/bench_beam.rs).

Usage:
  beam_torch.py workload --model M.gguf --prompts 4 --trie-size 1000 --out work.json
  beam_torch.py run      --model M.gguf --work work.json --beams 16 [--iters 2] [--threads N]

What it does:
- workload: `--prompts` chat prompts (a user history of a few item titles, as a recommendation
  prompt would be), tokenized with the model's chat template, and a trie of `--trie-size` random
  3-token sequences over the vocabulary (numpy seed 0; ids below 1000 are skipped so no special
  token is drawn), written as JSON {eos, prompts: [[ids]], trie: [[ids]]} that both sides read.
- run: loads the GGUF (dequantized to f32, sdpa attention), left-pads the prompts, and times
  generate(num_beams=B, num_return_sequences=B, do_sample=False, max_new_tokens=4,
  prefix_allowed_tokens_fn=trie) — the 3 ids then EOS. One warm-up, then `iters` timed runs;
  items/s = prompts x B returned sequences / median seconds, prompts/s = prompts / median seconds.
  Prints one JSON line.

What it deliberately doesn't do: no GPU, no bf16, no torch.compile. A measuring tool for a
report, not part of llmrl or CI.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

HISTORY = [
    "The Matrix; Blade Runner; Alien",
    "Toy Story; Finding Nemo; Up; Coco",
    "Pride and Prejudice; Emma",
    "Heat; Ronin; The Town; Collateral; Drive",
    "Spirited Away; Totoro",
    "Jaws; Jurassic Park; E.T.",
    "Casablanca; Vertigo; Psycho",
    "Inception; Interstellar; Tenet",
]


def load(model_path: str, need_model: bool):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    d, name = os.path.split(os.path.abspath(model_path))
    tok = AutoTokenizer.from_pretrained(d, gguf_file=name)
    if not need_model:
        return tok, None
    model = AutoModelForCausalLM.from_pretrained(
        d, gguf_file=name, dtype=torch.float32, attn_implementation="sdpa"
    ).eval()
    return tok, model


def cmd_workload(args) -> None:
    import numpy as np

    tok, _ = load(args.model, need_model=False)
    prompts = []
    for i in range(args.prompts):
        msg = f"I watched: {HISTORY[i % len(HISTORY)]}. Recommend the next item."
        text = tok.apply_chat_template(
            [{"role": "user", "content": msg}], tokenize=False, add_generation_prompt=True
        )
        prompts.append(tok.encode(text, add_special_tokens=False))
    rng = np.random.default_rng(0)
    trie = rng.integers(1000, len(tok), size=(args.trie_size, 3)).tolist()
    eos = tok.convert_tokens_to_ids("<|im_end|>")
    with open(args.out, "w") as f:
        json.dump({"eos": eos, "prompts": prompts, "trie": trie}, f)


def cmd_run(args) -> None:
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    with open(args.work) as f:
        work = json.load(f)
    _, model = load(args.model, need_model=True)
    eos, prompts = work["eos"], work["prompts"]
    root: dict = {}
    for s in work["trie"]:
        node = root
        for t in s:
            node = node.setdefault(t, {})
    width = max(len(p) for p in prompts)

    def allowed(batch_id, sent):
        node = root
        for t in sent[width:].tolist():
            node = node.get(t)
            if node is None:
                return [eos]
        return sorted(node) if node else [eos]

    x = torch.tensor([[eos] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    b = args.beams

    def run():
        with torch.inference_mode():
            return model.generate(
                input_ids=x,
                attention_mask=mask,
                num_beams=b,
                num_return_sequences=b,
                do_sample=False,
                max_new_tokens=4,
                eos_token_id=eos,
                pad_token_id=eos,
                prefix_allowed_tokens_fn=allowed,
                temperature=None,
                top_p=None,
                top_k=None,
            )

    run()  # warm-up
    times = []
    for _ in range(args.iters):
        t0 = time.perf_counter()
        out = run()
        times.append(time.perf_counter() - t0)
    secs = statistics.median(times)
    first = out[0, width:].tolist()
    print(json.dumps({
        "side": "transformers", "beams": b, "prompts": len(prompts), "trie": len(work["trie"]),
        "median_s": round(secs, 4), "items_per_s": round(len(prompts) * b / secs, 2),
        "prompts_per_s": round(len(prompts) / secs, 3), "top_beam_prompt0": first,
        "threads": torch.get_num_threads(),
    }))


def main() -> None:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("workload")
    w.add_argument("--model", required=True)
    w.add_argument("--prompts", type=int, default=4)
    w.add_argument("--trie-size", type=int, default=1000)
    w.add_argument("--out", required=True)
    r = sub.add_parser("run")
    r.add_argument("--model", required=True)
    r.add_argument("--work", required=True)
    r.add_argument("--beams", type=int, default=16)
    r.add_argument("--iters", type=int, default=2)
    r.add_argument("--threads", type=int, default=0)
    args = ap.parse_args()
    {"workload": cmd_workload, "run": cmd_run}[args.cmd](args)


if __name__ == "__main__":
    main()
