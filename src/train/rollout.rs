//! Rollout: the training sequences of one step and their advantages.
//!
//! For an RL algorithm: generate n samples per prompt with the current weights (no graph) →
//! judge them ([`score`], the one place rewards are computed) → advantages → exploration bonus.
//! For SFT the sequences are the dataset's reference completions, one per prompt, scored by
//! nobody. Either way the result is a [`Rollout`]: what the update trains on, what the metrics
//! and the rollout dump read.
//!
//! Data parallel: a rank generates and judges its shard of the prompts (`RolloutCtx::shard`,
//! whole groups), with sampling seeds of the global prompt index, then the judged samples of
//! every rank are gathered, so from advantages on (i-MENTOR's predictor included) every rank
//! computes on the whole batch, as one worker would.

use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use candle_core::Device;
use rayon::prelude::*;
use serde_json::Value;

mod gather;

use super::correction::{self, RolloutPrecision};
use super::update::Sequence;
use crate::algo::{Algorithm, LogProbStats, Metrics, RolloutSource};
use crate::data::Example;
use crate::explore::{Imentor, Outcome};
use crate::generate::beam::{self, BeamConfig};
use crate::generate::{self, Completion, Constraint, Finish, GroupMode};
use crate::model::decoder::BuildOptions;
use crate::model::{Decoder, LoadedModel, Mode, Tokenizer};
use crate::parallel::Comm;
use crate::prompting::Prompter;
use crate::recipe::Plan;
use crate::reward::{GroupMember, Score, Verifier};
use gather::gather;

/// One sample of a rollout batch, as generated and judged.
pub struct Sample {
    pub prompt: Arc<Vec<u32>>,
    pub completion: Completion,
    pub score: Score,
    pub advantage: f32,
    /// Whether this sample contributes to the loss (`mask_truncated_completions`).
    pub in_loss: bool,
    /// Per token: the rollout correction's importance weight (`super::correction`) when the
    /// rollout sampled from approximate weights; empty otherwise.
    pub is_weight: Vec<f32>,
}

/// The sequences of one step, laid out group by group (a prompt's samples together).
pub struct Rollout {
    /// The step's examples; `Completion::prompt_index` indexes them.
    pub examples: Vec<Example>,
    pub samples: Vec<Sample>,
    /// Rollout statistics (rewards, lengths, exploration): keys of `metrics.jsonl`.
    pub metrics: Metrics,
    /// Whether the samples were generated (RL) rather than taken from the dataset (SFT).
    pub generated: bool,
}

impl Rollout {
    /// What the update trains on.
    pub fn sequences(&self) -> Vec<Sequence> {
        self.samples
            .iter()
            .map(|s| Sequence {
                prompt: s.prompt.clone(),
                tokens: s.completion.token_ids.clone(),
                old_logp: s.completion.logprobs.clone(),
                old_mean_logp: s.completion.mean_logprobs.clone(),
                advantage: s.advantage,
                is_weight: s.is_weight.clone(),
                group: s.completion.prompt_index,
                in_loss: s.in_loss,
            })
            .collect()
    }
}

/// What a rollout reads besides the examples.
pub struct RolloutCtx<'a> {
    pub plan: &'a Plan,
    pub policy: &'a LoadedModel,
    pub prompter: &'a Prompter<'a>,
    /// What every generated token must satisfy (the SID trie), if the recipe sets one.
    pub constraint: Option<&'a dyn Constraint>,
    pub device: &'a Device,
    pub comm: &'a dyn Comm,
    /// The prompts (indices into the step's examples) this rank generates.
    pub shard: std::ops::Range<usize>,
}

/// The sequences of step `step` (1-based) over `examples` (the whole step's, on every rank).
pub fn collect(
    ctx: &RolloutCtx,
    algo: &dyn Algorithm,
    judge: &dyn Verifier,
    explore: Option<&mut Imentor>,
    examples: Vec<Example>,
    step: u64,
) -> Result<Rollout> {
    match algo.rollout_source() {
        RolloutSource::Policy => sample_and_judge(ctx, algo, judge, explore, examples, step),
        RolloutSource::Reference => reference_completions(ctx, examples),
        RolloutSource::Preference => preference_completions(ctx, examples),
    }
}

