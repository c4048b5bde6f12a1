//! RL objectives behind one small trait. Each algorithm is one file with its config, its math
//! (advantages or targets, loss, metrics), docs and tests; variants are chosen in exactly one
//! `match` ([`build`]).
//!
//! The trainer hands an algorithm a flat view of one micro-batch's completion tokens
//! ([`TokenBatch`]) and the current policy's per-token statistics ([`LogProbStats`]: log-prob of
//! the sampled token, and the full-vocabulary mean log-prob that ROVER's successor value needs).
//! The algorithm never sees datasets, text or files; it says where its sequences come from
//! ([`RolloutSource`]) and the trainer brings them.

pub mod dpo;
pub mod grpo;
pub mod rover;
pub mod sft;

use std::collections::BTreeMap;

use anyhow::Result;
use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};

pub use crate::model::ops::LogProbStats;

/// Named scalar metrics of one loss call; the trainer averages them over micro-batches.
pub type Metrics = BTreeMap<String, f64>;

/// Completion tokens of one micro-batch, flattened to N tokens (sequence by sequence). The
/// sequences of a group (a prompt's samples) are contiguous and in rollout order.
pub struct TokenBatch {
    /// log π_old(a_t|s_t) from the policy that generated the batch: (N,)
    pub old_logp: Tensor,
    /// mean over the vocabulary of log π_old(·|s_t): (N,)
    pub old_mean_logp: Tensor,
    /// log π_ref(a_t|s_t) of the frozen reference, when the algorithm asked for one: (N,)
    pub ref_logp: Option<Tensor>,
    /// Per-token advantage (the sequence's, broadcast): (N,)
    pub advantage: Tensor,
    /// Index of the next token of the same sequence, or the token itself for the last one: (N,) u32
    pub next_index: Tensor,
    /// 1 where a next token exists in the sequence, 0 at the last token: (N,)
    pub has_next: Tensor,
    /// Aggregation weight of each token in the mini-batch loss (depends on `loss_type`; the sum
    /// over all micro-batches of one mini-batch is the normalizer the algorithm chose), times
    /// the token's rollout-correction weight where the rollout was approximate: (N,)
    pub weight: Tensor,
    /// Index of the sequence (within the micro-batch) each token belongs to: (N,) u32
    pub sequence: Tensor,
    /// Per sequence: its group (the prompt it answers), S entries.
    pub groups: Vec<usize>,
    /// Number of tokens N.
    pub num_tokens: usize,
}

/// One sequence of a micro-batch as the rollout left it: the input to [`TokenBatch::new`].
pub struct SequenceTargets<'a> {
    /// Per completion token: log π_old of the sampled token.
    pub old_logp: &'a [f32],
    /// Per completion token: mean over the vocabulary of log π_old.
    pub old_mean_logp: &'a [f32],
    pub advantage: f32,
    /// Aggregation weight of each of its tokens ([`Algorithm::token_weight`]).
    pub weight: f32,
    /// Per token: the rollout correction's importance weight (`train::correction`), which
    /// multiplies `weight`; empty when the rollout sampled from π_old itself.
    pub is_weight: &'a [f32],
    /// The group it belongs to (its prompt's index in the step).
    pub group: usize,
}

impl TokenBatch {
    /// Flatten sequences into one token batch, linking each token to its successor in the same
    /// sequence (ROVER's Q'); `ref_logp` is (N,) when a reference model is used.
    pub fn new(
        seqs: &[SequenceTargets],
        ref_logp: Option<Tensor>,
        device: &Device,
    ) -> candle_core::Result<Self> {
        let (mut old, mut old_mean, mut adv, mut next, mut has_next, mut weight) =
            (vec![], vec![], vec![], vec![], vec![], vec![]);
        let mut sequence = vec![];
        for (k, s) in seqs.iter().enumerate() {
            let n = s.old_logp.len();
            let base = old.len() as u32;
            old.extend_from_slice(s.old_logp);
            old_mean.extend_from_slice(s.old_mean_logp);
            adv.extend(std::iter::repeat_n(s.advantage, n));
            next.extend((0..n as u32).map(|j| base + (j + 1).min(n as u32 - 1)));
            has_next.extend((0..n).map(|j| if j + 1 < n { 1f32 } else { 0.0 }));
            if s.is_weight.is_empty() {
                weight.extend(std::iter::repeat_n(s.weight, n));
            } else {
                weight.extend(s.is_weight.iter().map(|&w| s.weight * w));
            }
            sequence.extend(std::iter::repeat_n(k as u32, n));
        }
        let n = old.len();
        let f = |v: Vec<f32>| Tensor::from_vec(v, n, device);
        Ok(Self {
            old_logp: f(old)?,
            old_mean_logp: f(old_mean)?,
            ref_logp,
            advantage: f(adv)?,
            next_index: Tensor::from_vec(next, n, device)?,
            has_next: f(has_next)?,
            weight: f(weight)?,
            sequence: Tensor::from_vec(sequence, n, device)?,
            groups: seqs.iter().map(|s| s.group).collect(),
            num_tokens: n,
        })
    }

