//! GRPO family (DeepSeekMath GRPO, Dr. GRPO, DAPO): group-relative advantages and the clipped
//! surrogate, with TRL's option names.
//!
//! Advantage of sample i in its group: A_i = (r_i − mean_group) / (std + 1e-4), where std is the
//! group's (`scale_rewards = "group"`, GRPO), the whole batch's (`"batch"`), or 1 (`"none"`,
//! Dr. GRPO: dividing by a group's std up-weights near-uniform groups, a difficulty bias).
//! Per token: ρ = π/π_old, loss = −min(ρA, clip(ρ, 1−ε, 1+ε_high)A) + β·k3(π_ref‖π).
//! Aggregation (`loss_type`): `grpo` averages tokens within each sequence and then sequences
//! (length bias: long wrong answers are penalized less per token); `dr_grpo` divides the token sum
//! by sequences × max_new_tokens (unbiased, constant normalizer); `dapo` (and `bnpo`) average over
//! all tokens of the mini-batch (every token counts the same).

use anyhow::{ensure, Result};
use candle_core::Tensor;
use serde::{Deserialize, Serialize};

use super::{mean_of, weighted_sum, Algorithm, LogProbStats, Metrics, MinibatchShape, TokenBatch};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScaleRewards {
    Group,
    Batch,
    None,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LossType {
    Grpo,
    DrGrpo,
    Dapo,
    Bnpo,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GrpoConfig {
    pub loss_type: LossType,
    pub scale_rewards: ScaleRewards,
    /// Lower clip range ε.
    pub epsilon: f64,
    /// Upper clip range (DAPO's clip-higher); defaults to `epsilon`.
    pub epsilon_high: Option<f64>,
    /// KL coefficient to a frozen reference (k3 estimator); 0 = no reference model is loaded.
    pub beta: f64,
}

impl Default for GrpoConfig {
    fn default() -> Self {
        Self {
            loss_type: LossType::Dapo,
            scale_rewards: ScaleRewards::Group,
            epsilon: 0.2,
            epsilon_high: None,
            beta: 0.0,
        }
    }
}

pub struct Grpo {
    cfg: GrpoConfig,
}

impl Grpo {
    pub fn new(cfg: &GrpoConfig) -> Result<Self> {
        ensure!(
            cfg.epsilon >= 0.0,
            "algorithm.epsilon must be ≥ 0, got {}",
            cfg.epsilon
        );
        ensure!(
            cfg.epsilon_high.unwrap_or(0.0) >= 0.0,
            "algorithm.epsilon_high must be ≥ 0"
        );
        ensure!(
            cfg.beta >= 0.0,
            "algorithm.beta must be ≥ 0, got {}",
            cfg.beta
        );
        Ok(Self { cfg: cfg.clone() })
    }
}

/// Mean and unbiased std (torch's default) of a slice, accumulated in f64: a group of equal
/// rewards then has exactly zero deviations (in f32, eight 0.1s have a mean 1 ulp off, which the
/// 1e-4 guard turned into advantages of ~7e-5 instead of 0).
pub fn mean_std(x: &[f32]) -> (f32, f32) {
    let n = x.len() as f64;
    let mean = x.iter().map(|&v| v as f64).sum::<f64>() / n;
    let var = if x.len() > 1 {
        x.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / (n - 1.0)
    } else {
        0.0
    };
    (mean as f32, var.sqrt() as f32)
}

/// Group-relative advantages, group by group.
pub fn group_advantages(rewards: &[f32], group_size: usize, scale: ScaleRewards) -> Vec<f32> {
    let batch_std = mean_std(rewards).1;
    rewards
        .chunks(group_size.max(1))
        .flat_map(|g| {
            let (mean, std) = mean_std(g);
            let div = match scale {
                ScaleRewards::Group => std + 1e-4,
                ScaleRewards::Batch => batch_std + 1e-4,
                ScaleRewards::None => 1.0,
            };
            g.iter()
                .map(move |&r| ((r as f64 - mean as f64) / div as f64) as f32)
                .collect::<Vec<_>>()
        })
        .collect()
}

impl Algorithm for Grpo {
    fn name(&self) -> &'static str {
        "grpo"
    }

    fn advantages(&self, rewards: &[f32], group_size: usize) -> Vec<f32> {
        group_advantages(rewards, group_size, self.cfg.scale_rewards)
    }

    fn token_weight(&self, len: usize, mb: &MinibatchShape) -> f32 {
        match self.cfg.loss_type {
            LossType::Grpo => 1.0 / (len.max(1) * mb.num_sequences.max(1)) as f32,
            LossType::DrGrpo => 1.0 / (mb.num_sequences.max(1) * mb.max_new_tokens.max(1)) as f32,
            LossType::Dapo | LossType::Bnpo => 1.0 / mb.num_tokens.max(1) as f32,
        }
    }

    fn loss(&self, cur: &LogProbStats, b: &TokenBatch) -> Result<(Tensor, Metrics)> {
        let eps_lo = self.cfg.epsilon;
        let eps_hi = self.cfg.epsilon_high.unwrap_or(eps_lo);
        let log_ratio = (&cur.logp - &b.old_logp)?; // (N,)
        let ratio = log_ratio.exp()?;
        let clipped = ratio.clamp(1.0 - eps_lo, 1.0 + eps_hi)?;
        let a = &b.advantage;
        let surrogate = (&ratio * a)?.minimum(&(&clipped * a)?)?; // (N,)
        let mut per_token = surrogate.neg()?;
        let mut metrics = Metrics::new();
        if let (true, Some(r)) = (self.cfg.beta > 0.0, &b.ref_logp) {
            let d = (r - &cur.logp)?; // log π_ref − log π
            let kl = ((d.exp()? - &d)? - 1.0)?; // k3 ≥ 0
            metrics.insert("kl".into(), mean_of(&kl.detach()));
            per_token = (per_token + (kl * self.cfg.beta)?)?;
        }
        let loss = weighted_sum(&per_token, &b.weight)?;
        // Clip fractions as TRL reports them: where the clipped branch is the active one.
        let r = ratio.detach().to_vec1::<f32>()?;
        let adv = a.to_vec1::<f32>()?;
        let n = r.len().max(1) as f64;
        let low = r
            .iter()
            .zip(&adv)
            .filter(|(r, a)| **r < (1.0 - eps_lo) as f32 && **a < 0.0)
            .count() as f64
            / n;
        let high = r
            .iter()
            .zip(&adv)
            .filter(|(r, a)| **r > (1.0 + eps_hi) as f32 && **a > 0.0)
            .count() as f64
            / n;
        metrics.insert("clip_low".into(), low);
        metrics.insert("clip_high".into(), high);
        metrics.insert("clip_fraction".into(), low + high);
        metrics.insert("ratio_mean".into(), mean_of(&ratio.detach()));
        Ok((loss, metrics))
    }

    fn needs_reference(&self) -> bool {
        self.cfg.beta > 0.0
    }

    fn zero_advantage_has_no_gradient(&self) -> bool {
        // −min(r·0, clip(r)·0) is 0 for every θ; the k3 KL term is not.
        self.cfg.beta == 0.0
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
    fn equal_rewards_give_exactly_zero_advantages() {
        for scale in [ScaleRewards::Group, ScaleRewards::Batch, ScaleRewards::None] {
            let a = group_advantages(&[0.1; 8], 8, scale);
            assert!(a.iter().all(|&x| x == 0.0), "{scale:?}: {a:?}");
        }
    }

    #[test]
    fn advantages_by_hand() {
        // Group [1, 0, 0, 1]: mean 0.5, unbiased std sqrt(1/3) = 0.57735.
        let a = group_advantages(&[1.0, 0.0, 0.0, 1.0], 4, ScaleRewards::Group);
        let s = 0.5 / (0.577_350_3 + 1e-4);
        for (x, y) in a.iter().zip([s, -s, -s, s]) {
            assert!((x - y).abs() < 1e-5);
        }
        assert_eq!(
            group_advantages(&[1.0, 0.0, 0.0, 1.0], 4, ScaleRewards::None),
            vec![0.5, -0.5, -0.5, 0.5]
        );
        // A group where every sample agrees carries no signal.
        assert_eq!(
            group_advantages(&[1.0, 1.0], 2, ScaleRewards::Group),
            vec![0.0, 0.0]
        );
        // Batch scaling: groups [1,0] and [0,0]: batch std of [1,0,0,0] = 0.5.
        let b = group_advantages(&[1.0, 0.0, 0.0, 0.0], 2, ScaleRewards::Batch);
        assert!((b[0] - 0.5 / 0.5001).abs() < 1e-5 && b[2] == 0.0);
    }

    fn batch(old: &[f32], adv: &[f32], w: &[f32]) -> TokenBatch {
        let n = old.len();
        TokenBatch {
            old_logp: t(old),
            old_mean_logp: t(&vec![0.0; n]),
            ref_logp: None,
            advantage: t(adv),
            next_index: Tensor::new(&vec![0u32; n][..], &Device::Cpu).unwrap(),
            has_next: t(&vec![0.0; n]),
            weight: t(w),
            sequence: Tensor::new(&vec![0u32; n][..], &Device::Cpu).unwrap(),
            groups: vec![0],
            num_tokens: n,
        }
    }

    fn stats(logp: &[f32]) -> LogProbStats {
        let n = logp.len();
        LogProbStats {
            logp: t(logp),
            mean_logp: t(&vec![0.0; n]),
            entropy: t(&vec![0.0; n]),
        }
    }

    #[test]
    fn token_weights_per_loss_type() {
        let mb = MinibatchShape {
            num_sequences: 2,
            num_groups: 2,
            num_tokens: 10,
            max_new_tokens: 8,
        };
        let w = |lt| {
            Grpo::new(&GrpoConfig {
                loss_type: lt,
                ..Default::default()
            })
            .unwrap()
            .token_weight(4, &mb)
        };
        assert_eq!(w(LossType::Grpo), 1.0 / 8.0);
        assert_eq!(w(LossType::DrGrpo), 1.0 / 16.0);
        assert_eq!(w(LossType::Dapo), 1.0 / 10.0);
    }

    #[test]
    fn clipped_loss_by_hand() {
        let g = Grpo::new(&GrpoConfig {
            epsilon: 0.2,
            ..Default::default()
        })
        .unwrap();
        // ratio e^{0.5} ≈ 1.6487 with A = +1 → clipped at 1.2; ratio e^{−0.5} ≈ 0.6065 with A = −1
        // → min(−0.6065, −0.8) = −0.8; ratio 1 with A = 2 → 2.
        let cur = stats(&[0.5, -0.5, 0.0]);
        let b = batch(&[0.0, 0.0, 0.0], &[1.0, -1.0, 2.0], &[1.0, 1.0, 1.0]);
        let (loss, m) = g.loss(&cur, &b).unwrap();
        let want = -(1.2 - 0.8 + 2.0);
        assert!((loss.to_scalar::<f32>().unwrap() - want).abs() < 1e-5);
        assert!((m["clip_fraction"] - 2.0 / 3.0).abs() < 1e-9);
    }

    #[test]
    fn kl_term_is_k3() {
        let g = Grpo::new(&GrpoConfig {
            beta: 0.5,
            ..Default::default()
        })
        .unwrap();
        let cur = stats(&[-1.0]);
        let mut b = batch(&[-1.0], &[0.0], &[1.0]);
        b.ref_logp = Some(t(&[-2.0]));
        let (loss, _) = g.loss(&cur, &b).unwrap();
        let d: f32 = -1.0; // ref − cur
        let want = 0.5 * (d.exp() - d - 1.0);
        assert!((loss.to_scalar::<f32>().unwrap() - want).abs() < 1e-6);
    }
}