fn sample_and_judge(
    ctx: &RolloutCtx,
    algo: &dyn Algorithm,
    judge: &dyn Verifier,
    explore: Option<&mut Imentor>,
    examples: Vec<Example>,
    step: u64,
) -> Result<Rollout> {
    let r = &ctx.plan.recipe;
    let g = r.generation.num_generations;
    let tok = &ctx.policy.tokenizer;

    // 1. Generate n samples per prompt of this rank's shard with the current weights (no graph).
    let t_gen = Instant::now();
    let prompts: Vec<Vec<u32>> = examples
        .iter()
        .map(|ex| ctx.prompter.ids(tok, ex))
        .collect::<Result<_>>()?;
    let shard = ctx.shard.clone();
    // Seeds of the global prompt index: a sample does not depend on the world size.
    let seeds: Vec<Vec<u64>> = shard
        .clone()
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
    let int8 = r.generation.rollout_precision == RolloutPrecision::Int8;
    let build = BuildOptions {
        int8_weights: int8,
        ..BuildOptions::default()
    };
    let infer = Decoder::build(&ctx.policy.config, &ctx.policy.params, Mode::Infer, &build)?;
    let (completions, padded) = match r.generation.group {
        GroupMode::Sample => {
            let c = generate::generate_constrained(
                &infer,
                tok,
                &prompts[shard.clone()],
                &seeds,
                &ctx.plan.sampling,
                ctx.constraint,
                ctx.device,
            )?;
            let n = c.len();
            (c, vec![false; n])
        }
        GroupMode::Beam => beam_groups(ctx, &infer, &prompts[shard.clone()], g)?,
    };
    drop(infer);
    let mut completions = completions;
    for c in &mut completions {
        c.prompt_index += shard.start;
    }
    let gen_seconds = t_gen.elapsed().as_secs_f64();
    // 1b. Approximate rollouts: π_old is the exact model's, recomputed on what was sampled; the
    // sampler's own log-probs are kept for the correction.
    let t_recompute = Instant::now();
    let rollout_logp = if int8 {
        recompute_exact(ctx, &prompts, &mut completions)?
    } else {
        vec![vec![]; completions.len()]
    };
    let recompute_seconds = t_recompute.elapsed().as_secs_f64();

    // 2. Judge (a group at a time, ranked), 3. advantages.
    let ranks = match r.generation.group {
        GroupMode::Sample => ranks_by_logprob(&completions),
        GroupMode::Beam => completions.iter().map(|c| c.sample_index).collect(),
    };
    let scores = score(judge, tok, &examples, &prompts, &completions, &ranks);
    let (completions, scores, padded, rollout_logp) =
        gather(ctx.comm, completions, scores, padded, rollout_logp)?;
    let is_weights: Vec<Vec<f32>> = match &ctx.plan.update.correction {
        Some(corr) => completions
            .iter()
            .zip(&rollout_logp)
            .map(|(c, rl)| corr.weights(&c.logprobs, rl))
            .collect(),
        None => vec![vec![]; completions.len()],
    };
    let mismatch = ctx.plan.update.correction.map(|_| {
        let per: Vec<(&[f32], &[f32], &[f32])> = completions
            .iter()
            .zip(&rollout_logp)
            .zip(&is_weights)
            .map(|((c, rl), w)| (c.logprobs.as_slice(), rl.as_slice(), w.as_slice()))
            .collect();
        correction::mismatch_metrics(&per)
    });
    let rewards: Vec<f32> = scores.iter().map(|s| s.value).collect();
    let mut advantages = algo.advantages(&rewards, g);
    // 4. i-MENTOR: a novelty bonus added after group normalization (advantage-preserving).
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
        let outcomes: Vec<Outcome> = scores
            .iter()
            .map(|s| Outcome {
                correct: s.correct,
                answered: s.answer.is_some(),
            })
            .collect();
        explore_metrics = e
            .apply(&seqs, &outcomes, &mut advantages, g, step - 1)?
            .metrics();
    }
    let prompt_arcs: Vec<_> = prompts.into_iter().map(Arc::new).collect();
    let mask_truncated = ctx.plan.update.mask_truncated_completions;
    let samples: Vec<Sample> = completions
        .into_iter()
        .zip(scores)
        .zip(advantages)
        .zip(padded)
        .zip(is_weights)
        .map(|((((c, score), advantage), padded), is_weight)| Sample {
            prompt: prompt_arcs[c.prompt_index].clone(),
            in_loss: !(padded || (mask_truncated && c.finish_reason == Finish::Length)),
            completion: c,
            score,
            advantage,
            is_weight,
        })
        .collect();
    let mut metrics = super::metrics::rollout_metrics(&samples, g);
    metrics.extend(explore_metrics);
    if let Some(m) = mismatch {
        metrics.extend(m);
        metrics.insert("recompute_seconds".into(), recompute_seconds);
    }
    metrics.insert("gen_seconds".into(), gen_seconds);
    let gen_tokens =
        metrics.get("response_length_mean").copied().unwrap_or(0.0) * samples.len() as f64;
    metrics.insert("tokens_per_s".into(), gen_tokens / gen_seconds.max(1e-9));
    Ok(Rollout {
        examples,
        samples,
        metrics,
        generated: true,
    })
}

