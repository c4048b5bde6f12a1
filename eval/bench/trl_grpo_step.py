"""One GRPO step with TRL's GRPOTrainer on CPU (f32, HF generate), timed, for the side-by-side
with `llmrl train` in eval/bench/run_rl_step_bench.sh. Same model, prompts (already chat-templated,
so both sides feed identical token ids), group size, completion budget, sampling, loss and
optimizer as the llmrl recipe.

Usage: trl_grpo_step.py --model HF_DIR --prompts PROMPTS.jsonl --out RESULT.json [--threads 2]
PROMPTS.jsonl: one line per prompt: {"prompt": "<templated text>", "nums": [..], "target": n}
"""

import argparse
import json
import re
import time


def countdown_score(completion, nums, target, format_score=0.1):
    """TinyZero's rule, as llmrl's verifier: last <answer>, each number exactly once, + - * / ( ),
    1e-5 tolerance; format credit when the tag is there but the equation is wrong."""
    found = re.findall(r"<answer>(.*?)</answer>", completion, re.S)
    if not found:
        return 0.0
    eq = found[-1].strip()
    if not re.fullmatch(r"[\d+\-*/().\s]+", eq) or "**" in eq:
        return format_score
    used = sorted(int(n) for n in re.findall(r"\d+", eq))
    if used != sorted(nums):
        return format_score
    try:
        value = eval(eq, {"__builtins__": {}}, {})  # digits and + - * / ( ) only
    except Exception:
        return format_score
    return 1.0 if abs(value - target) < 1e-5 else format_score


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--prompts", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--num-generations", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--learning-rate", type=float, default=1e-5)
    args = ap.parse_args()

    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    torch.set_num_threads(args.threads)
    rows = [json.loads(l) for l in open(args.prompts)]
    ds = Dataset.from_list(rows)
    tok = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForCausalLM.from_pretrained(args.model, torch_dtype=torch.float32)

    def reward(prompts, completions, nums, target, **_):
        return [countdown_score(c, n, t) for c, n, t in zip(completions, nums, target)]

    g = args.num_generations
    cfg = GRPOConfig(
        output_dir="/tmp/trl_grpo_step",
        use_cpu=True,
        bf16=False,
        seed=0,
        max_steps=1,
        per_device_train_batch_size=g,  # one micro-batch = one group, as llmrl's recipe
        gradient_accumulation_steps=len(rows),  # all prompts' samples in one optimizer step
        num_generations=g,
        max_completion_length=args.max_new_tokens,
        temperature=1.0,
        top_p=1.0,
        learning_rate=args.learning_rate,
        weight_decay=0.01,
        max_grad_norm=1.0,
        beta=0.0,
        epsilon=0.2,
        loss_type="dapo",
        scale_rewards="group",
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        dataloader_num_workers=0,
        shuffle_dataset=False,
        # TRL defaults to gradient checkpointing (memory for speed); off, it is at its fastest,
        # as llmrl, which does not recompute activations.
        gradient_checkpointing=False,
    )

    # Time generation inside the step by wrapping the model's generate.
    gen_seconds = [0.0]
    inner = model.generate

    def timed_generate(*a, **k):
        t = time.perf_counter()
        out = inner(*a, **k)
        gen_seconds[0] += time.perf_counter() - t
        return out

    model.generate = timed_generate

    step_times = []

    class StepTimer(TrainerCallback):
        def on_step_begin(self, *_, **__):
            step_times.append(time.perf_counter())

        def on_step_end(self, *_, **__):
            step_times[-1] = time.perf_counter() - step_times[-1]

    trainer = GRPOTrainer(
        model=model,
        reward_funcs=reward,
        args=cfg,
        train_dataset=ds,
        processing_class=tok,
        callbacks=[StepTimer()],
    )
    t0 = time.perf_counter()
    trainer.train()
    total = time.perf_counter() - t0
    logs = [h for h in trainer.state.log_history if "reward" in h]
    result = {
        "trl_version": __import__("trl").__version__,
        "torch_version": torch.__version__,
        "train_seconds_total": total,
        "step_seconds": step_times[0] if step_times else total,
        "gen_seconds": gen_seconds[0],
        "reward_mean": logs[0].get("reward") if logs else None,
        "completion_length_mean": logs[0].get("completions/mean_length") if logs else None,
    }
    json.dump(result, open(args.out, "w"), indent=2)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
