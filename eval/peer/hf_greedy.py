#!/usr/bin/env python3
"""Reference greedy generations from a GGUF model through HF transformers (the peer we match).

Usage: hf_greedy.py GGUF_PATH OUT.json
  e.g. /work/pyenv/bin/python eval/peer/hf_greedy.py \
         models/SmolLM2-135M-Instruct/SmolLM2-135M-Instruct.Q4_1.gguf tests/fixtures/smollm2_greedy.json

What it does: loads the GGUF with transformers (dequantized to f32, eager attention), renders each
prompt with the chat template stored in the GGUF (add_generation_prompt=True), greedily generates
exactly NEW_TOKENS tokens (min_new_tokens = max_new_tokens, so eos never stops it early and never
gets picked), and writes per prompt: rendered text, prompt ids, new ids, decoded new text.

What it deliberately doesn't do: it is not part of llmrl or CI (Python is for references only); it
doesn't sample. Note that because min_new_tokens masks eos, a Rust greedy loop must also mask eos
for the comparison to hold past the point where the model would have stopped; "eos_masked" in the
output says which ids were masked, and "stop_index" says where an unmasked run would have stopped.
"margins" gives the top-1 minus top-2 logit gap at each generated step, so a test can compare only
up to the first near-tie.
"""

from __future__ import annotations

import json
import os
import sys

import torch
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer

NEW_TOKENS = 64
PROMPTS = [
    "What is the capital of France? Answer in one sentence.",
    "Write a short poem about the sea.",
]


def main() -> None:
    if len(sys.argv) != 3:
        sys.exit(f"usage: {sys.argv[0]} GGUF_PATH OUT.json")
    gguf_path, out_path = sys.argv[1], sys.argv[2]
    d, name = os.path.split(os.path.abspath(gguf_path))

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(d, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(
        d, gguf_file=name, dtype=torch.float32, attn_implementation="eager"
    )
    model.eval()

    eos = model.generation_config.eos_token_id
    eos_ids = sorted({eos} if isinstance(eos, int) else set(eos or []))
    results = []
    for content in PROMPTS:
        messages = [{"role": "user", "content": content}]
        text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        ids = tok.encode(text, add_special_tokens=False)
        with torch.no_grad():
            out = model.generate(
                torch.tensor([ids]),
                attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                do_sample=False,
                min_new_tokens=NEW_TOKENS,
                max_new_tokens=NEW_TOKENS,
                pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else eos_ids[0],
            )
        new_ids = [int(i) for i in out[0, len(ids) :]]
        # Where plain greedy (eos not masked) would have stopped: the first step whose unmasked
        # argmax is an eos id. Recomputed with one full forward over prompt + generated tokens.
        with torch.no_grad():
            logits = model(out).logits[0, len(ids) - 1 : -1]  # (NEW_TOKENS, V)
        unmasked = logits.argmax(-1).tolist()
        # Top-1 minus top-2 gap per step with eos masked, as generate() saw it: where it is tiny, a
        # faithful reimplementation may still flip the token through float noise alone.
        masked = logits.clone()
        masked[:, eos_ids] = float("-inf")
        top2 = masked.topk(2, dim=-1).values
        margins = [round(float(m), 5) for m in (top2[:, 0] - top2[:, 1])]
        assert masked.argmax(-1).tolist() == new_ids, "full forward disagrees with generate()"
        stop_index = next(
            (i for i, t in enumerate(unmasked) if t in eos_ids and unmasked[:i] == new_ids[:i]), None
        )
        results.append(
            {
                "messages": messages,
                "text": text,
                "prompt_ids": ids,
                "new_ids": new_ids,
                "new_text": tok.decode(new_ids, skip_special_tokens=False),
                "stop_index": stop_index,
                "margins": margins,
            }
        )
        print(f"--- {content!r}\n{tok.decode(new_ids)}", file=sys.stderr)

    doc = {
        "generator": {
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "gguf_file": name,
            "dtype": "float32",
            "attn_implementation": "eager",
            "new_tokens": NEW_TOKENS,
        },
        "bos_token_id": tok.bos_token_id,
        "eos_masked": eos_ids,
        "pad_token_id": tok.pad_token_id,
        "chat_template": tok.chat_template,
        "prompts": results,
    }
    with open(out_path, "w") as f:
        json.dump(doc, f, indent=1, ensure_ascii=False)
        f.write("\n")


if __name__ == "__main__":
    main()