/// Rewards of a rollout batch: each group (a prompt's completions, contiguous) judged against
/// its example with [`Verifier::score_group`], groups in parallel (the verifiers are pure), so a
/// reward may compare a group's members by `ranks` (0 = best within the group). The example's
/// fields gain `_prompt`, the decoded prompt, for judges that read it. The one place a batched,
/// model-backed judge replaces the per-sample verifier.
pub fn score(
    judge: &dyn Verifier,
    tok: &Tokenizer,
    examples: &[Example],
    prompts: &[Vec<u32>],
    completions: &[Completion],
    ranks: &[usize],
) -> Vec<Score> {
    let mut groups: Vec<std::ops::Range<usize>> = Vec::new();
    for (i, c) in completions.iter().enumerate() {
        match groups.last_mut() {
            Some(g) if completions[g.start].prompt_index == c.prompt_index => g.end = i + 1,
            _ => groups.push(i..i + 1),
        }
    }
    let scored: Vec<Vec<Score>> = groups
        .par_iter()
        .map(|g| {
            let p = completions[g.start].prompt_index;
            let mut ex = examples[p].clone();
            ex.fields.insert(
                "_prompt".into(),
                Value::String(tok.decode(&prompts[p], false)),
            );
            let members: Vec<GroupMember> = g
                .clone()
                .map(|i| GroupMember {
                    completion: &completions[i].text,
                    rank: ranks[i],
                })
                .collect();
            judge.score_group(&ex, &members)
        })
        .collect();
    scored.concat()
}

/// Approximate rollouts: replaces each completion's log-prob statistics with the exact
/// policy's (π_old, mean log-prob for ROVER, entropy), recomputed under the same temperature
/// and constraint as the update's, `micro_batch_size` sequences at a time; returns the
/// sampler's own log-probs (π_rollout), per completion.
fn recompute_exact(
    ctx: &RolloutCtx,
    prompts: &[Vec<u32>],
    completions: &mut [Completion],
) -> Result<Vec<Vec<f32>>> {
    let exact = Decoder::new(&ctx.policy.config, &ctx.policy.params, Mode::Infer)?;
    let temp = ctx.plan.update.logprob_temperature;
    let idx: Vec<usize> = (0..completions.len())
        .filter(|&i| !completions[i].token_ids.is_empty())
        .collect();
    let mut rollout: Vec<Vec<f32>> = vec![vec![]; completions.len()];
    for chunk in idx.chunks(ctx.plan.update.micro_batch_size.max(1)) {
        let pairs: Vec<(&[u32], &[u32])> = chunk
            .iter()
            .map(|&i| {
                let c = &completions[i];
                (prompts[c.prompt_index].as_slice(), c.token_ids.as_slice())
            })
            .collect();
        let groups: Vec<usize> = chunk.iter().map(|&i| completions[i].prompt_index).collect();
        let s = super::constrained::policy_stats(
            &exact,
            &pairs,
            &groups,
            ctx.constraint,
            temp,
            ctx.device,
        )?;
        let mut picked: Vec<&mut Completion> = completions
            .iter_mut()
            .enumerate()
            .filter(|(i, _)| chunk.binary_search(i).is_ok())
            .map(|(_, c)| c)
            .collect();
        let old = replace_stats(&s, &mut picked)?;
        for (&i, lp) in chunk.iter().zip(old) {
            rollout[i] = lp;
        }
    }
    Ok(rollout)
}

