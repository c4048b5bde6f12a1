#!/usr/bin/env python3
"""Markdown table of the `llmrl sid build` runs under ROOT (their report.json files).

usage: python3 eval/rec/sid_table.py ROOT
"""
import json
import pathlib
import sys

root = pathlib.Path(sys.argv[1])


def extra(r):
    if r["moved_items"] and r["collisions_mode"] in ("reassign", "sinkhorn"):
        return f" ({r['moved_extra_error']:+.2e})"
    return ""


print("| quantizer | levels × K | collisions | collision rate before → after | moved (Δ squared error each) | utilization per level | perplexity per level | recon. MSE | relative error | seconds |")
print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
for rep in sorted(root.glob("*/report.json")):
    r = json.loads(rep.read_text())
    util = " / ".join(f"{l['used']}/{l['size']}" for l in r["levels"])
    ppl = " / ".join(f"{l['perplexity']:.1f}" for l in r["levels"])
    k = "×".join(str(x) for x in r["codebook"])
    print(
        f"| {r['quantizer']} | {k} | {r['collisions_mode']} | {100 * r['before']['rate']:.2f} % → {100 * r['after']['rate']:.2f} % "
        f"| {r['moved_items']}{extra(r)} | {util} | {ppl} | {r['reconstruction_mse']:.2e} | {r['relative_error']:.3f} | {r['quantize_seconds']:.1f} |"
    )
for log in sorted(root.glob("*.log")):
    if not (root / log.stem / "report.json").exists():
        err = [l for l in log.read_text().splitlines() if l.startswith("error:")]
        print(f"\n`{log.stem}` failed: {err[-1] if err else log.read_text().splitlines()[-1]}")
