//! Supervised fine-tuning: the masked negative log-likelihood of the dataset's reference
//! completions (warm starts before RL). The trainer brings one reference completion per prompt
//! ([`RolloutSource::Reference`]; each data source declares where it lives); the loss is the
//! token mean over the mini-batch, −Σ_t logp_t / N, exactly what a TRL `SFTTrainer` minimizes
//! with completion-only loss.

use anyhow::Result;
use candle_core::Tensor;
use serde::{Deserialize, Serialize};

use super::{
    weighted_sum, Algorithm, LogProbStats, Metrics, MinibatchShape, RolloutSource, TokenBatch,
};

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SftConfig {}

pub struct Sft;

impl Sft {
    pub fn new(_cfg: &SftConfig) -> Self {
        Self
    }
}

impl Algorithm for Sft {
    fn name(&self) -> &'static str {
        "sft"
    }

    fn rollout_source(&self) -> RolloutSource {
        RolloutSource::Reference
    }

    /// Reference completions are targets, not samples: every one counts fully.
    fn advantages(&self, rewards: &[f32], _group_size: usize) -> Vec<f32> {
        vec![1.0; rewards.len()]
    }

    fn token_weight(&self, _len: usize, mb: &MinibatchShape) -> f32 {
        1.0 / mb.num_tokens.max(1) as f32
    }

    fn loss(&self, cur: &LogProbStats, b: &TokenBatch) -> Result<(Tensor, Metrics)> {
        let loss = weighted_sum(&cur.logp, &b.weight)?.neg()?;
        Ok((loss, Metrics::new()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::algo::SequenceTargets;
    use candle_core::Device;

    #[test]
    fn loss_is_the_token_mean_nll_over_the_minibatch() {
        // Two sequences of 2 and 1 tokens: NLL = (1 + 2 + 3) / 3 = 2.
        let mb = MinibatchShape {
            num_sequences: 2,
            num_groups: 2,
            num_tokens: 3,
            max_new_tokens: 8,
        };
        let a = Sft::new(&SftConfig {});
        let w = a.token_weight(2, &mb);
        let zeros = [0.0f32; 2];
        let seqs = [
            SequenceTargets {
                old_logp: &zeros,
                old_mean_logp: &zeros,
                advantage: 1.0,
                weight: w,
                is_weight: &[],
                group: 0,
            },
            SequenceTargets {
                old_logp: &zeros[..1],
                old_mean_logp: &zeros[..1],
                advantage: 1.0,
                weight: w,
                is_weight: &[],
                group: 1,
            },
        ];
        let b = TokenBatch::new(&seqs, None, &Device::Cpu).unwrap();
        let t = |v: &[f32]| Tensor::new(v, &Device::Cpu).unwrap();
        let cur = LogProbStats {
            logp: t(&[-1.0, -2.0, -3.0]),
            mean_logp: t(&[0.0; 3]),
            entropy: t(&[0.0; 3]),
        };
        let (loss, _) = a.loss(&cur, &b).unwrap();
        assert!((loss.to_scalar::<f32>().unwrap() - 2.0).abs() < 1e-6);
        // The token batch knows each token's sequence: per-sequence sums [-3, -3].
        let sums = b
            .sequence_sums(&cur.logp)
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert_eq!(sums, [-3.0, -3.0]);
        assert_eq!(a.rollout_source(), RolloutSource::Reference);
    }
}