/// Sets the log-prob, mean log-prob and entropy of each completion from `stats` (flat over
/// their tokens, in order) and returns the log-probs they had.
fn replace_stats(
    stats: &LogProbStats,
    completions: &mut [&mut Completion],
) -> Result<Vec<Vec<f32>>> {
    let (mut lp, mut mean, mut ent) = (
        stats.logp.to_vec1::<f32>()?.into_iter(),
        stats.mean_logp.to_vec1::<f32>()?.into_iter(),
        stats.entropy.to_vec1::<f32>()?.into_iter(),
    );
    Ok(completions
        .iter_mut()
        .map(|c| {
            let n = c.token_ids.len();
            c.mean_logprobs = mean.by_ref().take(n).collect();
            c.entropies = ent.by_ref().take(n).collect();
            std::mem::replace(&mut c.logprobs, lp.by_ref().take(n).collect())
        })
        .collect())
}

/// Within each group, the rank of each sample by its sequence log-prob (sum of the reported
/// per-token log-probs; highest first, ties by sample order): a sampled group's stand-in for
/// beam order.
fn ranks_by_logprob(completions: &[Completion]) -> Vec<usize> {
    let total = |c: &Completion| c.logprobs.iter().map(|&x| x as f64).sum::<f64>();
    completions
        .iter()
        .map(|c| {
            let mine = total(c);
            completions
                .iter()
                .filter(|o| o.prompt_index == c.prompt_index)
                .filter(|o| {
                    let t = total(o);
                    t > mine || (t == mine && o.sample_index < c.sample_index)
                })
                .count()
        })
        .collect()
}

/// MiniOneRec's rollout: per prompt, the `g` best beams of one beam search under the
/// constraint, in rank order (`sample_index` = rank). Beams are not samples from the policy, so
/// there is no behaviour log-prob to keep: the old statistics are the current policy's own,
/// recomputed with the update's function ([`super::constrained::policy_stats`]), and at the
/// first optimizer step the ratio is 1 — the loss is on-policy REINFORCE/GRPO over the beams,
/// as MiniOneRec's exp(logp − logp.detach()). A prompt that yields fewer than `g` beams (the
/// constraint left fewer valid sequences) repeats its last beam; the repeats are flagged (the
/// second vector) and kept out of the loss, so groups keep their size.
fn beam_groups(
    ctx: &RolloutCtx,
    infer: &Decoder,
    prompts: &[Vec<u32>],
    g: usize,
) -> Result<(Vec<Completion>, Vec<bool>)> {
    let cfg = BeamConfig {
        num_beams: g,
        max_new_tokens: ctx.plan.sampling.max_new_tokens,
        ..BeamConfig::default()
    };
    let tok = &ctx.policy.tokenizer;
    let results = beam::beam_search(infer, tok, prompts, &cfg, ctx.constraint, ctx.device)?;
    let (mut out, mut padded) = (Vec::new(), Vec::new());
    for res in results {
        let Some(last) = res.beams.last().cloned() else {
            anyhow::bail!(
                "beam search returned no sequence for prompt {}",
                res.prompt_index
            );
        };
        let real = res.beams.len();
        let beams = res.beams.into_iter().chain(std::iter::repeat(last));
        let mut group: Vec<Completion> = beams
            .take(g)
            .enumerate()
            .map(|(rank, b)| Completion {
                prompt_index: res.prompt_index,
                sample_index: rank,
                logprobs: b.constrained_logprobs,
                mean_logprobs: vec![],
                entropies: vec![],
                token_ids: b.token_ids,
                text: b.text,
                finish_reason: b.finish_reason,
                seed: 0,
            })
            .collect();
        let pairs: Vec<(&[u32], &[u32])> = group
            .iter()
            .map(|c| (prompts[res.prompt_index].as_slice(), c.token_ids.as_slice()))
            .collect();
        let groups = vec![res.prompt_index; pairs.len()];
        let temp = ctx.plan.update.logprob_temperature;
        let s = super::constrained::policy_stats(
            infer,
            &pairs,
            &groups,
            ctx.constraint,
            temp,
            ctx.device,
        )?;
        replace_stats(&s, &mut group.iter_mut().collect::<Vec<_>>())?;
        padded.extend((0..g).map(|i| i >= real));
        out.extend(group);
    }
    Ok((out, padded))
}

