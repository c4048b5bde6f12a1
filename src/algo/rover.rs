//! ROVER (arXiv:2509.24981): the optimal action recovered from the Q-function of a uniformly
//! random policy, with the token-level Q read off the model's own log-ratio.
//!
//! Q(s_t, a_t) = ρ·[log π_θ(a_t|s_t) − log π_old(a_t|s_t)] (logits divided by the sampling
//! temperature), successor value Q'(s_{t+1}) = ρ·[meanlogp_θ(s_{t+1}) − meanlogp_old(s_{t+1})]
//! with meanlogp = mean over the whole vocabulary of log-softmax (the uniform policy's average of
//! Q), zero after the last response token. Target Q̂_t = r̃ + β·Q'_t, stop-gradient, with r̃ the
//! group-mean-centered reward broadcast to every token; loss = token mean of (Q − Q̂)².
//!
//! On the first mini-batch of a rollout batch θ = θ_old, so Q = Q' = 0 and the update is plain
//! centered-reward REINFORCE; Q' only acts from the second optimizer step on the same batch, hence
//! the default of 4 mini-batches (the official configs). `reward_std_normalization`: the paper
//! centers without dividing by the std; the official Math script feeds GRPO-normalized advantages
//! (divided by the group std). Off by default (the paper and the Countdown code).
//! Old-policy statistics come from the rollout itself (same weights, f32), not a second forward.
//!
//! Under a generation constraint (`[generation] constraint`, a fixed action space such as
//! Semantic-ID items) the policy is the renormalized constrained one and "the uniform policy" is
//! uniform over the *allowed* tokens: meanlogp is the mean of log π_C over the allowed set at
//! each state (finite; over the whole vocabulary it would be −∞), in the sampler and in the
//! trainer alike (`generate::constraint`, `train::constrained`). A state with one allowed token
//! (EOS after a whole item) has log π_C = meanlogp = 0: a forced token is no action and gets no
//! gradient.

use anyhow::{ensure, Result};
use candle_core::Tensor;
use serde::{Deserialize, Serialize};

use super::grpo::{group_advantages, ScaleRewards};
use super::{mean_of, weighted_sum, Algorithm, LogProbStats, Metrics, MinibatchShape, TokenBatch};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RoverConfig {
    /// ρ: scale of the log-ratio that parameterizes Q.
    pub rho: f64,
    /// β: scale of the successor value Q' in the target (0 collapses entropy, per the paper).
    pub beta: f64,
    /// Divide centered rewards by the group std (the official Math script) instead of centering only.
    pub reward_std_normalization: bool,
    /// Clip the log-ratio to [log(1−ε), log(1+ε)] (the official code's `use_rover_clip`); off by default.
    pub log_ratio_clip: Option<f64>,
    /// Optimizer steps per rollout batch (`[train] num_minibatches` overrides it).
    pub num_minibatches: usize,
}

impl Default for RoverConfig {
    fn default() -> Self {
        Self {
            rho: 1.0,
            beta: 1.0,
            reward_std_normalization: false,
            log_ratio_clip: None,
            num_minibatches: 4,
        }
    }
}

pub struct Rover {
    cfg: RoverConfig,
}

impl Rover {
    pub fn new(cfg: &RoverConfig) -> Result<Self> {
        ensure!(cfg.rho > 0.0, "algorithm.rho must be > 0, got {}", cfg.rho);
        ensure!(
            cfg.beta >= 0.0,
            "algorithm.beta must be ≥ 0, got {}",
            cfg.beta
        );
        ensure!(
            cfg.num_minibatches >= 1,
            "algorithm.num_minibatches must be ≥ 1"
        );
        if let Some(e) = cfg.log_ratio_clip {
            ensure!(
                e > 0.0 && e < 1.0,
                "algorithm.log_ratio_clip must be in (0, 1), got {e}"
            );
        }
        Ok(Self { cfg: cfg.clone() })
    }
}

