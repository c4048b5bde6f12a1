//! Beam search: B beams per prompt over a batch of ragged prompts, constraint-aware, on the same
//! KV cache as sampling (left-padded prefill once, then one decode row per live beam; beams are
//! re-parented in place with [`KvCache::reorder_rows`], finished prompts leave the batch).
//!
//! The semantics are Hugging Face transformers' `generate(num_beams=B, do_sample=False)`
//! (`GenerationMixin._beam_search`, transformers 5.x), so that a ranking computed here equals the
//! one a Python pipeline gets:
//! - a beam's score is the sum of the model's log-probs of its tokens (log-softmax over the full
//!   vocabulary, then disallowed tokens removed — HF's `prefix_allowed_tokens_fn` masks after the
//!   log-softmax and does not renormalize); the first step expands the prompt alone;
//! - each step keeps the top `max(2, 1 + #eos)·B` candidates over all beams of a prompt; those
//!   among the top B that end in EOS (or reach `max_new_tokens`) become finished hypotheses with
//!   score `sum_logprobs / len^length_penalty` (len counts generated tokens, EOS included), the
//!   best B non-finished candidates continue;
//! - the B best finished hypotheses are kept; a prompt stops when B are finished and the best
//!   running beam cannot beat the worst of them at the current length ([`EarlyStopping`]: HF's
//!   default `early_stopping=False`; `true` and `"never"` are offered too).
//!
//! Differences from HF, by design: where the constraint leaves fewer than B valid sequences, HF
//! pads its output with duplicate sequences scored about −1e9; here a prompt returns only the
//! real ones (possibly fewer than B). A beam whose allowed set is empty ends as a hypothesis with
//! [`Finish::Constrained`] (HF raises an error). Beams also report per-token log-probs under the
//! renormalized constrained policy (`constrained_logprobs`, temperature 1), the distribution the
//! sampler reports (see [`super::constraint`]), so the B beams can serve as an RL group.

use anyhow::Result;
use candle_core::{DType, Device, Tensor};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::constraint::{Allowed, Constraint};
use super::Finish;
use crate::model::{Decoder, Positions, Tokenizer};

/// When a prompt's search ends (HF's `early_stopping`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EarlyStopping {
    /// HF's default (`False`): stop once B hypotheses are finished and the best running beam,
    /// length-normalized at the current length, does not beat the worst of them.
    #[default]
    Heuristic,
    /// HF's `True`: stop as soon as B hypotheses are finished.
    AllFinished,
    /// HF's `"never"`: as `Heuristic`, but with a positive length penalty the best running beam
    /// is normalized at `max_new_tokens` (the canonical beam search).
    Never,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BeamConfig {
    /// B: beams per prompt, and the number of sequences returned per prompt.
    pub num_beams: usize,
    pub max_new_tokens: usize,
    /// Finished scores are `sum_logprobs / len^length_penalty` (> 0 favours longer sequences).
    pub length_penalty: f64,
    pub early_stopping: EarlyStopping,
}

impl Default for BeamConfig {
    fn default() -> Self {
        Self {
            num_beams: 4,
            max_new_tokens: 32,
            length_penalty: 1.0,
            early_stopping: EarlyStopping::Heuristic,
        }
    }
}

impl BeamConfig {
    pub fn validate(&self) -> Result<()> {
        anyhow::ensure!(self.num_beams >= 1, "num_beams must be ≥ 1");
        anyhow::ensure!(self.max_new_tokens >= 1, "max_new_tokens must be ≥ 1");
        anyhow::ensure!(
            self.length_penalty.is_finite(),
            "length_penalty must be a finite number, got {}",
            self.length_penalty
        );
        Ok(())
    }
}

/// One returned sequence.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Beam {
    /// Generated ids; an EOS that ended the beam is the last id (and is not in the text).
    pub token_ids: Vec<u32>,
    pub text: String,
    /// HF's `sequences_scores`: `sum_logprob / len^length_penalty`.
    pub score: f32,
    /// Sum of `logprobs`.
    pub sum_logprob: f32,
    /// Per token: the model's log-prob (full-vocabulary log-softmax).
    pub logprobs: Vec<f32>,
    /// Per token: log-prob under the constrained policy renormalized over the allowed set.
    pub constrained_logprobs: Vec<f32>,
    pub finish_reason: Finish,
}

/// The beams of one prompt, best first.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BeamResult {
    pub prompt_index: usize,
    pub beams: Vec<Beam>,
}

#[derive(Clone, Debug, Default)]
struct Hyp {
    ids: Vec<u32>,
    logprobs: Vec<f32>,
    clogprobs: Vec<f32>,
    sum: f32,
}

impl Hyp {
    fn extend(&self, c: &Cand) -> Hyp {
        let mut h = self.clone();
        h.ids.push(c.token);
        h.logprobs.push(c.logp);
        h.clogprobs.push(c.clogp);
        h.sum = c.score;
        h
    }
}

