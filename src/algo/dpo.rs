//! Preference optimization against a frozen reference: DPO and S-DPO.
//!
//! Input: per sequence, the sum over its completion tokens of log π_θ (tracking gradients) and
//! of log π_ref (constants; the reference is the model as training started), and the layout of
//! the sequences into preference groups ([`PreferenceGroups`]: one chosen sequence then its k
//! rejected ones, groups back to back). Δ = log π_θ − log π_ref of a whole completion; β·Δ is the
//! "implicit reward" TRL logs.
//!
//! - DPO (Rafailov et al., 2023), per pair (w, l): h = β(Δ_w − Δ_l) and the loss
//!   −(1−ε)·log σ(h) − ε·log σ(−h). ε = 0 is TRL's `loss_type = "sigmoid"`; ε > 0 is
//!   conservative DPO (label smoothing: the probability that a label is flipped; TRL < 1.0's
//!   sigmoid loss). An example with k rejected completions averages its k pairs.
//! - S-DPO (Chen et al., 2024, "On Softmax Direct Preference Optimization for Recommendation"),
//!   per example: h = −log Σ_j exp(β(Δ_j − Δ_w)) over its k rejected, the same loss on h. At
//!   k = 1, h is DPO's h, so the two agree; label smoothing carries over the same way.
//!
//! Both average the per-example loss over the examples of the mini-batch: a micro-batch's loss is
//! divided by the mini-batch's number of groups, so micro-batch gradients just add up. A group
//! must never be split across micro-batches (S-DPO couples its members; DPO's pairs too).
//!
//! [`PreferenceAlgo`] is either loss as a trainer algorithm (`[algorithm] name = "dpo"` or
//! `"sdpo"`): the trainer brings each preference row as a group of sequences, chosen first.
//!
//! Not here: log-probs (the trainer computes them), datasets ([`crate::data::preference`]).

use anyhow::{bail, ensure, Result};
use candle_core::{DType, Tensor};
use serde::{Deserialize, Serialize};

use super::{Algorithm, LogProbStats, Metrics, MinibatchShape, RolloutSource, TokenBatch};

/// `[algorithm]` table of `name = "dpo"` and `name = "sdpo"`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DpoConfig {
    /// Strength of the pull towards the reference (TRL's default 0.1).
    #[serde(default = "default_beta")]
    pub beta: f64,
    /// Probability that a preference label is flipped, in [0, 0.5) (conservative DPO); 0 = DPO.
    #[serde(default)]
    pub label_smoothing: f64,
}

fn default_beta() -> f64 {
    0.1
}

impl Default for DpoConfig {
    fn default() -> Self {
        Self {
            beta: default_beta(),
            label_smoothing: 0.0,
        }
    }
}

/// Which preference loss.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PreferenceKind {
    /// Pairwise sigmoid loss; k rejected = the mean of k pairs.
    Dpo,
    /// Softmax over one chosen against k rejected.
    Sdpo,
}

/// Layout of a micro-batch's sequences: group g is its chosen sequence followed by its
/// `rejected[g]` rejected sequences, and groups follow each other.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PreferenceGroups {
    rejected: Vec<usize>,
}

impl PreferenceGroups {
    /// `rejected[g]` = number of rejected completions of group g (each ≥ 1).
    pub fn new(rejected: Vec<usize>) -> Result<Self> {
        if let Some(g) = rejected.iter().position(|&k| k == 0) {
            bail!(
                "preference group {g} has no rejected completion; every group needs at least one"
            );
        }
        Ok(Self { rejected })
    }

    /// `num_groups` groups of one chosen and `k` rejected each.
    pub fn uniform(num_groups: usize, k: usize) -> Result<Self> {
        Self::new(vec![k; num_groups])
    }

    pub fn num_groups(&self) -> usize {
        self.rejected.len()
    }

    /// Number of sequences S = Σ_g (1 + k_g).
    pub fn num_sequences(&self) -> usize {
        self.rejected.iter().map(|k| k + 1).sum()
    }