    /// Per-sequence sums of a per-token quantity `x` (N,): (S,). E.g. a sequence's log-prob.
    pub fn sequence_sums(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let s = self.groups.len();
        Tensor::zeros(s, x.dtype(), x.device())?.index_add(&self.sequence, x, 0)
    }
}

/// Shape of a mini-batch, for aggregation weights that normalize across micro-batches.
#[derive(Clone, Copy, Debug)]
pub struct MinibatchShape {
    pub num_sequences: usize,
    /// Distinct groups (prompts, or preference rows) among them.
    pub num_groups: usize,
    pub num_tokens: usize,
    pub max_new_tokens: usize,
}

/// Where an algorithm's training sequences come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RolloutSource {
    /// Sampled from the current policy, `num_generations` per prompt, then judged (RL).
    Policy,
    /// The dataset's own reference completion, one per prompt (SFT); nothing is judged.
    Reference,
    /// Each preference row as one group: its chosen completion, then its rejected ones (DPO,
    /// S-DPO); nothing is judged.
    Preference,
}

pub trait Algorithm {
    fn name(&self) -> &'static str;

    /// Where the trainer takes this algorithm's sequences from.
    fn rollout_source(&self) -> RolloutSource {
        RolloutSource::Policy
    }

    /// Per-sample advantages (or centered rewards, for ROVER) from the rewards of a rollout batch
    /// laid out group by group (`group_size` samples per prompt).
    fn advantages(&self, rewards: &[f32], group_size: usize) -> Vec<f32>;

    /// Aggregation weight of each token of a sequence of `len` tokens in a mini-batch of `mb`.
    fn token_weight(&self, len: usize, mb: &MinibatchShape) -> f32;

    /// Loss of one micro-batch (already weighted, so micro-batch gradients just add up) and its
    /// metrics.
    fn loss(&self, cur: &LogProbStats, batch: &TokenBatch) -> Result<(Tensor, Metrics)>;

    /// Whether a frozen reference model must be kept (KL penalty).
    fn needs_reference(&self) -> bool {
        false
    }

    /// Whether a sequence with zero advantage contributes exactly zero gradient, so the trainer
    /// may skip its forward/backward (it still counts in the loss normalizer). True for a
    /// clipped surrogate without KL; false for ROVER, whose target also has the successor value.
    fn zero_advantage_has_no_gradient(&self) -> bool {
        false
    }

    /// Whether the loss couples the sequences of a group (a preference group, a normalizer over
    /// the group), so mini- and micro-batches must hold whole groups.
    fn keeps_groups_whole(&self) -> bool {
        false
    }
}

/// The `[algorithm]` table of a recipe.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "name", rename_all = "snake_case")]
pub enum AlgoConfig {
    Grpo(grpo::GrpoConfig),
    Rover(rover::RoverConfig),
    /// Supervised fine-tuning on the dataset's reference completions (warm starts).
    Sft(sft::SftConfig),
    /// DPO on preference rows (`[data] source = "preference"`) against the recipe's model.
    Dpo(dpo::DpoConfig),
    /// S-DPO: one chosen against all its rejected completions in one softmax.
    Sdpo(dpo::DpoConfig),
}

impl AlgoConfig {
    /// The algorithm's own number of mini-batches per rollout batch, when it has one (ROVER
    /// needs several optimizer steps); `[train] num_minibatches` overrides it (see `Plan`).
    pub fn num_minibatches(&self) -> Option<usize> {
        match self {
            Self::Rover(c) => Some(c.num_minibatches),
            Self::Grpo(_) | Self::Sft(_) | Self::Dpo(_) | Self::Sdpo(_) => None,
        }
    }
}

/// The one place a variant becomes an implementation.
pub fn build(cfg: &AlgoConfig) -> Result<Box<dyn Algorithm>> {
    Ok(match cfg {
        AlgoConfig::Grpo(c) => Box::new(grpo::Grpo::new(c)?),
        AlgoConfig::Rover(c) => Box::new(rover::Rover::new(c)?),
        AlgoConfig::Sft(c) => Box::new(sft::Sft::new(c)),
        AlgoConfig::Dpo(c) => Box::new(dpo::PreferenceAlgo::new(dpo::PreferenceKind::Dpo, c)?),
        AlgoConfig::Sdpo(c) => Box::new(dpo::PreferenceAlgo::new(dpo::PreferenceKind::Sdpo, c)?),
    })
}

/// Masked sum Σ w·x over tokens: the aggregation every algorithm ends with.
pub fn weighted_sum(x: &Tensor, w: &Tensor) -> candle_core::Result<Tensor> {
    (x * w)?.sum_all()
}

/// Weighted mean of a detached per-token quantity, for metrics.
pub fn mean_of(x: &Tensor) -> f64 {
    x.mean_all()
        .and_then(|m| m.to_scalar::<f32>())
        .map(f64::from)
        .unwrap_or(f64::NAN)
}