/// A one-token continuation of beam `beam` of a prompt.
#[derive(Clone, Copy, Debug)]
struct Cand {
    score: f32, // the beam's sum + logp
    beam: usize,
    token: u32,
    logp: f32,
    clogp: f32,
}

struct Search {
    running: Vec<Hyp>, // best first
    finished: Vec<(f32, Hyp, Finish)>,
    done: bool,
}

/// Beam search over `prompts` (each non-empty) under an optional constraint. Returns one
/// [`BeamResult`] per prompt, in order, each with up to B beams sorted by score.
pub fn beam_search(
    model: &Decoder,
    tok: &Tokenizer,
    prompts: &[Vec<u32>],
    cfg: &BeamConfig,
    constraint: Option<&dyn Constraint>,
    device: &Device,
) -> Result<Vec<BeamResult>> {
    cfg.validate()?;
    anyhow::ensure!(
        prompts.iter().all(|p| !p.is_empty()),
        "every prompt needs at least one token"
    );
    if prompts.is_empty() {
        return Ok(vec![]);
    }
    let b = cfg.num_beams;
    let keep = 2.max(1 + tok.eos_ids.len()) * b; // candidates kept per prompt and step (HF)
    let max_prompt = prompts.iter().map(Vec::len).max().unwrap_or(0);
    let np = prompts.len();
    let (prefill, mut logits) = super::prefill(
        model,
        tok.pad_id(),
        prompts,
        max_prompt + cfg.max_new_tokens,
        device,
    )?;
    // Room for B live beams per prompt; the first step expands each prompt from its one row.
    let all: Vec<u32> = (0..np as u32).collect();
    let mut cache = prefill.select_rows_into(&all, np * b)?;
    drop(prefill);

    let mut searches: Vec<Search> = (0..np)
        .map(|_| Search {
            running: vec![Hyp::default()],
            finished: vec![],
            done: false,
        })
        .collect();
    for step in 0..cfg.max_new_tokens {
        // Decode rows, in order: the running beams of every live prompt.
        let owners: Vec<(usize, usize)> = searches
            .iter()
            .enumerate()
            .filter(|(_, s)| !s.done)
            .flat_map(|(p, s)| (0..s.running.len()).map(move |beam| (p, beam)))
            .collect();
        // Each row's best `keep` continuations (None: the constraint allows nothing).
        let per_row: Vec<Option<Vec<Cand>>> = owners
            .par_iter()
            .zip(logits.par_iter())
            .map(|(&(p, beam), lg)| {
                let h = &searches[p].running[beam];
                let allowed = constraint.map_or(Allowed::Any, |c| c.allowed(p, &h.ids));
                row_candidates(lg, &allowed, h.sum, beam, keep)
            })
            .collect();
        let last_step = step + 1 == cfg.max_new_tokens;
        let norm =
            |sum: f32, len: usize| (sum as f64 / (len as f64).powf(cfg.length_penalty)) as f32;
        let mut src = Vec::new(); // parent row of each next decode row
        let mut next = Vec::new(); // the token it feeds
        let mut row = 0;
        for s in searches.iter_mut() {
            if s.done {
                continue;
            }
            let base = row;
            row += s.running.len();
            let mut cands: Vec<Cand> = Vec::new();
            let mut new_finished = Vec::new();
            for (beam, c) in per_row[base..row].iter().enumerate() {
                match c {
                    Some(c) => cands.extend_from_slice(c),
                    None => {
                        let h = s.running[beam].clone();
                        let score = norm(h.sum, h.ids.len().max(1));
                        new_finished.push((score, h, Finish::Constrained));
                    }
                }
            }
            cands.sort_by(|x, y| {
                y.score
                    .total_cmp(&x.score)
                    .then(x.beam.cmp(&y.beam))
                    .then(x.token.cmp(&y.token))
            });
            cands.truncate(keep);
            let mut running = Vec::with_capacity(b);
            for (rank, c) in cands.iter().enumerate() {
                let eos = tok.eos_ids.contains(&c.token);
                if eos || last_step {
                    // Only the top B may finish; the rest were kept to have B beams to continue.
                    if rank < b {
                        let finish = if eos { Finish::Eos } else { Finish::Length };
                        let h = s.running[c.beam].extend(c);
                        new_finished.push((norm(c.score, step + 1), h, finish));
                    }
                } else if running.len() < b {
                    src.push(base + c.beam);
                    next.push(c.token);
                    running.push(s.running[c.beam].extend(c));
                }
            }
            let full = s.finished.len() == b;
            if !(full && cfg.early_stopping == EarlyStopping::AllFinished) {
                s.finished.extend(new_finished);
                s.finished.sort_by(|x, y| y.0.total_cmp(&x.0));
                s.finished.truncate(b);
            }
            s.running = running;
            s.done = last_step || s.running.is_empty() || {
                let full = s.finished.len() == b;
                let worst = s.finished.last().map_or(f32::NEG_INFINITY, |f| f.0);
                let len = match cfg.early_stopping {
                    EarlyStopping::Never if cfg.length_penalty > 0.0 => cfg.max_new_tokens,
                    _ => step + 1,
                };
                let best = norm(s.running[0].sum, len);
                full && (cfg.early_stopping == EarlyStopping::AllFinished || best <= worst)
            };
            if s.done {
                // Its rows (just pushed) leave the batch.
                let start = src.len() - s.running.len();
                src.truncate(start);
                next.truncate(start);
            }
        }
        if src.is_empty() {
            break;
        }
        cache.reorder_rows(&src)?;
        let n = src.len();
        let new_valid = vec![vec![true]; n];
        let pos = Positions::build(&cache.valid, &new_valid, device)?;
        let x = Tensor::from_vec(next, (n, 1), device)?;
        let hidden = model.forward_hidden(&x, &pos, Some(&mut cache))?; // (n, 1, H)
        cache.push_valid(&new_valid);
        logits = model
            .logits(&hidden.squeeze(1)?)?
            .to_dtype(DType::F32)?
            .to_vec2()?; // (n, V)
    }
    Ok(searches
        .into_iter()
        .enumerate()
        .map(|(p, s)| BeamResult {
            prompt_index: p,
            beams: s
                .finished
                .into_iter()
                .map(|(score, h, finish)| Beam {
                    text: tok.decode(&h.ids, true),
                    token_ids: h.ids,
                    score,
                    sum_logprob: h.sum,
                    logprobs: h.logprobs,
                    constrained_logprobs: h.clogprobs,
                    finish_reason: finish,
                })
                .collect(),
        })
        .collect())
}

