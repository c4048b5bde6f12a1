//! The training loop, top to bottom.
//!
//! RL step: sample prompts → generate n per prompt → verify → advantages (+ exploration bonus)
//! → for each pass and mini-batch: micro-batched loss and backward with gradient accumulation →
//! clip → optimizer step → log; checkpoint and evaluate every N steps. SFT runs the same loop with
//! the dataset's reference completions in place of rollouts and the masked NLL as the loss.
//!
//! Exact resume: sampling seeds, mini-batch order and the data order are functions of (seed, step),
//! and a checkpoint holds the weights, optimizer moments, data cursor and exploration state, so a
//! resumed run reproduces the uninterrupted one line by line (timings aside).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};
use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Tensor};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::algo::{
    self, Algorithm, LogProbStats, Metrics, MinibatchShape, SequenceTargets, TokenBatch,
};
use crate::data::{DataCursor, Example};
use crate::generate::{self, Completion, Finish};
use crate::model::{self, ops, Decoder, LoadedModel, Mode, Params, Positions, SharedPrefixBatch};
use crate::optim::{self, AdamW};
use crate::prompting::Prompter;
use crate::recipe::Plan;
use crate::reward::{self, Score, Verifier};
use crate::run_dir::RunDir;

/// What a checkpoint's `state.json` holds besides the model and optimizer files.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TrainState {
    pub step: u64,
    pub cursor: DataCursor,
    pub skipped_steps: u64,
    pub seed: u64,
}

/// Metric keys that measure time; they differ between runs and are ignored by resume tests.
pub const TIMING_KEYS: [&str; 4] = [
    "tokens_per_s",
    "gen_seconds",
    "train_seconds",
    "step_seconds",
];

