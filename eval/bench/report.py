#!/usr/bin/env python3
"""Turns the JSON lines of eval/bench/run_runtime_bench.sh into the markdown report.

Usage: report.py RESULTS.jsonl META.json OUT.md

Each input line is one process's result (bench_runtime.rs or bench_torch.py: same keys, `side` is
llmrl or torch); META.json holds the command and machine info the driver collected. Ratios are
written so that > 1 favours llmrl for speed (llmrl tok/s ÷ torch tok/s, torch s ÷ llmrl s) and
< 1 favours llmrl for memory (llmrl MiB ÷ torch MiB).

What it deliberately doesn't do: no statistics beyond the medians the benchmarks report.
"""

from __future__ import annotations

import json
import sys


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}×" if b else "n/a"


def main() -> None:
    if len(sys.argv) != 4:
        sys.exit(f"usage: {sys.argv[0]} RESULTS.jsonl META.json OUT.md")
    with open(sys.argv[1]) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    with open(sys.argv[2]) as f:
        meta = json.load(f)
    limits = [r for r in rows if r["mode"] == "bandwidth"]
    rows = [r for r in rows if r["mode"] != "bandwidth"]
    by = {(r["side"], r["mode"], r["batch"]): r for r in rows}
    keys = sorted({(r["mode"], r["batch"]) for r in rows})
    torch_v = next((r for r in rows if r["side"] == "torch"), {})

    out = ["# Runtime benchmark: llmrl (candle) vs PyTorch + transformers, CPU f32", ""]
    out += [
        f"Model: `{meta['model']}` (dequantized to f32 by both sides). "
        f"Threads: {meta['threads']} on both sides. Timed iterations: {meta['iters']} "
        "(median reported) after one warm-up.",
        "",
        "## Generation (greedy, EOS masked so every row yields exactly the new-token count)",
        "",
        "Speed ratio = llmrl tok/s ÷ torch tok/s (> 1: llmrl faster). Memory ratio = llmrl ÷ torch "
        "(< 1: llmrl leaner). Phase peak = VmHWM after model load (reset via /proc/self/clear_refs); "
        "lifetime peak includes loading.",
        "",
        "| batch | new tokens | llmrl tok/s | torch tok/s | speed ratio | llmrl s | torch s "
        "| llmrl phase peak MiB | torch phase peak MiB | mem ratio | llmrl lifetime peak MiB "
        "| torch lifetime peak MiB | same first 16 ids |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|:---:|",
    ]
    for mode, b in keys:
        if mode != "generate":
            continue
        l, t = by.get(("llmrl", mode, b)), by.get(("torch", mode, b))
        if not (l and t):
            out.append(f"| {b} | missing: {'llmrl' if not l else 'torch'} side failed |" + " |" * 11)
            continue
        out.append(
            f"| {b} | {l['new_tokens']} | {l['tokens_per_s']:.1f} | {t['tokens_per_s']:.1f} "
            f"| {ratio(l['tokens_per_s'], t['tokens_per_s'])} | {l['median_s']:.2f} | {t['median_s']:.2f} "
            f"| {l['phase_peak_rss_mb']:.0f} | {t['phase_peak_rss_mb']:.0f} "
            f"| {ratio(l['phase_peak_rss_mb'], t['phase_peak_rss_mb'])} "
            f"| {l['peak_rss_mb']:.0f} | {t['peak_rss_mb']:.0f} "
            f"| {'yes' if l['first_ids'] == t['first_ids'] else 'no'} |"
        )
    if limits:
        # The better of the two measurements: the machine's capacity, less whatever load took.
        read = max(r["batch1_limit_tok_s_read"] for r in limits)
        gemm = max(r["gemm_limit_tok_s"] for r in limits)
        out += [
            "",
            "### Against the machine's limits",
            "",
            "Measured by `bench_runtime --mode bandwidth` before and after the generation rows: read "
            "bandwidth " + " / ".join(f"{r['read_gbps']:.1f}" for r in limits) + " GB/s, copy "
            + " / ".join(f"{r['copy_gbps']:.1f}" for r in limits) + " GB/s (read + write), f32 GEMM "
            "(candle matmul, 1024³) " + " / ".join(f"{r['gemm_gflops']:.0f}" for r in limits)
            + " GFLOP/s. "
            f"Streaming the {limits[0]['weights_mb']:.0f} MB of f32 weights once per token allows "
            f"{read:.1f} tok/s at batch 1; at {limits[0]['gflops_per_token']:.3f} GFLOP per token "
            f"the GEMM rate allows {gemm:.0f} tok/s at any batch.",
            "",
            "| batch | llmrl tok/s | % of the batch-1 bandwidth limit | % of the GEMM-rate limit |",
            "|---:|---:|---:|---:|",
        ]
        for mode, b in keys:
            l = by.get(("llmrl", mode, b))
            if mode != "generate" or not l:
                continue
            bw = f"{100 * l['tokens_per_s'] / read:.0f} %" if b == 1 else "-"
            out.append(f"| {b} | {l['tokens_per_s']:.1f} | {bw} | {100 * l['tokens_per_s'] / gemm:.0f} % |")
    out += [
        "",
        "## Forward + backward (mean next-token NLL over all positions, f32, no optimizer step)",
        "",
        "Speed ratio = torch s ÷ llmrl s (> 1: llmrl faster).",
        "",
        "| batch × tokens | llmrl fwd+bwd s | torch fwd+bwd s | speed ratio | llmrl fwd / bwd s "
        "| torch fwd / bwd s | llmrl phase peak MiB | torch phase peak MiB | mem ratio "
        "| llmrl lifetime peak MiB | torch lifetime peak MiB | loss llmrl / torch | params with grad |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for mode, b in keys:
        if mode != "train":
            continue
        l, t = by.get(("llmrl", mode, b)), by.get(("torch", mode, b))
        if not (l and t):
            out.append(f"| {b} | missing: {'llmrl' if not l else 'torch'} side failed |" + " |" * 11)
            continue
        out.append(
            f"| {b} × {l['seq_len']} | {l['median_s']:.3f} | {t['median_s']:.3f} "
            f"| {ratio(t['median_s'], l['median_s'])} "
            f"| {l['median_fwd_s']:.3f} / {l['median_bwd_s']:.3f} "
            f"| {t['median_fwd_s']:.3f} / {t['median_bwd_s']:.3f} "
            f"| {l['phase_peak_rss_mb']:.0f} | {t['phase_peak_rss_mb']:.0f} "
            f"| {ratio(l['phase_peak_rss_mb'], t['phase_peak_rss_mb'])} "
            f"| {l['peak_rss_mb']:.0f} | {t['peak_rss_mb']:.0f} "
            f"| {l['loss']:.5f} / {t['loss']:.5f} "
            f"| {l['params_with_grad']}/{l['params_total']} vs {t['params_with_grad']}/{t['params_total']} |"
        )
    out += [
        "",
        "Model load (s, RSS after load MiB): "
        + ", ".join(
            f"{r['side']} {r['mode']} b{r['batch']}: {r['load_s']:.1f} s, {r['rss_after_load_mb']:.0f}"
            for r in rows
        ),
        "",
        "## How this was measured",
        "",
        "```",
        meta["command"],
        "```",
        "",
        f"- CPU: {meta['cpu']}; nproc: {meta['nproc']}; memory: {meta['mem']}",
        f"- load average at start / end: {meta['load_start']} / {meta['load_end']} "
        "(other work on the machine skews both sides)",
        f"- llmrl {meta['git']} ({meta['rustc']}, `cargo build --release`), "
        f"torch {torch_v.get('torch', '?')}, transformers {torch_v.get('transformers', '?')} "
        "(sdpa attention)",
        f"- date: {meta['date']}",
        "- sides: `examples/bench_runtime.rs` and `eval/bench/bench_torch.py`, one process per row and "
        "side; training ids: first rows of the GPL-3 text tokenized by the GGUF's tokenizer, shared "
        "through one file.",
        "",
    ]
    with open(sys.argv[3], "w") as f:
        f.write("\n".join(out))
    print(f"wrote {sys.argv[3]}", file=sys.stderr)


if __name__ == "__main__":
    main()