    /// Number of rejected sequences R = Σ_g k_g.
    pub fn num_rejected(&self) -> usize {
        self.rejected.iter().sum()
    }

    /// Row of each group's chosen sequence (G,), row of each rejected one (R,), and the group
    /// each rejected row belongs to (R,).
    fn rows(&self) -> (Vec<u32>, Vec<u32>, Vec<u32>) {
        let (mut chosen, mut rejected, mut owner) = (vec![], vec![], vec![]);
        let mut start = 0u32;
        for (g, &k) in self.rejected.iter().enumerate() {
            chosen.push(start);
            rejected.extend(start + 1..start + 1 + k as u32);
            owner.extend(std::iter::repeat_n(g as u32, k));
            start += 1 + k as u32;
        }
        (chosen, rejected, owner)
    }
}

/// One micro-batch as the preference loss sees it.
pub struct PreferenceBatch<'a> {
    /// Σ over completion tokens of log π_θ, per sequence, tracking gradients: (S,)
    pub policy_logp: &'a Tensor,
    /// Σ over completion tokens of log π_ref, per sequence (treated as constants): (S,)
    pub ref_logp: &'a Tensor,
    pub groups: &'a PreferenceGroups,
    /// Number of groups in the whole mini-batch: the normalizer of the mean over examples.
    pub minibatch_groups: usize,
}

/// DPO or S-DPO with its β and label smoothing.
#[derive(Clone, Debug)]
pub struct PreferenceLoss {
    pub kind: PreferenceKind,
    pub beta: f64,
    pub label_smoothing: f64,
}

impl PreferenceLoss {
    pub fn new(kind: PreferenceKind, cfg: &DpoConfig) -> Result<Self> {
        ensure!(
            cfg.beta > 0.0 && cfg.beta.is_finite(),
            "algorithm.beta must be a positive number, got {}; hint: TRL's default is 0.1",
            cfg.beta
        );
        ensure!(
            (0.0..0.5).contains(&cfg.label_smoothing),
            "algorithm.label_smoothing must lie in [0, 0.5), got {}; hint: 0 is plain DPO, \
             a small value such as 0.1 is conservative DPO",
            cfg.label_smoothing
        );
        Ok(Self {
            kind,
            beta: cfg.beta,
            label_smoothing: cfg.label_smoothing,
        })
    }

