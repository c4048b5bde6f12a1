//! Batched generation without an autograd graph: ragged prompts are left-padded and prefilled
//! once, fanned out to n samples per prompt through the KV cache, then decoded together. Rows that
//! finish are dropped from the batch, so long tails do not pay for short ones.
//!
//! Returns what training needs: completion ids, per-token log-probs under the tempered sampling
//! distribution (renormalized over the allowed tokens under a constraint: see [`constraint`]),
//! the text, and why each sample stopped. Beam search is in [`beam`].

pub mod beam;
pub mod constraint;
pub mod sampling;

use anyhow::Result;
use candle_core::{Device, Tensor};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::model::{Decoder, KvCache, Positions, Tokenizer};
pub use constraint::{Allowed, Constraint, TrieConstraint};
pub use sampling::SamplingConfig;

/// How an RL group (a prompt's `num_generations` completions) is formed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GroupMode {
    /// Independent samples from the policy (under the constraint, if any).
    #[default]
    Sample,
    /// The best beams of one (constrained) beam search, in rank order: MiniOneRec's rollout.
    /// Beams are not samples: the rollout recomputes their log-probs under the current policy.
    Beam,
}

impl GroupMode {
    /// Beam groups need an RL algorithm (`rl`) and no sampling options beam search would ignore
    /// (MiniOneRec's issue #49: sampling defaults leaking into beam search).
    pub fn check(self, sampling: &SamplingConfig, rl: bool, algo: &str) -> Result<()> {
        if self == GroupMode::Sample {
            return Ok(());
        }
        anyhow::ensure!(
            rl,
            "group = \"beam\" forms RL groups, but algorithm {algo} generates none; hint: \
             remove `group`"
        );
        let s = sampling;
        anyhow::ensure!(
            s.temperature == 1.0 && s.top_p == 1.0 && s.top_k == 0 && s.stop.is_empty(),
            "group = \"beam\" ranks by the model's own log-probs: temperature must be 1 and \
             top_p, top_k, stop unset (got temperature {}, top_p {}, top_k {}, stop {:?}); hint: \
             remove them, or use group = \"sample\"",
            s.temperature,
            s.top_p,
            s.top_k,
            s.stop
        );
        Ok(())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Finish {
    /// An end-of-sequence token was sampled (it is the last id, and is not in the text).
    Eos,
    /// A stop string appeared; the text is cut before it.
    Stop,
    /// `max_new_tokens` reached.
    Length,
    /// The constraint allowed no next token; the row ends without one (its completion may be
    /// empty).
    #[serde(rename = "no_allowed_token")]
    Constrained,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Completion {
    pub prompt_index: usize,
    pub sample_index: usize,
    pub token_ids: Vec<u32>,
    pub logprobs: Vec<f32>,
    /// Per token: mean over the vocabulary of the tempered log-softmax at that step.
    pub mean_logprobs: Vec<f32>,
    /// Per token: entropy of the tempered distribution the token was drawn from.
    #[serde(default)]
    pub entropies: Vec<f32>,
    pub text: String,
    pub finish_reason: Finish,
    pub seed: u64,
}

/// Seed of sample `s` of prompt `p`, derived from a base seed so that a sample is reproducible
/// and independent of batch composition.
pub fn sample_seed(base: u64, prompt: u64, sample: u64) -> u64 {
    // splitmix64 over the triple: cheap, well mixed, stable across versions.
    let mut z = base
        ^ prompt.wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ sample.wrapping_mul(0xD1B5_4A32_D192_ED03);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

struct Row {
    out: usize,    // index into the output vector
    prompt: usize, // prompt index, as the constraint sees it
    rng: ChaCha8Rng,
    ids: Vec<u32>,
    logprobs: Vec<f32>,
    mean_logprobs: Vec<f32>,
    entropies: Vec<f32>,
    finish: Option<Finish>,
}

/// Generate `n` samples for each prompt. `seeds[p][s]` seeds sample s of prompt p.
pub fn generate(
    model: &Decoder,
    tok: &Tokenizer,
    prompts: &[Vec<u32>],
    seeds: &[Vec<u64>],
    cfg: &SamplingConfig,
    device: &Device,
) -> Result<Vec<Completion>> {
    generate_constrained(model, tok, prompts, seeds, cfg, None, device)
}

/// [`generate`] where `constraint` (if any) restricts every next token; `cfg.min_new_tokens` is
/// applied as one more constraint ([`constraint::MinNewTokens`]). Without either, no allowed set
/// is computed at all.
pub fn generate_constrained(
    model: &Decoder,
    tok: &Tokenizer,
    prompts: &[Vec<u32>],
    seeds: &[Vec<u64>],
    cfg: &SamplingConfig,
    constraint: Option<&dyn Constraint>,
    device: &Device,
) -> Result<Vec<Completion>> {
    cfg.validate()?;
    let min_len = (cfg.min_new_tokens > 0)
        .then(|| constraint::MinNewTokens::new(cfg.min_new_tokens, &tok.eos_ids));
    let both;
    let constraint: Option<&dyn Constraint> = match (constraint, &min_len) {
        (None, None) => None,
        (Some(c), None) => Some(c),
        (None, Some(m)) => Some(m),
        (Some(c), Some(m)) => {
            both = constraint::Intersection::new(vec![c, m as &dyn Constraint]);
            Some(&both)
        }
    };
    if prompts.is_empty() {
        return Ok(vec![]);
    }
    anyhow::ensure!(
        prompts.iter().all(|p| !p.is_empty()),
        "every prompt needs at least one token"
    );
    anyhow::ensure!(seeds.len() == prompts.len(), "one seed list per prompt");
    let max_prompt = prompts.iter().map(Vec::len).max().unwrap_or(0);
    let capacity = max_prompt + cfg.max_new_tokens;
    let (cache, last) = prefill(model, tok.pad_id(), prompts, capacity, device)?;

    // Fan out: row i of the decode batch is (prompt, sample).
    let mut fan = Vec::new();
    let mut rows = Vec::new();
    let mut outputs: Vec<Completion> = Vec::new();
    for (p, sl) in seeds.iter().enumerate() {
        for (s, &seed) in sl.iter().enumerate() {
            fan.push(p as u32);
            rows.push(Row {
                out: outputs.len(),
                prompt: p,
                rng: ChaCha8Rng::seed_from_u64(seed),
                ids: vec![],
                logprobs: vec![],
                mean_logprobs: vec![],
                entropies: vec![],
                finish: None,
            });
            outputs.push(Completion {
                prompt_index: p,
                sample_index: s,
                token_ids: vec![],
                logprobs: vec![],
                mean_logprobs: vec![],
                entropies: vec![],
                text: String::new(),
                finish_reason: Finish::Length,
                seed,
            });
        }
    }
    if rows.is_empty() {
        return Ok(vec![]);
    }
    let mut cache = cache.select_rows(&fan)?;
    let mut logits: Vec<Vec<f32>> = fan.iter().map(|&p| last[p as usize].clone()).collect();

    for step in 0..cfg.max_new_tokens {
        // Rows are independent (own RNG, own logits): sample them in parallel.
        let mut next: Vec<u32> = rows
            .par_iter_mut()
            .zip(logits.par_iter())
            .map(|(row, lg)| {
                let d = match constraint {
                    None => sampling::sample_with_stats(lg, cfg, &mut row.rng),
                    Some(c) => {
                        let allowed = c.allowed(row.prompt, &row.ids);
                        match sampling::sample_allowed(lg, &allowed, cfg, &mut row.rng) {
                            Some(d) => d,
                            None => {
                                row.finish = Some(Finish::Constrained);
                                return 0; // never fed: the row is dropped below
                            }
                        }
                    }
                };
                row.ids.push(d.id);
                row.logprobs.push(d.logp);
                row.mean_logprobs.push(d.mean_logp);
                row.entropies.push(d.entropy);
                if tok.eos_ids.contains(&d.id) {
                    row.finish = Some(Finish::Eos);
                } else if !cfg.stop.is_empty() {
                    let text = tok.decode(&row.ids, false);
                    if cfg.stop.iter().any(|s| text.contains(s.as_str())) {
                        row.finish = Some(Finish::Stop);
                    }
                }
                d.id
            })
            .collect();
        if step + 1 == cfg.max_new_tokens {
            break;
        }
        // Drop finished rows (and their cache rows, in place) before paying for another forward.
        if rows.iter().any(|r| r.finish.is_some()) {
            let keep: Vec<bool> = rows.iter().map(|r| r.finish.is_none()).collect();
            let order = cache.retain_rows(&keep)?;
            let mut old: Vec<Option<Row>> = rows.drain(..).map(Some).collect();
            for row in old
                .iter_mut()
                .filter_map(|r| r.take_if(|r| r.finish.is_some()))
            {
                finish_row(row, tok, cfg, &mut outputs);
            }
            rows = order.iter().filter_map(|&i| old[i].take()).collect();
            next = order.iter().map(|&i| next[i]).collect();
            if rows.is_empty() {
                break;
            }
        }
        let n = rows.len();
        let new_valid = vec![vec![true]; n];
        let pos = Positions::build(&cache.valid, &new_valid, device)?;
        let x = Tensor::from_vec(next, (n, 1), device)?;
        let hidden = model.forward_hidden(&x, &pos, Some(&mut cache))?; // (n, 1, H)
        cache.push_valid(&new_valid);
        logits = model
            .logits(&hidden.squeeze(1)?)?
            .to_dtype(candle_core::DType::F32)?
            .to_vec2()?; // (n, V)
    }
    for row in rows {
        finish_row(row, tok, cfg, &mut outputs);
    }
    Ok(outputs)
}

/// Prefill all prompts once, left-padded so every row's last prompt token is in the last slot,
/// into a cache with room for `capacity` positions per row. Returns the cache and each prompt's
/// next-token logits (f32), shared by sampling and beam search.
pub(crate) fn prefill(
    model: &Decoder,
    pad: u32,
    prompts: &[Vec<u32>],
    capacity: usize,
    device: &Device,
) -> Result<(KvCache, Vec<Vec<f32>>)> {
    let mc = model.config();
    let max_prompt = prompts.iter().map(Vec::len).max().unwrap_or(0);
    let b = prompts.len();
    let mut ids = Vec::with_capacity(b * max_prompt);
    let mut valid = Vec::with_capacity(b);
    for p in prompts {
        let padn = max_prompt - p.len();
        ids.extend(std::iter::repeat_n(pad, padn).chain(p.iter().copied()));
        valid.push((0..max_prompt).map(|i| i >= padn).collect::<Vec<_>>());
    }
    let mut cache = KvCache::new(
        mc.num_hidden_layers,
        b,
        mc.num_key_value_heads,
        mc.head_dim,
        capacity,
        model.dtype(),
        device,
    )?;
    let pos = Positions::build(&[], &valid, device)?;
    let x = Tensor::from_vec(ids, (b, max_prompt), device)?;
    let hidden = model.forward_hidden(&x, &pos, Some(&mut cache))?; // (B, P, H)
    cache.push_valid(&valid);
    let last = model.logits(&hidden.narrow(1, max_prompt - 1, 1)?.squeeze(1)?)?; // (B, V)
    Ok((cache, last.to_dtype(candle_core::DType::F32)?.to_vec2()?))
}

fn finish_row(row: Row, tok: &Tokenizer, cfg: &SamplingConfig, outputs: &mut [Completion]) {
    let finish = row.finish.unwrap_or(Finish::Length);
    let mut text = tok.decode(&row.ids, true);
    if finish == Finish::Stop {
        if let Some(cut) = cfg.stop.iter().filter_map(|s| text.find(s.as_str())).min() {
            text.truncate(cut);
        }
    }
    let o = &mut outputs[row.out];
    o.token_ids = row.ids;
    o.logprobs = row.logprobs;
    o.mean_logprobs = row.mean_logprobs;
    o.entropies = row.entropies;
    o.text = text;
    o.finish_reason = finish;
}
