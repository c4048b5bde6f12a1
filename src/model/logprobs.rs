//! Log-prob statistics of given completions under a decoder: what the trainer recomputes with
//! gradients (current policy), without them (frozen reference), and what tests and toys read.
//! Knows nothing of RL: (prompt, completion) token pairs in, per-token statistics out.

use candle_core::{Device, Tensor};

use super::ops::{self, LogProbStats};
use super::{Decoder, Positions, SharedPrefixBatch};

/// How the (N, V) logits of the completion tokens and their (N,) targets become statistics:
/// [`ops::logprob_stats`] at a temperature, or a caller's own (e.g. a constrained policy's).
pub type StatsFn<'a> = dyn Fn(&Tensor, &Tensor) -> candle_core::Result<LogProbStats> + 'a;

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
) -> anyhow::Result<LogProbStats> {
    stats_of(dec, seqs, device, Head::Tempered(temperature))
}

/// What becomes of the completion tokens' hidden states: the plain tempered statistics, fused
/// with the LM head ([`ops::head_logprob_stats`]: the (N, V) logits never exist whole), or a
/// caller's statistics of the materialized logits.
#[derive(Clone, Copy)]
enum Head<'a> {
    Tempered(f64),
    Custom(&'a StatsFn<'a>),
}

/// [`completion_stats`] with the statistics taken by `stats` from the completion tokens' logits
/// (N, V) and targets (N,), in the same flat order.
pub fn completion_stats_with(
    dec: &Decoder,
    seqs: &[(&[u32], &[u32])],
    device: &Device,
    stats: &StatsFn,
) -> anyhow::Result<LogProbStats> {
    stats_of(dec, seqs, device, Head::Custom(stats))
}

fn stats_of(
    dec: &Decoder,
    seqs: &[(&[u32], &[u32])],
    device: &Device,
    head: Head,
) -> anyhow::Result<LogProbStats> {
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
        return unshared(dec, seqs, device, head);
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
    stats_at_rows(dec, &hidden, rows, seqs, device, head)
}

/// [`completion_stats`] with every row run in full (prompt + completion): the reference the
/// shared-prefix path is tested against, and the path for batches of distinct prompts.
pub fn completion_stats_unshared(
    dec: &Decoder,
    seqs: &[(&[u32], &[u32])],
    temperature: f64,
    device: &Device,
) -> anyhow::Result<LogProbStats> {
    unshared(dec, seqs, device, Head::Tempered(temperature))
}

fn unshared(
    dec: &Decoder,
    seqs: &[(&[u32], &[u32])],
    device: &Device,
    head: Head,
) -> anyhow::Result<LogProbStats> {
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
    stats_at_rows(dec, &hidden, rows, seqs, device, head)
}

/// Log-prob statistics of the completion tokens from the hidden states (B, T, H) at `rows` (flat
/// B*T indices, one per completion token, sequence by sequence). Only those positions go through
/// the LM head: the (N, V) logits are the biggest tensor.
fn stats_at_rows(
    dec: &Decoder,
    hidden: &Tensor,
    rows: Vec<u32>,
    seqs: &[(&[u32], &[u32])],
    device: &Device,
    head: Head,
) -> anyhow::Result<LogProbStats> {
    let (b, t, h) = hidden.dims3()?;
    let targets: Vec<u32> = seqs.iter().flat_map(|(_, c)| c.iter().copied()).collect();
    let n = rows.len();
    let rows = Tensor::from_vec(rows, n, device)?;
    let picked = hidden.reshape((b * t, h))?.index_select(&rows, 0)?; // (N, H)
    let targets = Tensor::from_vec(targets, n, device)?;
    Ok(match head {
        Head::Tempered(temp) => {
            ops::head_logprob_stats(&picked, dec.lm_head_weight(), &targets, temp)?
        }
        Head::Custom(stats) => stats(&dec.logits(&picked)?, &targets)?, // logits (N, V)
    })
}