    pub fn name(&self) -> &'static str {
        match self.kind {
            PreferenceKind::Dpo => "dpo",
            PreferenceKind::Sdpo => "sdpo",
        }
    }

    /// The micro-batch's share of the mini-batch loss (a scalar in the inputs' dtype) and its
    /// metrics, named as TRL logs them: `loss` (this micro-batch's mean per-example loss),
    /// `rewards/chosen` (mean β·Δ_w), `rewards/rejected` (mean β·Δ_l over rejected sequences),
    /// `rewards/accuracies` and `rewards/margins` (over (chosen, rejected) pairs), and
    /// `logps/chosen`, `logps/rejected` (mean policy log-prob sums). The trainer averages them
    /// over micro-batches weighted by their number of groups.
    pub fn loss(&self, batch: &PreferenceBatch) -> Result<(Tensor, Metrics)> {
        let groups = batch.groups;
        let s = groups.num_sequences();
        ensure!(
            batch.policy_logp.dims() == [s] && batch.ref_logp.dims() == [s],
            "preference loss: expected ({s},) log-prob sums for {} groups, got policy {:?} and \
             reference {:?}",
            groups.num_groups(),
            batch.policy_logp.dims(),
            batch.ref_logp.dims()
        );
        ensure!(
            batch.minibatch_groups >= groups.num_groups() && groups.num_groups() > 0,
            "preference loss: the mini-batch has {} groups but this micro-batch {}",
            batch.minibatch_groups,
            groups.num_groups()
        );
        let dev = batch.policy_logp.device();
        let (chosen, rejected, owner) = groups.rows();
        let (g, r) = (chosen.len(), rejected.len());
        let chosen = Tensor::from_vec(chosen, g, dev)?;
        let rejected = Tensor::from_vec(rejected, r, dev)?;
        let owner = Tensor::from_vec(owner, r, dev)?;

        let delta = (batch.policy_logp - batch.ref_logp.detach())?; // (S,)
        let delta_w = delta.index_select(&chosen, 0)?; // (G,)
        let delta_l = delta.index_select(&rejected, 0)?; // (R,)

        // β(Δ_j − Δ_w) for every rejected j, beside its own group's chosen.
        let z = ((delta_l - delta_w.index_select(&owner, 0)?)? * self.beta)?; // (R,)
        let example_loss = match self.kind {
            PreferenceKind::Dpo => {
                // Per pair h = β(Δ_w − Δ_l) = −z; the example's loss is the mean of its k_g pairs.
                let pair = smoothed_nll_sigmoid(&z.neg()?, self.label_smoothing)?; // (R,)
                let inv_k: Vec<f64> = groups.rejected.iter().map(|&k| 1.0 / k as f64).collect();
                let inv_k = Tensor::from_vec(inv_k, g, dev)?.to_dtype(z.dtype())?; // (G,)
                (pair * inv_k.index_select(&owner, 0)?)?.sum_all()?
            }
            PreferenceKind::Sdpo => {
                let h = segment_logsumexp(&z, groups)?.neg()?; // (G,)
                smoothed_nll_sigmoid(&h, self.label_smoothing)?.sum_all()?
            }
        };
        let loss = (example_loss.clone() / batch.minibatch_groups as f64)?;
        let mean_loss = scalar(&example_loss)? / g as f64;
        let mut m = self.metrics(&delta, batch.policy_logp, groups)?;
        m.insert("loss".into(), mean_loss);
        Ok((loss, m))
    }

    fn metrics(
        &self,
        delta: &Tensor,
        policy: &Tensor,
        groups: &PreferenceGroups,
    ) -> Result<Metrics> {
        let host = |t: &Tensor| -> Result<Vec<f64>> { Ok(t.to_dtype(DType::F64)?.to_vec1()?) };
        let (delta, policy) = (host(delta)?, host(policy)?);
        let (chosen, rejected, owner) = groups.rows();
        let reward = |i: u32| self.beta * delta[i as usize];
        // (chosen reward, rejected reward) of every pair.
        let pairs: Vec<(f64, f64)> = (0..rejected.len())
            .map(|j| (reward(chosen[owner[j] as usize]), reward(rejected[j])))
            .collect();
        let mut m = Metrics::new();
        let mut put = |name: &str, xs: Vec<f64>| {
            m.insert(name.into(), xs.iter().sum::<f64>() / xs.len() as f64);
        };
        put(
            "rewards/chosen",
            chosen.iter().map(|&i| reward(i)).collect(),
        );
        put(
            "rewards/rejected",
            rejected.iter().map(|&i| reward(i)).collect(),
        );
        put(
            "rewards/accuracies",
            pairs
                .iter()
                .map(|(w, l)| f64::from(u8::from(w > l)))
                .collect(),
        );
        put(
            "rewards/margins",
            pairs.iter().map(|(w, l)| w - l).collect(),
        );
        put(
            "logps/chosen",
            chosen.iter().map(|&i| policy[i as usize]).collect(),
        );
        put(
            "logps/rejected",
            rejected.iter().map(|&i| policy[i as usize]).collect(),
        );
        Ok(m)
    }
}

/// −(1−ε)·log σ(h) − ε·log σ(−h), elementwise.
fn smoothed_nll_sigmoid(h: &Tensor, eps: f64) -> candle_core::Result<Tensor> {
    let nll = log_sigmoid(h)?.neg()?;
    if eps == 0.0 {
        return Ok(nll);
    }
    let flipped = log_sigmoid(&h.neg()?)?.neg()?;
    (nll * (1.0 - eps))? + (flipped * eps)?
}

