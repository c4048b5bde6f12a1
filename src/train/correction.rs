//! Rollout correction: importance weights for rollouts sampled from approximate weights.
//!
//! With `[generation] rollout_precision = "int8"` the tokens are drawn from the int8 model
//! π_rollout, while the loss's π_old is the exact model's, recomputed on what was sampled. The
//! per-token loss is an expectation under π_old, so each token's term is weighted by
//! ρ_t = π_old(a_t|s_t) / π_rollout(a_t|s_t), capped so a rare token cannot dominate
//! (truncated importance sampling, Yao et al. 2025; TRL's `vllm_importance_sampling_correction`,
//! verl's rollout correction):
//!
//! - `token_truncate`: w_t = min(ρ_t, cap) (TIS);
//! - `token_mask`: w_t = ρ_t where ρ_t ≤ cap, else 0 (the token leaves the loss);
//! - `sequence_truncate` / `sequence_mask`: the same with the sequence's ratio
//!   ρ = exp(Σ_t log ρ_t) for every token of the sequence;
//! - `none`: w_t = 1 (the bias is left in; for measuring it).
//!
//! The weight multiplies the token's whole loss term (clipped surrogate and KL alike: both are
//! estimates under π_old from samples of π_rollout). Pure functions of the two log-prob
//! vectors; the rollout calls them once per step, the algorithms see only `TokenBatch::weight`.

use serde::{Deserialize, Serialize};

use crate::algo::Metrics;

/// Which weights the rollout samples from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RolloutPrecision {
    /// The trained weights as they are (f32 on CPU): the sampler's log-probs are π_old's.
    #[default]
    Exact,
    /// Weight-only int8 projections and head (`model::ops::Int8Weight`), π_old recomputed exactly.
    Int8,
}

/// How the π_old / π_rollout mismatch enters the loss (module docs).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CorrectionMode {
    None,
    #[default]
    TokenTruncate,
    TokenMask,
    SequenceTruncate,
    SequenceMask,
}

/// A resolved correction: the mode and its cap on the ratio (> 0).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Correction {
    pub mode: CorrectionMode,
    pub cap: f64,
}

impl Correction {
    /// Per-token weights of one sequence from π_old's (`old`) and π_rollout's (`rollout`)
    /// log-probs of its tokens (same length).
    pub fn weights(&self, old: &[f32], rollout: &[f32]) -> Vec<f32> {
        debug_assert_eq!(old.len(), rollout.len());
        // A non-finite ratio gives weight 0 in every mode (`min` would turn NaN into the cap).
        // It cannot come from a sampled token (finite log-prob under the sampler) unless the
        // exact model assigns it probability 0 (ratio 0, weight 0 either way).
        let log_ratio = |i: usize| {
            let d = old[i] as f64 - rollout[i] as f64;
            if d.is_nan() {
                f64::INFINITY
            } else {
                d
            }
        };
        let cap = self.cap;
        let truncate = |r: f64| if r.is_finite() { r.min(cap) } else { 0.0 };
        let mask = |r: f64| if r <= cap { r } else { 0.0 };
        let n = old.len();
        let seq = || (0..n).map(log_ratio).sum::<f64>().exp();
        let w: Vec<f64> = match self.mode {
            CorrectionMode::None => vec![1.0; n],
            CorrectionMode::TokenTruncate => (0..n).map(|i| truncate(log_ratio(i).exp())).collect(),
            CorrectionMode::TokenMask => (0..n).map(|i| mask(log_ratio(i).exp())).collect(),
            CorrectionMode::SequenceTruncate => vec![truncate(seq()); n],
            CorrectionMode::SequenceMask => vec![mask(seq()); n],
        };
        w.into_iter()
            .map(|v| if v.is_finite() { v as f32 } else { 0.0 })
            .collect()
    }
}