impl Algorithm for Rover {
    fn name(&self) -> &'static str {
        "rover"
    }

    fn advantages(&self, rewards: &[f32], group_size: usize) -> Vec<f32> {
        let scale = if self.cfg.reward_std_normalization {
            ScaleRewards::Group
        } else {
            ScaleRewards::None
        };
        group_advantages(rewards, group_size, scale)
    }

    fn token_weight(&self, _len: usize, mb: &MinibatchShape) -> f32 {
        1.0 / mb.num_tokens.max(1) as f32
    }

    fn loss(&self, cur: &LogProbStats, b: &TokenBatch) -> Result<(Tensor, Metrics)> {
        let rho = self.cfg.rho;
        let mut log_ratio = (&cur.logp - &b.old_logp)?; // (N,)
        if let Some(e) = self.cfg.log_ratio_clip {
            log_ratio = log_ratio.clamp((1.0 - e).ln(), (1.0 + e).ln())?;
        }
        let q = (log_ratio * rho)?; // (N,)

        // Successor value at s_{t+1}: the next token's state in the same sequence; 0 after the
        // last.
        let mean_diff = (&cur.mean_logp - &b.old_mean_logp)?.detach(); // (N,)
        let q_next = ((mean_diff.index_select(&b.next_index, 0)? * rho)? * &b.has_next)?; // (N,)
        let target = (&b.advantage + (&q_next * self.cfg.beta)?)?.detach(); // (N,)
        let err = (&q - &target)?.sqr()?;
        let loss = weighted_sum(&err, &b.weight)?;
        let mut m = Metrics::new();
        m.insert("q_abs_mean".into(), mean_of(&q.detach().abs()?));
        m.insert("q_next_mean".into(), mean_of(&q_next));
        m.insert("target_mean".into(), mean_of(&target));
        Ok((loss, m))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn t(v: &[f32]) -> Tensor {
        Tensor::new(v, &Device::Cpu).unwrap()
    }

    #[test]
    fn centered_rewards_without_std() {
        let r = Rover::new(&RoverConfig::default()).unwrap();
        assert_eq!(
            r.advantages(&[1.0, 0.1, 0.0, 0.1, 1.0, 1.0], 3),
            vec![
                1.0 - 1.1 / 3.0,
                0.1 - 1.1 / 3.0,
                0.0 - 1.1 / 3.0,
                0.1 - 2.1 / 3.0,
                1.0 - 2.1 / 3.0,
                1.0 - 2.1 / 3.0
            ]
        );
    }

    #[test]
    fn loss_by_hand() {
        // Two tokens of one sequence. cur logp [−1, −2], old [−1.5, −2]: Q = [0.5, 0].
        // mean_logp diff [_, 0.3] → Q'_0 = 0.3 (next token's), Q'_1 = 0 (last).
        // advantage 1 → targets [1.3, 1.0]; errors² [0.64, 1.0]; weights 1/2 → 0.82.
        let r = Rover::new(&RoverConfig::default()).unwrap();
        let cur = LogProbStats {
            logp: t(&[-1.0, -2.0]),
            mean_logp: t(&[-10.0, -9.7]),
            entropy: t(&[0.0, 0.0]),
        };
        let b = TokenBatch {
            old_logp: t(&[-1.5, -2.0]),
            old_mean_logp: t(&[-10.0, -10.0]),
            ref_logp: None,
            advantage: t(&[1.0, 1.0]),
            next_index: Tensor::new(&[1u32, 1], &Device::Cpu).unwrap(),
            has_next: t(&[1.0, 0.0]),
            weight: t(&[0.5, 0.5]),
            sequence: Tensor::new(&[0u32, 0], &Device::Cpu).unwrap(),
            groups: vec![0],
            num_tokens: 2,
        };
        let (loss, m) = r.loss(&cur, &b).unwrap();
        assert!((loss.to_scalar::<f32>().unwrap() - 0.82).abs() < 1e-5);
        assert!((m["q_next_mean"] - 0.15).abs() < 1e-5);
    }
}