/// The best `keep` continuations of one beam (cumulative score `sum`) from its logits (V,), best
/// first; `None` when the constraint allows nothing.
fn row_candidates(
    logits: &[f32],
    allowed: &Allowed,
    sum: f32,
    beam: usize,
    keep: usize,
) -> Option<Vec<Cand>> {
    let lse = |ids: &mut dyn Iterator<Item = usize>| -> f64 {
        let z: Vec<f64> = ids.map(|i| logits[i] as f64).collect();
        let max = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        max + z.iter().map(|&x| (x - max).exp()).sum::<f64>().ln()
    };
    let full = lse(&mut (0..logits.len()));
    let ids: Vec<u32> = match allowed.ids(logits.len()) {
        None => (0..logits.len() as u32).collect(),
        Some(ids) => ids.into_owned(),
    };
    if ids.is_empty() {
        return None;
    }
    let within = if allowed.is_any() {
        full
    } else {
        lse(&mut ids.iter().map(|&i| i as usize))
    };
    let mut top: Vec<u32> = ids;
    let by_logit = |a: &u32, b: &u32| {
        logits[*b as usize]
            .total_cmp(&logits[*a as usize])
            .then(a.cmp(b))
    };
    if top.len() > keep {
        top.select_nth_unstable_by(keep - 1, by_logit);
        top.truncate(keep);
    }
    top.sort_by(by_logit);
    Some(
        top.into_iter()
            .map(|t| {
                let x = logits[t as usize] as f64;
                let logp = (x - full) as f32;
                Cand {
                    score: sum + logp,
                    beam,
                    token: t,
                    logp,
                    clogp: (x - within) as f32,
                }
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn row_candidates_are_the_best_allowed_with_model_logprobs() {
        let z = [0.0f32, 3.0, 1.0, 2.0, -1.0];
        let lse = z.iter().map(|&x| (x as f64).exp()).sum::<f64>().ln();
        let c = row_candidates(&z, &Allowed::Any, -1.0, 0, 2).unwrap();
        assert_eq!(c.iter().map(|c| c.token).collect::<Vec<_>>(), vec![1, 3]);
        assert!((c[0].logp as f64 - (3.0 - lse)).abs() < 1e-6);
        assert!((c[0].score - (c[0].logp - 1.0)).abs() < 1e-6);
        assert_eq!(c[0].logp, c[0].clogp);
        // Constrained: the model log-prob is kept, the constrained one renormalizes.
        let a = Allowed::only(vec![0, 2, 4]);
        let c = row_candidates(&z, &a, 0.0, 1, 4).unwrap();
        assert_eq!(c.iter().map(|c| c.token).collect::<Vec<_>>(), vec![2, 0, 4]);
        let within = (1f64.exp() + 1.0 + (-1f64).exp()).ln();
        assert!((c[0].logp as f64 - (1.0 - lse)).abs() < 1e-6);
        assert!((c[0].clogp as f64 - (1.0 - within)).abs() < 1e-6);
        assert!(row_candidates(&z, &Allowed::nothing(), 0.0, 0, 2).is_none());
    }
}