/// log σ(x) = −log(1 + e^(−x)) = −logsumexp(0, −x): stable for large |x| in either direction.
fn log_sigmoid(x: &Tensor) -> candle_core::Result<Tensor> {
    Tensor::stack(&[&x.zeros_like()?, &x.neg()?], 1)? // (n, 2)
        .log_sum_exp(1)?
        .neg()
}

/// log Σ_j exp(z_j) over each group's rejected entries of z (R,) → (G,). Groups of fewer than
/// the most rejected are padded with −∞, which adds nothing (exp(−∞) = 0, zero gradient).
fn segment_logsumexp(z: &Tensor, groups: &PreferenceGroups) -> candle_core::Result<Tensor> {
    let r = z.dim(0)?;
    let k_max = groups.rejected.iter().copied().max().unwrap_or(1);
    let mut index = Vec::with_capacity(groups.num_groups() * k_max);
    let mut start = 0;
    for &k in &groups.rejected {
        index.extend((start..start + k).map(|j| j as u32));
        index.extend(std::iter::repeat_n(r as u32, k_max - k)); // → the −∞ slot
        start += k;
    }
    let pad = Tensor::new(&[f64::NEG_INFINITY], z.device())?.to_dtype(z.dtype())?;
    let padded = Tensor::cat(&[z, &pad], 0)?; // (R+1,)
    let index = Tensor::from_vec(index, groups.num_groups() * k_max, z.device())?;
    padded
        .index_select(&index, 0)? // (G·K,)
        .reshape((groups.num_groups(), k_max))? // (G, K)
        .log_sum_exp(1) // (G,)
}

/// Per-sequence sums of a flat per-token tensor laid out sequence by sequence: token_values
/// (N,) with N = Σ lens → (S,). Gradients flow to every token.
pub fn sequence_sums(token_values: &Tensor, lens: &[usize]) -> Result<Tensor> {
    let n: usize = lens.iter().sum();
    ensure!(
        token_values.dims() == [n],
        "sequence_sums: {} sequence lengths add up to {n} tokens, got {:?}",
        lens.len(),
        token_values.dims()
    );
    let owner: Vec<u32> = lens
        .iter()
        .enumerate()
        .flat_map(|(s, &l)| std::iter::repeat_n(s as u32, l))
        .collect();
    let owner = Tensor::from_vec(owner, n, token_values.device())?;
    let zeros = Tensor::zeros(lens.len(), token_values.dtype(), token_values.device())?;
    Ok(zeros.index_add(&owner, token_values, 0)?) // (S,)
}

fn scalar(t: &Tensor) -> Result<f64> {
    Ok(t.to_dtype(DType::F64)?.to_scalar::<f64>()?)
}

/// DPO / S-DPO as a trainer algorithm. The trainer brings each preference row as one group of
/// sequences, its chosen completion first and then its rejected ones
/// ([`RolloutSource::Preference`]), keeps groups whole in mini- and micro-batches, and gives the
/// per-token log-probs of the policy and of the frozen reference (the model the recipe loads);
/// the loss sums them per sequence and applies [`PreferenceLoss`].
pub struct PreferenceAlgo {
    loss: PreferenceLoss,
}

impl PreferenceAlgo {
    pub fn new(kind: PreferenceKind, cfg: &DpoConfig) -> Result<Self> {
        Ok(Self {
            loss: PreferenceLoss::new(kind, cfg)?,
        })
    }
}

