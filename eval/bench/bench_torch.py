#!/usr/bin/env python3
"""PyTorch+transformers side of eval/bench/run_runtime_bench.sh (the peer of examples/bench_runtime.rs).

Usage:
  bench_torch.py ids      --model M.gguf --batch 8 --seq-len 256 --out ids.txt [--text FILE]
  bench_torch.py generate --model M.gguf --batch 8 --new-tokens 128 [--iters 3] [--threads N]
  bench_torch.py train    --model M.gguf --ids ids.txt [--iters 3] [--threads N]

What it does: loads the GGUF with transformers (dequantized to f32, sdpa attention) and measures
exactly what the Rust example measures, printing one JSON line with the same keys:
- ids: tokenizes a fixed English text (default the GPL-3) and writes `batch` rows of seq_len+1 ids,
  one row per line, so both sides train on exactly the same ids.
- generate: `batch` copies of one chat prompt, generate(max_new_tokens = min_new_tokens = N,
  do_sample=False) — min_new_tokens masks EOS, as the Rust side clears its EOS ids. One short
  warm-up, then `iters` timed runs; tokens/s = batch × N / median seconds (prefill included).
- train: mean next-token cross-entropy over all positions of every row (f32 logits, computed
  explicitly rather than through `labels=` so the positions match the Rust side), then backward.
  One warm-up step, then `iters` timed steps; grads are cleared (set to None) between steps.
Memory: peak_rss_mb is the lifetime VmHWM; phase_peak_rss_mb is VmHWM after resetting it
(/proc/self/clear_refs <- 5) once the model is loaded, so loading does not hide the phase's peak.

What it deliberately doesn't do: no optimizer step, no torch.compile, no bf16, no GPU.
It is a measuring tool for a report, not part of llmrl or CI (Python is for references only).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import time

PROMPT = "Write a short story about a robot who learns to paint."


def status_mb(field: str) -> float:
    """A VmXxx field of /proc/self/status in MiB (0 where unavailable)."""
    try:
        with open("/proc/self/status") as f:
            m = re.search(rf"^{field}:\s+(\d+) kB", f.read(), re.M)
        return int(m.group(1)) / 1024 if m else 0.0
    except OSError:
        return 0.0


def reset_peak() -> None:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def load(args, need_model: bool = True):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    d, name = os.path.split(os.path.abspath(args.model))
    tok = AutoTokenizer.from_pretrained(d, gguf_file=name)
    if not need_model:
        return tok, None
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[args.dtype]
    model = AutoModelForCausalLM.from_pretrained(
        d, gguf_file=name, dtype=dtype, attn_implementation="sdpa"
    ).to(args.device)
    return tok, model


def sync(args) -> None:
    """GPU kernels run asynchronously: wait for them before reading the clock."""
    if args.device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def cmd_ids(args) -> None:
    tok, _ = load(args, need_model=False)
    with open(args.text, encoding="utf-8") as f:
        ids = tok.encode(f.read(), add_special_tokens=False)
    n = args.seq_len + 1
    need = args.batch * n
    if len(ids) < need:
        sys.exit(f"{args.text} gives {len(ids)} tokens, need {need}; pass a longer --text")
    with open(args.out, "w") as f:
        for r in range(args.batch):
            f.write(" ".join(map(str, ids[r * n : (r + 1) * n])) + "\n")
    print(f"wrote {args.batch} rows of {n} ids to {args.out}", file=sys.stderr)


def cmd_generate(args, tok, model) -> dict:
    import torch

    model.eval()
    text = tok.apply_chat_template(
        [{"role": "user", "content": args.prompt}], tokenize=False, add_generation_prompt=True
    )
    ids = tok.encode(text, add_special_tokens=False)
    x = torch.tensor([ids] * args.batch, device=args.device)  # (B, P)
    mask = torch.ones_like(x)
    eos = model.generation_config.eos_token_id
    pad = tok.pad_token_id if tok.pad_token_id is not None else (eos if isinstance(eos, int) else eos[0])

    def run(n: int):
        with torch.inference_mode():
            return model.generate(
                x,
                attention_mask=mask,
                do_sample=False,
                max_new_tokens=n,
                min_new_tokens=n,
                pad_token_id=pad,
                temperature=None,
                top_p=None,
                top_k=None,
            )

    run(min(8, args.new_tokens))  # warm-up
    times, out = [], None
    for _ in range(args.iters):
        t0 = time.perf_counter()
        out = run(args.new_tokens)
        sync(args)
        times.append(time.perf_counter() - t0)
        got = out.shape[1] - len(ids)
        if got != args.new_tokens:
            sys.exit(f"generated {got} tokens instead of {args.new_tokens}")
    secs = statistics.median(times)
    return {
        "mode": "generate",
        "batch": args.batch,
        "prompt_tokens": len(ids),
        "new_tokens": args.new_tokens,
        "times_s": times,
        "median_s": secs,
        "tokens_per_s": args.batch * args.new_tokens / secs,
        "first_ids": [int(i) for i in out[0, len(ids) : len(ids) + 16]],
    }


def cmd_train(args, tok, model) -> dict:
    import torch
    import torch.nn.functional as F

    with open(args.ids) as f:
        rows = [[int(t) for t in line.split()] for line in f if line.strip()]
    ids = torch.tensor(rows, device=args.device)  # (B, T+1)
    x, tgt = ids[:, :-1], ids[:, 1:]
    b, t = x.shape
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]

    def step():
        t0 = time.perf_counter()
        logits = model(input_ids=x).logits  # (B, T, V) f32
        loss = F.cross_entropy(logits.float().reshape(b * t, -1), tgt.reshape(-1))
        loss_v = float(loss.detach())
        fwd = time.perf_counter() - t0
        t1 = time.perf_counter()
        loss.backward()
        sync(args)
        bwd = time.perf_counter() - t1
        with_grad = sum(p.grad is not None for p in params)
        model.zero_grad(set_to_none=True)
        return fwd, bwd, loss_v, with_grad

    step()  # warm-up
    fwd, bwd, total = [], [], []
    for _ in range(args.iters):
        f_, b_, loss, with_grad = step()
        fwd.append(f_)
        bwd.append(b_)
        total.append(f_ + b_)
    med = statistics.median(total)
    return {
        "mode": "train",
        "batch": b,
        "seq_len": t,
        "loss": loss,
        "params_with_grad": with_grad,
        "params_total": len(params),
        "times_s": total,
        "median_s": med,
        "median_fwd_s": statistics.median(fwd),
        "median_bwd_s": statistics.median(bwd),
        "tokens_per_s": b * t / med,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", choices=["ids", "generate", "train"])
    ap.add_argument("--model", required=True)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--prompt", default=PROMPT)
    ap.add_argument("--ids")
    ap.add_argument("--out")
    ap.add_argument("--text", default="/usr/share/common-licenses/GPL-3")
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    args = ap.parse_args()

    if args.mode == "ids":
        if not args.out:
            sys.exit("ids needs --out FILE")
        cmd_ids(args)
        return

    import torch
    import transformers

    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    tok, model = load(args)
    load_s = time.perf_counter() - t0
    rss_after_load = status_mb("VmRSS")
    load_peak = status_mb("VmHWM")
    reset_peak()
    if args.mode == "generate":
        out = cmd_generate(args, tok, model)
    else:
        if not args.ids:
            sys.exit("train needs --ids FILE (write it with: bench_torch.py ids ...)")
        out = cmd_train(args, tok, model)
    phase_peak = status_mb("VmHWM")
    out.update(
        {
            "side": "torch",
            "threads": torch.get_num_threads(),
            "load_s": load_s,
            "rss_after_load_mb": rss_after_load,
            "load_peak_rss_mb": load_peak,
            "phase_peak_rss_mb": phase_peak,
            "peak_rss_mb": max(load_peak, phase_peak),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "device": args.device,
            "dtype": args.dtype,
        }
    )
    if args.device.startswith("cuda"):
        out["gpu_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
    print(json.dumps(out))


if __name__ == "__main__":
    main()