/// SFT: each example's reference completion (declared by its data source) plus EOS, as one
/// sequence with advantage 1; no old-policy statistics (the loss needs none).
fn reference_completions(ctx: &RolloutCtx, examples: Vec<Example>) -> Result<Rollout> {
    let tok = &ctx.policy.tokenizer;
    let data = &ctx.plan.recipe.data;
    let mut samples = Vec::with_capacity(examples.len());
    for (i, ex) in examples.iter().enumerate() {
        let prompt = Arc::new(ctx.prompter.ids(tok, ex)?);
        let text = data
            .reference_completion(ex)
            .with_context(|| format!("[data] for algorithm sft, example {}", ex.id))?;
        samples.push(given_sample(
            tok,
            prompt,
            (i, 0),
            text,
            "reference completion (sft)",
        )?);
    }
    Ok(given_rollout(examples, samples))
}

/// DPO/S-DPO: each preference row as one group, its chosen completion then its rejected ones
/// (each plus EOS, advantage 1), under the prompt the recipe's template renders from the row;
/// nothing is judged.
fn preference_completions(ctx: &RolloutCtx, examples: Vec<Example>) -> Result<Rollout> {
    let tok = &ctx.policy.tokenizer;
    let mut samples = Vec::new();
    for (i, ex) in examples.iter().enumerate() {
        let pref = crate::data::preference::Preference::from_example(ex)?;
        let prompt = Arc::new(ctx.prompter.ids(tok, ex)?);
        let texts = std::iter::once(pref.chosen).chain(pref.rejected);
        for (j, text) in texts.enumerate() {
            let why = if j == 0 { "chosen" } else { "rejected" };
            samples.push(given_sample(tok, prompt.clone(), (i, j), text, why)?);
        }
    }
    let mut rollout = given_rollout(examples, samples);
    let n = rollout.samples.len() as f64;
    rollout.metrics.insert("num_sequences".into(), n);
    Ok(rollout)
}

/// A completion the data gives rather than the policy samples: `text` plus EOS as sample
/// `index` = (prompt, sample), advantage 1, no old-policy statistics, scored by nobody (`why`).
fn given_sample(
    tok: &Tokenizer,
    prompt: Arc<Vec<u32>>,
    (prompt_index, sample_index): (usize, usize),
    text: String,
    why: &str,
) -> Result<Sample> {
    let mut ids = tok.encode(&text, false)?;
    ids.extend(tok.eos_ids.first().copied());
    let n = ids.len();
    Ok(Sample {
        prompt,
        completion: Completion {
            prompt_index,
            sample_index,
            token_ids: ids,
            logprobs: vec![0.0; n],
            mean_logprobs: vec![0.0; n],
            entropies: vec![],
            text,
            finish_reason: Finish::Eos,
            seed: 0,
        },
        score: Score::zero(why),
        advantage: 1.0,
        in_loss: true,
        is_weight: vec![],
    })
}

/// The rollout of given completions: nothing was generated; its one statistic is the tokens.
fn given_rollout(examples: Vec<Example>, samples: Vec<Sample>) -> Rollout {
    let mut metrics = Metrics::new();
    let num_tokens: usize = samples.iter().map(|s| s.completion.token_ids.len()).sum();
    metrics.insert("num_tokens".into(), num_tokens as f64);
    Rollout {
        examples,
        samples,
        metrics,
        generated: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn completion(prompt_index: usize, sample_index: usize, logprobs: &[f32]) -> Completion {
        Completion {
            prompt_index,
            sample_index,
            token_ids: vec![0; logprobs.len()],
            logprobs: logprobs.to_vec(),
            mean_logprobs: vec![],
            entropies: vec![],
            text: String::new(),
            finish_reason: Finish::Eos,
            seed: 0,
        }
    }

    #[test]
    fn sampled_groups_rank_by_sequence_logprob_within_the_group() {
        let c = [
            completion(0, 0, &[-1.0, -1.0]), // −2
            completion(0, 1, &[-0.5]),       // −0.5: best
            completion(0, 2, &[-1.5, -0.5]), // −2: ties with sample 0, ranks after it
            completion(1, 0, &[-3.0]),       // another group
            completion(1, 1, &[-0.1]),
        ];
        assert_eq!(ranks_by_logprob(&c), [1, 0, 2, 1, 0]);
    }
}
