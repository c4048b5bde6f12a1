//! Log-prob statistics of completions under the rollout's constraint: what the update
//! recomputes (with gradients) and what a beam rollout takes as its old policy (without) — one
//! function, so both read the same distribution the sampler drew from.
//!
//! With a constraint that is the renormalized constrained policy π_C (softmax over the allowed
//! set, see [`crate::generate::constraint`]): the allowed sets are replayed along each completion
//! ([`allowed_along`], with the sequence's group as the constraint's prompt index, as in the
//! rollout) and [`constrained_logprob_stats`] turns the logits into log π_C(token), the mean of
//! log π_C over the *allowed* set (ROVER's successor value: the uniform policy over the actions
//! that exist; over the whole vocabulary it would be −∞) and the entropy of π_C. Without one it
//! is exactly [`completion_stats`] (the fused kernel), so unconstrained runs are unchanged.

use anyhow::Result;
use candle_core::{Device, Tensor};

use crate::algo::LogProbStats;
use crate::generate::constraint::{allowed_along, constrained_logprob_stats, Allowed, Constraint};
use crate::model::logprobs::{completion_stats, completion_stats_with};
use crate::model::Decoder;

/// Rows of the (rows, V) mask built at a time: bounds the mask's memory on long completions.
const MASK_ROWS: usize = 256;

/// Per-token statistics of `seqs` (prompt, completion) under `dec` at `temperature`; `groups[i]`
/// is sequence i's prompt index in the step (what the constraint sees).
pub fn policy_stats(
    dec: &Decoder,
    seqs: &[(&[u32], &[u32])],
    groups: &[usize],
    constraint: Option<&dyn Constraint>,
    temperature: f64,
    device: &Device,
) -> Result<LogProbStats> {
    let Some(c) = constraint else {
        return completion_stats(dec, seqs, temperature, device);
    };
    let allowed: Vec<Allowed> = seqs
        .iter()
        .zip(groups)
        .flat_map(|((_, completion), &g)| allowed_along(c, g, completion))
        .collect();
    completion_stats_with(dec, seqs, device, &|logits, targets| {
        masked_in_blocks(logits, targets, &allowed, temperature)
    })
}

/// [`constrained_logprob_stats`] over blocks of at most [`MASK_ROWS`] rows, concatenated.
fn masked_in_blocks(
    logits: &Tensor,
    targets: &Tensor,
    allowed: &[Allowed],
    temperature: f64,
) -> candle_core::Result<LogProbStats> {
    let n = allowed.len();
    if n <= MASK_ROWS {
        return constrained_logprob_stats(logits, targets, allowed, temperature);
    }
    let (mut logp, mut mean, mut ent) = (vec![], vec![], vec![]);
    for start in (0..n).step_by(MASK_ROWS) {
        let len = MASK_ROWS.min(n - start);
        let s = constrained_logprob_stats(
            &logits.narrow(0, start, len)?, // (len, V)
            &targets.narrow(0, start, len)?,
            &allowed[start..start + len],
            temperature,
        )?;
        logp.push(s.logp);
        mean.push(s.mean_logp);
        ent.push(s.entropy);
    }
    Ok(LogProbStats {
        logp: Tensor::cat(&logp, 0)?,
        mean_logp: Tensor::cat(&mean, 0)?,
        entropy: Tensor::cat(&ent, 0)?,
    })
}