impl Algorithm for PreferenceAlgo {
    fn name(&self) -> &'static str {
        self.loss.name()
    }

    fn rollout_source(&self) -> RolloutSource {
        RolloutSource::Preference
    }

    fn advantages(&self, rewards: &[f32], _group_size: usize) -> Vec<f32> {
        vec![1.0; rewards.len()]
    }

    /// 1 / (groups in the mini-batch) on every token: the loss reads it back as the normalizer
    /// of its mean over examples, so micro-batch losses add up to the mini-batch's.
    fn token_weight(&self, _len: usize, mb: &MinibatchShape) -> f32 {
        1.0 / mb.num_groups.max(1) as f32
    }

    fn loss(&self, cur: &LogProbStats, b: &TokenBatch) -> Result<(Tensor, Metrics)> {
        let Some(ref_logp) = &b.ref_logp else {
            bail!("{}: the trainer gave no reference log-probs", self.name());
        };
        let policy = b.sequence_sums(&cur.logp)?; // (S,)
        let reference = b.sequence_sums(ref_logp)?; // (S,)
                                                    // Runs of one group id: the chosen sequence, then its rejected ones.
        let mut rejected: Vec<usize> = Vec::new();
        for (i, g) in b.groups.iter().enumerate() {
            match i.checked_sub(1).map(|j| b.groups[j]) {
                Some(prev) if prev == *g => *rejected.last_mut().expect("a run is open") += 1,
                _ => rejected.push(0),
            }
        }
        let groups = PreferenceGroups::new(rejected)?;
        let w = b.weight.to_dtype(DType::F64)?.get(0)?.to_scalar::<f64>()?;
        let batch = PreferenceBatch {
            policy_logp: &policy,
            ref_logp: &reference,
            groups: &groups,
            minibatch_groups: (1.0 / w).round() as usize,
        };
        self.loss.loss(&batch)
    }

    fn needs_reference(&self) -> bool {
        true
    }

    fn keeps_groups_whole(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};
    use serde_json::Value;

    fn golden() -> Value {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/dpo/golden.json"
        );
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    }

    fn floats(v: &Value) -> Vec<f64> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect()
    }

    /// Loss, d loss / d policy_logp (S,) and metrics, in f64.
    fn run(
        kind: PreferenceKind,
        cfg: &DpoConfig,
        policy: &[f64],
        reference: &[f64],
        groups: &PreferenceGroups,
    ) -> (f64, Vec<f64>, Metrics) {
        let dev = Device::Cpu;
        let p = Var::from_tensor(&Tensor::new(policy, &dev).unwrap()).unwrap();
        let r = Tensor::new(reference, &dev).unwrap();
        let batch = PreferenceBatch {
            policy_logp: p.as_tensor(),
            ref_logp: &r,
            groups,
            minibatch_groups: groups.num_groups(),
        };
        let (loss, m) = PreferenceLoss::new(kind, cfg)
            .unwrap()
            .loss(&batch)
            .unwrap();
        let grads = loss.backward().unwrap();
        let g = grads.get(p.as_tensor()).unwrap().to_vec1::<f64>().unwrap();
        (loss.to_scalar::<f64>().unwrap(), g, m)
    }

    fn loss_only(
        kind: PreferenceKind,
        cfg: &DpoConfig,
        p: &[f64],
        r: &[f64],
        g: &PreferenceGroups,
    ) -> f64 {
        run(kind, cfg, p, r, g).0
    }

    #[test]
    fn dpo_matches_trl_on_fixed_log_probs() {
        for case in golden()["sequence_cases"].as_array().unwrap() {
            let cfg = DpoConfig {
                beta: case["beta"].as_f64().unwrap(),
                label_smoothing: case["label_smoothing"].as_f64().unwrap(),
            };
            let (pc, pr) = (
                floats(&case["policy_chosen"]),
                floats(&case["policy_rejected"]),
            );
            let (rc, rr) = (floats(&case["ref_chosen"]), floats(&case["ref_rejected"]));
            // TRL lays out [chosen..., rejected...]; here each group is [chosen, rejected].
            let interleave = |c: &[f64], r: &[f64]| -> Vec<f64> {
                c.iter().zip(r).flat_map(|(&a, &b)| [a, b]).collect()
            };
            let groups = PreferenceGroups::uniform(pc.len(), 1).unwrap();
            let (loss, grad, m) = run(
                PreferenceKind::Dpo,
                &cfg,
                &interleave(&pc, &pr),
                &interleave(&rc, &rr),
                &groups,
            );
            let want = case["loss"].as_f64().unwrap();
            assert!(
                (loss - want).abs() <= 1e-12 * want.abs().max(1.0),
                "{loss} vs {want}"
            );
            let want_grad = interleave(
                &floats(&case["grad_chosen"]),
                &floats(&case["grad_rejected"]),
            );
            for (a, b) in grad.iter().zip(&want_grad) {
                assert!((a - b).abs() <= 1e-12, "grad {grad:?} vs {want_grad:?}");
            }
            for (k, v) in case["metrics"].as_object().unwrap() {
                // TRL's accuracies are float32 means.
                let (got, want) = (m[k], v.as_f64().unwrap());
                assert!(
                    (got - want).abs() <= 1e-6 * want.abs().max(1.0),
                    "{k}: {got} vs {want}"
                );
            }
            assert!((m["loss"] - want).abs() <= 1e-12);
        }
    }

    #[test]
    fn sdpo_with_one_rejected_equals_dpo() {
        let policy = [-3.0, -4.5, -10.0, -9.0, -1.25, -2.0];
        let reference = [-3.5, -4.0, -9.0, -9.5, -1.0, -2.5];
        let groups = PreferenceGroups::uniform(3, 1).unwrap();
        for label_smoothing in [0.0, 0.2] {
            let cfg = DpoConfig {
                beta: 0.7,
                label_smoothing,
            };
            let (l1, g1, m1) = run(PreferenceKind::Dpo, &cfg, &policy, &reference, &groups);
            let (l2, g2, m2) = run(PreferenceKind::Sdpo, &cfg, &policy, &reference, &groups);
            assert!((l1 - l2).abs() < 1e-14, "{l1} vs {l2}");
            for (a, b) in g1.iter().zip(&g2) {
                assert!((a - b).abs() < 1e-14, "{g1:?} vs {g2:?}");
            }
            assert_eq!(m1.keys().collect::<Vec<_>>(), m2.keys().collect::<Vec<_>>());
            for (k, v) in &m1 {
                assert!((v - m2[k]).abs() < 1e-14, "{k}");
            }
        }
    }

    #[test]
    fn sdpo_equals_the_hand_computed_softmax_loss() {
        // One group: chosen Δ_w = 1, rejected Δ = 0.5 and −2; β = 0.5.
        // h = −log(e^{0.5(0.5−1)} + e^{0.5(−2−1)}) = −log(e^{−0.25} + e^{−1.5}).
        let groups = PreferenceGroups::new(vec![2]).unwrap();
        let cfg = DpoConfig {
            beta: 0.5,
            label_smoothing: 0.0,
        };
        let (loss, _, m) = run(
            PreferenceKind::Sdpo,
            &cfg,
            &[-4.0, -6.0, -9.0],
            &[-5.0, -6.5, -7.0],
            &groups,
        );
        let h = -((-0.25f64).exp() + (-1.5f64).exp()).ln();
        let want = (1.0 + (-h).exp()).ln();
        assert!((loss - want).abs() < 1e-14, "{loss} vs {want}");
        assert!((m["rewards/chosen"] - 0.5).abs() < 1e-14);
        assert!((m["rewards/rejected"] - (0.25 - 1.0) / 2.0).abs() < 1e-14);
        assert!((m["rewards/accuracies"] - 1.0).abs() < 1e-14);
        assert!((m["rewards/margins"] - (0.25 + 1.5) / 2.0).abs() < 1e-14);
        assert!((m["logps/rejected"] + 7.5).abs() < 1e-14);
    }

    #[test]
    fn sdpo_gradient_matches_finite_differences() {
        // Ragged groups (k = 1, 3, 2), with and without label smoothing.
        let groups = PreferenceGroups::new(vec![1, 3, 2]).unwrap();
        let policy = [-5.0, -6.5, -3.0, -2.5, -4.0, -3.25, -8.0, -7.0, -9.5];
        let reference = [-5.5, -6.0, -3.5, -3.0, -3.0, -3.5, -7.5, -8.0, -9.0];
        for label_smoothing in [0.0, 0.15] {
            let cfg = DpoConfig {
                beta: 0.8,
                label_smoothing,
            };
            let (_, grad, _) = run(PreferenceKind::Sdpo, &cfg, &policy, &reference, &groups);
            let eps = 1e-6;
            for i in 0..policy.len() {
                let at = |d: f64| {
                    let mut p = policy;
                    p[i] += d;
                    loss_only(PreferenceKind::Sdpo, &cfg, &p, &reference, &groups)
                };
                let numeric = (at(eps) - at(-eps)) / (2.0 * eps);
                assert!(
                    (grad[i] - numeric).abs() < 1e-8,
                    "d/dlogp[{i}]: analytic {} numeric {numeric}",
                    grad[i]
                );
            }
            // Reference log-probs are constants: the loss only sees Δ, so ∂/∂π_ref = −∂/∂π_θ
            // numerically, and the gradient sums to zero over each group's members.
            let sums = [
                grad[0] + grad[1],
                grad[2..6].iter().sum(),
                grad[6..].iter().sum(),
            ];
            assert!(sums.iter().all(|s: &f64| s.abs() < 1e-12), "{sums:?}");
        }
    }

    #[test]
    fn dpo_with_several_rejected_averages_its_pairs() {
        let cfg = DpoConfig {
            beta: 0.3,
            label_smoothing: 0.1,
        };
        let (one, _, _) = run(
            PreferenceKind::Dpo,
            &cfg,
            &[-2.0, -3.0, -1.0],
            &[-2.5, -2.0, -1.5],
            &PreferenceGroups::new(vec![2]).unwrap(),
        );
        let (pairs, _, _) = run(
            PreferenceKind::Dpo,
            &cfg,
            &[-2.0, -3.0, -2.0, -1.0],
            &[-2.5, -2.0, -2.5, -1.5],
            &PreferenceGroups::uniform(2, 1).unwrap(),
        );
        assert!((one - pairs).abs() < 1e-14, "{one} vs {pairs}");
    }

    #[test]
    fn micro_batch_losses_add_up_to_the_mini_batch_mean() {
        let dev = Device::Cpu;
        let cfg = DpoConfig {
            beta: 0.4,
            label_smoothing: 0.0,
        };
        let loss = PreferenceLoss::new(PreferenceKind::Sdpo, &cfg).unwrap();
        let p = [-1.0, -2.0, -3.0, -4.0, -0.5, -1.5, -2.5];
        let r = [-1.5, -1.0, -3.5, -3.0, -1.0, -1.0, -2.0];
        let all = PreferenceGroups::new(vec![3, 2]).unwrap();
        let eval = |lo: usize, hi: usize, g: &PreferenceGroups, total: usize| {
            let pt = Tensor::new(&p[lo..hi], &dev).unwrap();
            let rt = Tensor::new(&r[lo..hi], &dev).unwrap();
            let b = PreferenceBatch {
                policy_logp: &pt,
                ref_logp: &rt,
                groups: g,
                minibatch_groups: total,
            };
            loss.loss(&b).unwrap().0.to_scalar::<f64>().unwrap()
        };
        let whole = eval(0, 7, &all, 2);
        let first = eval(0, 4, &PreferenceGroups::new(vec![3]).unwrap(), 2);
        let second = eval(4, 7, &PreferenceGroups::new(vec![2]).unwrap(), 2);
        assert!((whole - (first + second)).abs() < 1e-14);
    }

    #[test]
    fn stable_for_large_margins_in_f32() {
        let dev = Device::Cpu;
        let cfg = DpoConfig {
            beta: 1.0,
            label_smoothing: 0.0,
        };
        for kind in [PreferenceKind::Dpo, PreferenceKind::Sdpo] {
            let loss = PreferenceLoss::new(kind, &cfg).unwrap();
            let p = Var::from_tensor(
                &Tensor::new(&[-500f32, -1.0, 0.0, -300.0, -400.0], &dev).unwrap(),
            )
            .unwrap();
            let r = Tensor::new(&[-1f32, -400.0, -1.0, -2.0, -3.0], &dev).unwrap();
            let groups = PreferenceGroups::new(vec![1, 2]).unwrap();
            let b = PreferenceBatch {
                policy_logp: p.as_tensor(),
                ref_logp: &r,
                groups: &groups,
                minibatch_groups: 2,
            };
            let (l, _) = loss.loss(&b).unwrap();
            let v = l.to_scalar::<f32>().unwrap();
            // Group 0 is hopelessly wrong (h = −898), group 1 certainly right.
            assert!((v - 898.0 / 2.0).abs() < 1e-3, "{kind:?}: {v}");
            let g = l
                .backward()
                .unwrap()
                .get(p.as_tensor())
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            assert!(g.iter().all(|x| x.is_finite()), "{g:?}");
        }
    }

    #[test]
    fn bad_settings_and_shapes_are_errors() {
        let bad = |beta, label_smoothing| {
            PreferenceLoss::new(
                PreferenceKind::Dpo,
                &DpoConfig {
                    beta,
                    label_smoothing,
                },
            )
            .unwrap_err()
            .to_string()
        };
        assert!(bad(0.0, 0.0).contains("beta"));
        assert!(bad(f64::NAN, 0.0).contains("beta"));
        assert!(bad(0.1, 0.5).contains("label_smoothing"));
        assert!(bad(0.1, -0.1).contains("label_smoothing"));
        assert!(PreferenceGroups::new(vec![1, 0])
            .unwrap_err()
            .to_string()
            .contains("group 1"));
        let dev = Device::Cpu;
        let t = Tensor::new(&[0f32, 1.0, 2.0], &dev).unwrap();
        let groups = PreferenceGroups::uniform(2, 1).unwrap();
        let b = PreferenceBatch {
            policy_logp: &t,
            ref_logp: &t,
            groups: &groups,
            minibatch_groups: 2,
        };
        let loss = PreferenceLoss::new(PreferenceKind::Dpo, &DpoConfig::default()).unwrap();
        assert!(loss
            .loss(&b)
            .unwrap_err()
            .to_string()
            .contains("expected (4,)"));
    }

    #[test]
    fn config_parses_with_trl_defaults() {
        let c: DpoConfig = toml::from_str("").unwrap();
        assert_eq!(c, DpoConfig::default());
        assert_eq!((c.beta, c.label_smoothing), (0.1, 0.0));
        let c: DpoConfig = toml::from_str("beta = 0.5\nlabel_smoothing = 0.1").unwrap();
        assert_eq!((c.beta, c.label_smoothing), (0.5, 0.1));
        assert!(toml::from_str::<DpoConfig>("betta = 1")
            .unwrap_err()
            .to_string()
            .contains("unknown field"));
    }

    #[test]
    fn sequence_sums_add_each_sequences_tokens() {
        let dev = Device::Cpu;
        let x = Var::from_tensor(&Tensor::new(&[1f32, 2.0, 3.0, 4.0, 5.0, 6.0], &dev).unwrap())
            .unwrap();
        let s = sequence_sums(x.as_tensor(), &[2, 1, 3]).unwrap();
        assert_eq!(s.to_vec1::<f32>().unwrap(), vec![3.0, 3.0, 15.0]);
        let w = Tensor::new(&[1f32, 10.0, 100.0], &dev).unwrap();
        let g = (s * w).unwrap().sum_all().unwrap().backward().unwrap();
        let g = g.get(x.as_tensor()).unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(g, vec![1.0, 1.0, 10.0, 100.0, 100.0, 100.0]);
        assert!(sequence_sums(x.as_tensor(), &[2, 2]).is_err());
    }
}