/// Train according to `plan` into `run`, resuming from its latest checkpoint when `resume`.
pub fn train(plan: &Plan, run: &RunDir, resume: bool) -> Result<()> {
    let r = &plan.recipe;
    let (device, dtype) = crate::cli::parse_device(&r.model.device)?;

    // Weights: the recipe's model, or the latest checkpoint's when resuming.
    let mut state = TrainState {
        step: 0,
        cursor: DataCursor::new(r.seed),
        skipped_steps: 0,
        seed: r.seed,
    };
    let ckpt = if resume {
        run.latest_checkpoint()?
    } else {
        None
    };
    let m: LoadedModel = match &ckpt {
        Some((_, dir)) => model::load(&model::ModelSource::Dir(dir.join("model")), &device, dtype)
            .with_context(|| format!("loading checkpoint {}", dir.display()))?,
        None => model::load(&plan.model_source, &device, dtype)?,
    };
    let params = m.params.clone();
    let mut opt = AdamW::new(params.named_vars(), r.optimizer.adamw())?;
    if let Some((step, dir)) = &ckpt {
        let s: TrainState = serde_json::from_str(&std::fs::read_to_string(dir.join("state.json"))?)
            .with_context(|| format!("reading {}/state.json", dir.display()))?;
        opt.load(&dir.join("optimizer.safetensors"))?;
        state = s;
        run.truncate_jsonl_after("metrics.jsonl", *step)?;
        run.truncate_jsonl_after("eval.jsonl", *step)?;
        eprintln!("resuming {} from step {step}", run.root.display());
    } else if resume {
        eprintln!(
            "no checkpoint in {} yet: starting from step 0",
            run.root.display()
        );
        std::fs::remove_file(run.path("metrics.jsonl")).ok();
    }
    let algo: Option<Box<dyn Algorithm>> = if plan.is_sft {
        None
    } else {
        Some(algo::build(&r.algorithm)?)
    };
    // A frozen reference is the model as loaded from the recipe (never a checkpoint).
    let reference: Option<Params> = match &algo {
        Some(a) if a.needs_reference() => Some(if ckpt.is_some() {
            model::load(&plan.model_source, &device, dtype)?.params
        } else {
            params.deep_clone()?
        }),
        _ => None,
    };
    let mut explore = match &r.exploration {
        Some(c) => Some(crate::explore::build(c, r.seed ^ 0x1_3E47)?),
        None => None,
    };
    if let (Some(e), Some((_, dir))) = (explore.as_mut(), &ckpt) {
        e.load(&dir.join("explore"))?;
    }
    let verifier = reward::build(&r.verifier)?;
    let prompter = Prompter {
        template: &plan.prompt,
        chat: r.prompt.chat,
        system: r.prompt.system.as_deref(),
    };
    let ctx = Ctx {
        plan,
        device: &device,
        model: &m,
        params: &params,
        reference: reference.as_ref(),
    };

    let total = r.train.max_steps;
    let pb = indicatif::ProgressBar::new(total);
    pb.set_style(
        indicatif::ProgressStyle::with_template(
            "{bar:30} {pos}/{len} [{elapsed_precise}<{eta_precise}] {msg}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    pb.set_position(state.step);
    while state.step < total {
        let step = state.step + 1;
        let t0 = Instant::now();
        let idx = state
            .cursor
            .next_batch(plan.train_examples.len(), r.train.prompts_per_step);
        let examples: Vec<&Example> = idx.iter().map(|&i| &plan.train_examples[i]).collect();
        let lr = r
            .optimizer
            .lr_schedule
            .lr(r.optimizer.learning_rate, step - 1, total);
        let mut metrics = match &algo {
            Some(a) => rl_step(
                &ctx,
                a.as_ref(),
                verifier.as_ref(),
                explore.as_mut(),
                &prompter,
                &examples,
                step,
                lr,
                &mut opt,
                run,
            )?,
            None => sft_step(&ctx, &prompter, &examples, lr, &mut opt)?,
        };
        if metrics.get("skipped").copied() == Some(1.0) {
            state.skipped_steps += 1;
        }
        metrics.insert("skipped_steps".into(), state.skipped_steps as f64);
        metrics.insert("lr".into(), lr);
        metrics.insert("step_seconds".into(), t0.elapsed().as_secs_f64());
        state.step = step;
        let mut line = json!({ "step": step, "epoch": state.cursor.epoch });
        for (k, v) in &metrics {
            line[k] = if v.is_finite() { json!(v) } else { Value::Null };
        }
        run.append_jsonl("metrics.jsonl", &line)?;
        pb.set_message(format!(
            "reward {:.3} acc {:.2} len {:.0}",
            metrics.get("reward_mean").copied().unwrap_or(f64::NAN),
            metrics.get("accuracy").copied().unwrap_or(f64::NAN),
            metrics
                .get("response_length_mean")
                .copied()
                .unwrap_or(f64::NAN)
        ));
        pb.inc(1);

        if r.eval.every > 0 && step.is_multiple_of(r.eval.every) {
            let summary = evaluate_during_training(&ctx, verifier.as_ref(), &prompter)?;
            let mut line = serde_json::to_value(&summary)?;
            line["step"] = json!(step);
            run.append_jsonl("eval.jsonl", &line)?;
        }
        if (r.checkpoint.every > 0 && step.is_multiple_of(r.checkpoint.every)) || step == total {
            run.save_checkpoint(step, r.checkpoint.keep_last, |dir| {
                model::save_hf_dir(
                    &dir.join("model"),
                    &m.config,
                    &params,
                    &m.tokenizer,
                    m.generation_config.as_ref(),
                )?;
                opt.save(&dir.join("optimizer.safetensors"))?;
                std::fs::write(
                    dir.join("state.json"),
                    serde_json::to_string_pretty(&state)?,
                )?;
                if let Some(e) = &explore {
                    e.save(&dir.join("explore"))?;
                }
                Ok(())
            })?;
        }
    }
    pb.finish();
    Ok(())
}

struct Ctx<'a> {
    plan: &'a Plan,
    device: &'a Device,
    model: &'a LoadedModel,
    params: &'a Params,
    reference: Option<&'a Params>,
}

/// One scored sample of a rollout batch.
struct Sample {
    prompt: std::sync::Arc<Vec<u32>>,
    completion: Completion,
    score: Score,
    advantage: f32,
    /// Whether this sample contributes to the loss (`mask_truncated_completions`).
    in_loss: bool,
}

#[allow(clippy::too_many_arguments)]
fn rl_step(
    ctx: &Ctx,
    algo: &dyn Algorithm,
    verifier: &dyn Verifier,
    explore: Option<&mut crate::explore::Imentor>,
    prompter: &Prompter,
    examples: &[&Example],
    step: u64,
    lr: f64,
    opt: &mut AdamW,
    run: &RunDir,
) -> Result<Metrics> {
    let r = &ctx.plan.recipe;
    let g = r.generation.num_generations;
    let tok = &ctx.model.tokenizer;

    // 1. Generate n samples per prompt with the current weights (no graph).
    let t_gen = Instant::now();
    let prompts: Vec<Vec<u32>> = examples
        .iter()
        .map(|ex| prompter.ids(tok, ex))
        .collect::<Result<_>>()?;
    let seeds: Vec<Vec<u64>> = (0..examples.len())
        .map(|p| {
            (0..g)
                .map(|s| {
                    generate::sample_seed(
                        r.seed ^ step.wrapping_mul(0xA24B_AED4_963E_E407),
                        p as u64,
                        s as u64,
                    )
                })
                .collect()
        })
        .collect();
    let infer = Decoder::new(&ctx.model.config, ctx.params, Mode::Infer)?;
    let completions = generate::generate(
        &infer,
        tok,
        &prompts,
        &seeds,
        &ctx.plan.sampling,
        ctx.device,
    )?;
    let gen_seconds = t_gen.elapsed().as_secs_f64();

    // 2. Verify (pure, parallel), 3. advantages.
    let scores: Vec<Score> = completions
        .par_iter()
        .map(|c| {
            let mut ex = examples[c.prompt_index].clone();
            ex.fields.insert(
                "_prompt".into(),
                Value::String(tok.decode(&prompts[c.prompt_index], false)),
            );
            verifier.score(&ex, &c.text)
        })
        .collect();
    let rewards: Vec<f32> = scores.iter().map(|s| s.value).collect();
    let mut advantages = algo.advantages(&rewards, g);
    // i-MENTOR: a novelty bonus added after group normalization (advantage-preserving).
    let mut explore_metrics = Metrics::new();
    if let Some(e) = explore {
        let seqs: Vec<Vec<u32>> = completions
            .iter()
            .map(|c| {
                prompts[c.prompt_index]
                    .iter()
                    .chain(&c.token_ids)
                    .copied()
                    .collect()
            })
            .collect();
        let outcomes: Vec<crate::explore::Outcome> = scores
            .iter()
            .map(|s| crate::explore::Outcome {
                correct: s.correct,
                answered: s.answer.is_some(),
            })
            .collect();
        explore_metrics = e
            .apply(&seqs, &outcomes, &mut advantages, g, step - 1)?
            .metrics();
    }
    let prompt_arcs: Vec<_> = prompts.into_iter().map(std::sync::Arc::new).collect();
    let samples: Vec<Sample> = completions
        .into_iter()
        .zip(scores)
        .zip(advantages)
        .map(|((c, score), advantage)| Sample {
            prompt: prompt_arcs[c.prompt_index].clone(),
            in_loss: !(r.train.mask_truncated_completions && c.finish_reason == Finish::Length),
            completion: c,
            score,
            advantage,
        })
        .collect();
    let mut metrics = rollout_metrics(&samples);
    metrics.extend(explore_metrics);

    if r.log.rollouts_every > 0 && step.is_multiple_of(r.log.rollouts_every) {
        dump_rollouts(run, step, examples, &samples, tok)?;
    }

    // 4. Optimize: num_iterations passes × num_minibatches optimizer steps over the batch.
    let t_train = Instant::now();
    let mut order: Vec<usize> = (0..samples.len())
        .filter(|&i| samples[i].in_loss && !samples[i].completion.token_ids.is_empty())
        .collect();
    let mut rng =
        ChaCha8Rng::seed_from_u64(r.seed ^ step.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0x5EED);
    let n_mb = ctx.plan.num_minibatches;
    let skip_zero = r.train.skip_zero_advantage && algo.zero_advantage_has_no_gradient();
    let mut acc = MetricAcc::default();
    let mut grad_norms = Vec::new();
    let mut losses = Vec::new();
    let mut skipped = false;
    for _ in 0..r.train.num_iterations {
        if r.train.shuffle_minibatches {
            order.shuffle(&mut rng);
        }
        for mb in split_even(&order, n_mb) {
            if mb.is_empty() {
                continue;
            }
            let shape = MinibatchShape {
                num_sequences: mb.len(),
                num_tokens: mb
                    .iter()
                    .map(|&i| samples[i].completion.token_ids.len())
                    .sum(),
                max_new_tokens: r.generation.max_new_tokens,
            };
            // Samples whose loss term has no gradient (zero advantage in a clipped-surrogate
            // loss without KL) skip the forward/backward; they still count in `shape`, the
            // normalizer, exactly as in the full loss.
            let mut active: Vec<usize> = mb
                .iter()
                .copied()
                .filter(|&i| !(skip_zero && samples[i].advantage == 0.0))
                .collect();
            // A prompt's samples go to the same micro-batches, so its prefix runs once.
            active.sort_by_key(|&i| (samples[i].completion.prompt_index, i));
            let mut grads = GradStore::default();
            let mut mb_loss = 0.0;
            if active.is_empty() {
                // All-zero gradient: still an optimizer step (moments and weight decay move on).
                for (_, var) in ctx.params.named_vars() {
                    grads.insert(var.as_tensor(), var.as_tensor().zeros_like()?);
                }
            }
            for micro in active.chunks(r.train.micro_batch_size) {
                let (loss, m) = rl_micro_loss(ctx, algo, &samples, micro, &shape)?;
                acc.add(
                    &m,
                    micro
                        .iter()
                        .map(|&i| samples[i].completion.token_ids.len())
                        .sum::<usize>() as f64,
                );
                mb_loss += loss.to_dtype(DType::F32)?.to_scalar::<f32>()? as f64;
                grads.extend(loss.backward()?)?;
            }
            // The mini-batch objective: micro-batch losses are already weighted to add up to it.
            losses.push(mb_loss);
            match apply_update(ctx.params, opt, &mut grads, r.train.max_grad_norm, lr)? {
                Some(norm) => grad_norms.push(norm),
                None => skipped = true,
            }
        }
    }
    metrics.extend(acc.mean());
    metrics.insert(
        "loss".into(),
        losses.iter().sum::<f64>() / losses.len().max(1) as f64,
    );
    metrics.insert(
        "grad_norm".into(),
        grad_norms.iter().sum::<f64>() / grad_norms.len().max(1) as f64,
    );
    metrics.insert("optimizer_steps".into(), grad_norms.len() as f64);
    metrics.insert("skipped".into(), if skipped { 1.0 } else { 0.0 });
    metrics.insert("gen_seconds".into(), gen_seconds);
    metrics.insert("train_seconds".into(), t_train.elapsed().as_secs_f64());
    let gen_tokens =
        metrics.get("response_length_mean").copied().unwrap_or(0.0) * (examples.len() * g) as f64;
    metrics.insert("tokens_per_s".into(), gen_tokens / gen_seconds.max(1e-9));
    Ok(metrics)
}

/// Split `xs` into `n` contiguous parts of near-equal size.
fn split_even(xs: &[usize], n: usize) -> Vec<&[usize]> {
    let n = n.max(1);
    let base = xs.len() / n;
    let extra = xs.len() % n;
    let mut out = Vec::with_capacity(n);
    let mut start = 0;
    for i in 0..n {
        let len = base + usize::from(i < extra);
        out.push(&xs[start..start + len]);
        start += len;
    }
    out
}

/// Clip and step; `None` (and no update) when the gradient is not finite.
fn apply_update(
    params: &Params,
    opt: &mut AdamW,
    grads: &mut GradStore,
    max_norm: f64,
    lr: f64,
) -> Result<Option<f64>> {
    let named = params.named_vars();
    let norm = optim::clip_grad_norm(&named, grads, max_norm)?;
    if !norm.is_finite() {
        return Ok(None);
    }
    opt.step(grads, lr)?;
    Ok(Some(norm))
}

/// Per-token statistics of the completions of `seqs` (prompt, completion) under `dec`, flattened
/// sequence by sequence: (N,) each, N = total completion tokens.
///
/// Samples of the same prompt (a GRPO group) share one pass over the prompt
/// ([`SharedPrefixBatch`]); a batch without repeated prompts runs row by row.
pub fn completion_stats(
    dec: &Decoder,
    seqs: &[(&[u32], &[u32])],
    temperature: f64,
    device: &Device,
) -> Result<LogProbStats> {
    let mut prompts: Vec<&[u32]> = Vec::new();
    let mut owner = Vec::with_capacity(seqs.len());
    for (p, _) in seqs {
        match prompts.iter().position(|q| q == p) {
            Some(i) => owner.push(i),
            None => {
                owner.push(prompts.len());
                prompts.push(p);
            }
        }
    }
    let shares = prompts.len() < seqs.len();
    if !shares || seqs.iter().any(|(p, c)| p.is_empty() || c.is_empty()) {
        return completion_stats_unshared(dec, seqs, temperature, device);
    }
    // The prefix is the prompt minus its last token; each suffix starts with that token, so the
    // suffix's hidden state j predicts completion token j and the prefix needs no LM head.
    let prefixes: Vec<&[u32]> = prompts.iter().map(|p| &p[..p.len() - 1]).collect();
    let suffixes: Vec<Vec<u32>> = seqs
        .iter()
        .map(|(p, c)| {
            std::iter::once(p[p.len() - 1])
                .chain(c[..c.len() - 1].iter().copied())
                .collect()
        })
        .collect();
    let suffix_refs: Vec<&[u32]> = suffixes.iter().map(|s| s.as_slice()).collect();
    let batch = SharedPrefixBatch::new(&prefixes, &suffix_refs, owner, device)?;
    let hidden = dec.forward_hidden_shared(&batch)?; // (B, T, H)
    let t = hidden.dim(1)?;
    let rows: Vec<u32> = seqs
        .iter()
        .enumerate()
        .flat_map(|(b, (_, c))| (0..c.len()).map(move |j| (b * t + j) as u32))
        .collect();
    stats_at_rows(dec, &hidden, rows, seqs, temperature, device)
}

/// [`completion_stats`] with every row run in full (prompt + completion): the reference the
/// shared-prefix path is tested against, and the path for batches of distinct prompts.
pub fn completion_stats_unshared(
    dec: &Decoder,
    seqs: &[(&[u32], &[u32])],
    temperature: f64,
    device: &Device,
) -> Result<LogProbStats> {
    let lens: Vec<usize> = seqs.iter().map(|(p, c)| p.len() + c.len() - 1).collect();
    let t = lens.iter().copied().max().unwrap_or(1);
    let mut ids = Vec::with_capacity(seqs.len() * t);
    let mut rows = Vec::new();
    for (b, (p, c)) in seqs.iter().enumerate() {
        let full: Vec<u32> = p.iter().chain(c.iter()).copied().collect();
        let input = &full[..full.len() - 1];
        ids.extend_from_slice(input);
        ids.extend(std::iter::repeat_n(0u32, t - input.len()));
        // Logits at position P−1+j predict completion token j.
        rows.extend((0..c.len()).map(|j| (b * t + p.len() - 1 + j) as u32));
    }
    let pos = Positions::right_padded(&lens, t, device)?;
    let x = Tensor::from_vec(ids, (seqs.len(), t), device)?;
    let hidden = dec.forward_hidden(&x, &pos, None)?; // (B, T, H)
    stats_at_rows(dec, &hidden, rows, seqs, temperature, device)
}

/// Log-prob statistics of the completion tokens from the hidden states (B, T, H) at `rows` (flat
/// B*T indices, one per completion token, sequence by sequence). Only those positions go through
/// the LM head: the (N, V) logits are the biggest tensor.
fn stats_at_rows(
    dec: &Decoder,
    hidden: &Tensor,
    rows: Vec<u32>,
    seqs: &[(&[u32], &[u32])],
    temperature: f64,
    device: &Device,
) -> Result<LogProbStats> {
    let (b, t, h) = hidden.dims3()?;
    let targets: Vec<u32> = seqs.iter().flat_map(|(_, c)| c.iter().copied()).collect();
    let n = rows.len();
    let rows = Tensor::from_vec(rows, n, device)?;
    let picked = hidden.reshape((b * t, h))?.index_select(&rows, 0)?; // (N, H)
    let logits = dec.logits(&picked)?; // (N, V)
    let targets = Tensor::from_vec(targets, n, device)?;
    Ok(ops::logprob_stats(&logits, &targets, temperature)?)
}

fn rl_micro_loss(
    ctx: &Ctx,
    algo: &dyn Algorithm,
    samples: &[Sample],
    micro: &[usize],
    shape: &MinibatchShape,
) -> Result<(Tensor, Metrics)> {
    let dev = ctx.device;
    let temp = ctx.plan.sampling.logprob_temperature();
    let seqs: Vec<(&[u32], &[u32])> = micro
        .iter()
        .map(|&i| {
            (
                samples[i].prompt.as_slice(),
                samples[i].completion.token_ids.as_slice(),
            )
        })
        .collect();
    let train = Decoder::new(&ctx.model.config, ctx.params, Mode::Train)?;
    let cur = completion_stats(&train, &seqs, temp, dev)?;
    let ref_logp = match ctx.reference {
        Some(p) => Some(
            completion_stats(
                &Decoder::new(&ctx.model.config, p, Mode::Infer)?,
                &seqs,
                temp,
                dev,
            )?
            .logp
            .detach(),
        ),
        None => None,
    };
    let seqs: Vec<SequenceTargets> = micro
        .iter()
        .map(|&i| {
            let c = &samples[i].completion;
            SequenceTargets {
                old_logp: &c.logprobs,
                old_mean_logp: &c.mean_logprobs,
                advantage: samples[i].advantage,
                weight: algo.token_weight(c.token_ids.len(), shape),
            }
        })
        .collect();
    let batch = TokenBatch::new(&seqs, ref_logp, dev)?;
    algo.loss(&cur, &batch)
}

/// Token-weighted running means of micro-batch metrics.
#[derive(Default)]
struct MetricAcc {
    sums: BTreeMap<String, (f64, f64)>,
}

impl MetricAcc {
    fn add(&mut self, m: &Metrics, weight: f64) {
        for (k, v) in m {
            let e = self.sums.entry(k.clone()).or_insert((0.0, 0.0));
            e.0 += v * weight;
            e.1 += weight;
        }
    }

    fn mean(&self) -> Metrics {
        self.sums
            .iter()
            .map(|(k, (s, w))| (k.clone(), s / w.max(1e-12)))
            .collect()
    }
}

fn rollout_metrics(samples: &[Sample]) -> Metrics {
    let n = samples.len().max(1) as f64;
    let rewards: Vec<f32> = samples.iter().map(|s| s.score.value).collect();
    let (mean, std) = algo::grpo::mean_std(&rewards);
    let lens: Vec<f64> = samples
        .iter()
        .map(|s| s.completion.token_ids.len() as f64)
        .collect();
    let mut m = Metrics::new();
    m.insert("reward_mean".into(), mean as f64);
    m.insert("reward_std".into(), std as f64);
    m.insert(
        "accuracy".into(),
        samples.iter().filter(|s| s.score.correct).count() as f64 / n,
    );
    m.insert(
        "format_rate".into(),
        samples
            .iter()
            .filter(|s| {
                s.score
                    .parts
                    .iter()
                    .find(|(k, _)| k == "format")
                    .map_or(s.score.value > 0.0, |(_, v)| *v > 0.0)
            })
            .count() as f64
            / n,
    );
    m.insert("response_length_mean".into(), lens.iter().sum::<f64>() / n);
    m.insert(
        "response_length_max".into(),
        lens.iter().copied().fold(0.0, f64::max),
    );
    m.insert(
        "truncation_rate".into(),
        samples
            .iter()
            .filter(|s| s.completion.finish_reason == Finish::Length)
            .count() as f64
            / n,
    );
    // The sampling policy's entropy over every generated token (trained or not).
    let (ent_sum, ent_n) = samples.iter().fold((0.0, 0usize), |(sum, n), s| {
        let e = &s.completion.entropies;
        (sum + e.iter().map(|&x| x as f64).sum::<f64>(), n + e.len())
    });
    m.insert("entropy".into(), ent_sum / ent_n.max(1) as f64);
    m.insert(
        "nonzero_advantage_rate".into(),
        samples.iter().filter(|s| s.advantage != 0.0).count() as f64 / n,
    );
    m.insert(
        "advantage_abs_mean".into(),
        samples
            .iter()
            .map(|s| s.advantage.abs() as f64)
            .sum::<f64>()
            / n,
    );
    m
}

fn dump_rollouts(
    run: &RunDir,
    step: u64,
    examples: &[&Example],
    samples: &[Sample],
    tok: &model::Tokenizer,
) -> Result<()> {
    let dir = run.path("rollouts");
    std::fs::create_dir_all(&dir)?;
    let mut text = String::new();
    for s in samples {
        let c = &s.completion;
        let line = json!({
            "example_id": examples[c.prompt_index].id,
            "prompt": tok.decode(&s.prompt, false),
            "completion": c.text,
            "finish_reason": c.finish_reason,
            "score": s.score.value,
            "correct": s.score.correct,
            "parts": s.score.parts.iter().cloned().collect::<BTreeMap<_, _>>(),
            "reason": s.score.reason,
            "advantage": s.advantage,
            "num_tokens": c.token_ids.len(),
        });
        text.push_str(&line.to_string());
        text.push('\n');
    }
    std::fs::write(dir.join(format!("step_{step:06}.jsonl")), text)?;
    Ok(())
}

/// SFT: reference completions in place of rollouts; loss = token-mean NLL over completion tokens.
fn sft_step(
    ctx: &Ctx,
    prompter: &Prompter,
    examples: &[&Example],
    lr: f64,
    opt: &mut AdamW,
) -> Result<Metrics> {
    let r = &ctx.plan.recipe;
    let tok = &ctx.model.tokenizer;
    let t0 = Instant::now();
    let mut pairs = Vec::new();
    for ex in examples {
        let prompt = prompter.ids(tok, ex)?;
        let completion = sft_completion(ex).with_context(|| {
            format!("example {} has no reference completion (a `completion` field, or Countdown's `solution`)", ex.id)
        })?;
        let mut ids = tok.encode(&completion, false)?;
        ids.extend(tok.eos_ids.first().copied());
        pairs.push((prompt, ids));
    }
    let num_tokens: usize = pairs.iter().map(|(_, c)| c.len()).sum();
    let mut grads = GradStore::default();
    let mut nll_sum = 0.0;
    let train = Decoder::new(&ctx.model.config, ctx.params, Mode::Train)?;
    for micro in pairs.chunks(r.train.micro_batch_size) {
        let seqs: Vec<(&[u32], &[u32])> = micro
            .iter()
            .map(|(p, c)| (p.as_slice(), c.as_slice()))
            .collect();
        let stats = completion_stats(&train, &seqs, 1.0, ctx.device)?;
        let loss = (stats.logp.sum_all()?.neg()? / num_tokens as f64)?;
        nll_sum += loss.to_scalar::<f32>()? as f64;
        grads.extend(loss.backward()?)?;
    }
    let mut m = Metrics::new();
    match apply_update(ctx.params, opt, &mut grads, r.train.max_grad_norm, lr)? {
        Some(norm) => {
            m.insert("grad_norm".into(), norm);
            m.insert("skipped".into(), 0.0);
        }
        None => {
            m.insert("skipped".into(), 1.0);
        }
    }
    m.insert("loss".into(), nll_sum);
    m.insert("num_tokens".into(), num_tokens as f64);
    m.insert("train_seconds".into(), t0.elapsed().as_secs_f64());
    Ok(m)
}

/// The reference completion an SFT example carries.
pub fn sft_completion(ex: &Example) -> Option<String> {
    ex.text("completion")
        .or_else(|| crate::data::countdown_completion(ex))
}

fn evaluate_during_training(
    ctx: &Ctx,
    verifier: &dyn Verifier,
    prompter: &Prompter,
) -> Result<crate::eval::EvalSummary> {
    let r = &ctx.plan.recipe;
    let dec = Decoder::new(&ctx.model.config, ctx.params, Mode::Infer)?;
    let examples = ctx.plan.eval_problems(r.eval.max_problems);
    let sampling = ctx
        .plan
        .eval_sampling(r.eval.temperature, r.eval.max_new_tokens);
    let out = crate::eval::run::evaluate(
        &dec,
        &ctx.model.tokenizer,
        &examples,
        prompter,
        verifier,
        &sampling,
        r.eval.num_samples,
        r.seed,
        r.train.prompts_per_step.max(1),
        ctx.device,
    )?;
    Ok(out.summary)
}

/// Compare two metrics files line by line, ignoring timing keys (used by resume tests and users).
pub fn metrics_equal_ignoring_timing(a: &Path, b: &Path) -> Result<bool> {
    let read = |p: &Path| -> Result<Vec<Value>> {
        std::fs::read_to_string(p)?
            .lines()
            .map(|l| {
                let mut v: Value = serde_json::from_str(l)?;
                if let Some(o) = v.as_object_mut() {
                    for k in TIMING_KEYS {
                        o.remove(k);
                    }
                }
                Ok(v)
            })
            .collect()
    };
    Ok(read(a)? == read(b)?)
}