/// The mismatch of a rollout batch, over all completion tokens (TRL's
/// `sampling/sampling_logp_difference`, `importance_sampling_ratio`; verl's `rollout_is_*`):
/// `rollout_logp_diff_mean` / `_max` (|log π_old − log π_rollout|), `rollout_is_ratio_min` /
/// `_mean` / `_max` (the uncapped per-token ratio), `rollout_is_weight_mean`, and
/// `rollout_is_capped_fraction` (tokens whose weight the cap changed).
/// Each entry: (old log-probs, rollout log-probs, the weights given).
pub fn mismatch_metrics(seqs: &[(&[f32], &[f32], &[f32])]) -> Metrics {
    let (mut n, mut diff_sum, mut diff_max) = (0usize, 0f64, 0f64);
    let (mut rmin, mut rmax, mut rsum, mut wsum, mut capped) =
        (f64::INFINITY, 0f64, 0f64, 0f64, 0usize);
    for (old, rollout, w) in seqs {
        for i in 0..old.len() {
            let d = old[i] as f64 - rollout[i] as f64;
            if !d.is_finite() {
                continue;
            }
            let r = d.exp();
            n += 1;
            diff_sum += d.abs();
            diff_max = diff_max.max(d.abs());
            rmin = rmin.min(r);
            rmax = rmax.max(r);
            rsum += r;
            wsum += w[i] as f64;
            if (w[i] as f64 - r).abs() > 1e-6 * r.max(1.0) {
                capped += 1;
            }
        }
    }
    let mut m = Metrics::new();
    if n == 0 {
        return m;
    }
    let nf = n as f64;
    m.insert("rollout_logp_diff_mean".into(), diff_sum / nf);
    m.insert("rollout_logp_diff_max".into(), diff_max);
    m.insert("rollout_is_ratio_min".into(), rmin);
    m.insert("rollout_is_ratio_mean".into(), rsum / nf);
    m.insert("rollout_is_ratio_max".into(), rmax);
    m.insert("rollout_is_weight_mean".into(), wsum / nf);
    m.insert("rollout_is_capped_fraction".into(), capped as f64 / nf);
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(mode: CorrectionMode, cap: f64) -> Correction {
        Correction { mode, cap }
    }

    #[test]
    fn weights_hand_computed() {
        // log ρ = [ln 0.5, ln 4, 0]: ρ = [0.5, 4, 1]; sequence ρ = 2.
        let old = [(0.5f32).ln() - 1.0, (4f32).ln() - 2.0, -0.3];
        let rollout = [-1.0, -2.0, -0.3];
        let close = |a: &[f32], b: &[f32]| {
            a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-5) && a.len() == b.len()
        };
        let w = |m, cap| c(m, cap).weights(&old, &rollout);
        assert!(close(&w(CorrectionMode::None, 2.0), &[1.0, 1.0, 1.0]));
        assert!(close(
            &w(CorrectionMode::TokenTruncate, 2.0),
            &[0.5, 2.0, 1.0]
        ));
        assert!(close(&w(CorrectionMode::TokenMask, 2.0), &[0.5, 0.0, 1.0]));
        assert!(close(
            &w(CorrectionMode::SequenceTruncate, 3.0),
            &[2.0, 2.0, 2.0]
        ));
        assert!(close(
            &w(CorrectionMode::SequenceTruncate, 1.5),
            &[1.5, 1.5, 1.5]
        ));
        assert!(close(
            &w(CorrectionMode::SequenceMask, 1.5),
            &[0.0, 0.0, 0.0]
        ));
        assert!(close(
            &w(CorrectionMode::SequenceMask, 2.5),
            &[2.0, 2.0, 2.0]
        ));
        // Exact rollouts: every weight 1.
        assert!(close(
            &c(CorrectionMode::TokenMask, 2.0).weights(&rollout, &rollout),
            &[1.0; 3]
        ));
        // Non-finite never reaches the loss.
        let w = c(CorrectionMode::TokenTruncate, 2.0).weights(&[f32::NAN], &[-1.0]);
        assert_eq!(w, [0.0]);
    }

    #[test]
    fn mismatch_metrics_hand_computed() {
        let old = [(0.5f32).ln(), (4f32).ln()];
        let rollout = [0.0, 0.0];
        let w = c(CorrectionMode::TokenTruncate, 2.0).weights(&old, &rollout);
        let m = mismatch_metrics(&[(&old, &rollout, &w)]);
        let ln2 = std::f64::consts::LN_2;
        assert!((m["rollout_logp_diff_mean"] - 1.5 * ln2).abs() < 1e-6);
        assert!((m["rollout_logp_diff_max"] - 2.0 * ln2).abs() < 1e-6);
        assert!((m["rollout_is_ratio_min"] - 0.5).abs() < 1e-6);
        assert!((m["rollout_is_ratio_max"] - 4.0).abs() < 1e-5);
        assert!((m["rollout_is_ratio_mean"] - 2.25).abs() < 1e-5);
        assert!((m["rollout_is_weight_mean"] - 1.25).abs() < 1e-6);
        assert!((m["rollout_is_capped_fraction"] - 0.5).abs() < 1e-12);
        assert!(mismatch_metrics(&[]).is_empty());
    }
}
