//! Algorithm math on a real (tiny) model: ROVER's successor value and its gradient.

use candle_core::{Device, Tensor};
use llmrl::algo::grpo::{Grpo, GrpoConfig, LossType, ScaleRewards};
use llmrl::algo::rover::{Rover, RoverConfig};
use llmrl::algo::{Algorithm, LogProbStats, MinibatchShape, SequenceTargets, TokenBatch};
use llmrl::generate::{generate, SamplingConfig};
use llmrl::model::logprobs::completion_stats;
use llmrl::model::{Decoder, LoadedModel, Mode};

use crate::common::*;

const PROMPTS: [&[u32]; 2] = [&[1, 72, 101, 108], &[5, 9, 33]];

fn rollouts(m: &LoadedModel) -> Vec<llmrl::generate::Completion> {
    let dec = Decoder::new(&m.config, &m.params, Mode::Infer).unwrap();
    let cfg = SamplingConfig {
        temperature: 1.0,
        max_new_tokens: 6,
        ..Default::default()
    };
    let prompts: Vec<Vec<u32>> = PROMPTS.iter().map(|p| p.to_vec()).collect();
    generate(
        &dec,
        &m.tokenizer,
        &prompts,
        &[vec![1, 2], vec![3, 4]],
        &cfg,
        &Device::Cpu,
    )
    .unwrap()
}

fn perturb(m: &LoadedModel, scale: f32) {
    for (_, v) in m.params.named_vars() {
        let noise = Tensor::randn(0f32, scale, v.shape(), &Device::Cpu).unwrap();
        v.set(&(v.as_tensor() + noise).unwrap()).unwrap();
    }
}

#[test]
fn successor_value_is_the_vocabulary_average_of_q() {
    let m = load_fixture("tiny_qwen3");
    let outs = rollouts(&m);
    let seqs: Vec<(&[u32], &[u32])> = outs
        .iter()
        .map(|c| (PROMPTS[c.prompt_index], c.token_ids.as_slice()))
        .collect();
    let old = Decoder::new(&m.config, &m.params.deep_clone().unwrap(), Mode::Infer).unwrap();
    let old_stats = completion_stats(&old, &seqs, 0.7, &Device::Cpu).unwrap();
    perturb(&m, 0.01);
    let cur = Decoder::new(&m.config, &m.params, Mode::Infer).unwrap();
    let cur_stats = completion_stats(&cur, &seqs, 0.7, &Device::Cpu).unwrap();
    let rho = 2.0;
    let q_next = ((&cur_stats.mean_logp - &old_stats.mean_logp).unwrap() * rho)
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    // Explicit: Q(s, a) = ρ·(log π_θ(a|s) − log π_old(a|s)) for every a, averaged over the vocabulary.
    let v = m.config.vocab_size as u32;
    let mut i = 0;
    for c in &outs {
        for j in 0..c.token_ids.len() {
            let prefix: Vec<u32> = c.token_ids[..j].to_vec();
            let mut sum = 0.0f64;
            // All V continuations of this state at once: one row per candidate action.
            let cands: Vec<Vec<u32>> = (0..v)
                .map(|a| prefix.iter().copied().chain([a]).collect())
                .collect();
            let batch: Vec<(&[u32], &[u32])> = cands
                .iter()
                .map(|cc| (PROMPTS[c.prompt_index], cc.as_slice()))
                .collect();
            let lc = completion_stats(&cur, &batch, 0.7, &Device::Cpu)
                .unwrap()
                .logp
                .to_vec1::<f32>()
                .unwrap();
            let lo = completion_stats(&old, &batch, 0.7, &Device::Cpu)
                .unwrap()
                .logp
                .to_vec1::<f32>()
                .unwrap();
            for a in 0..v as usize {
                let k = (a + 1) * (j + 1) - 1; // the last token of candidate a
                sum += rho * (lc[k] - lo[k]) as f64;
            }
            let explicit = sum / v as f64;
            assert!(
                (explicit - q_next[i] as f64).abs() < 1e-4,
                "token {i}: {explicit} vs {}",
                q_next[i]
            );
            i += 1;
        }
    }
}

/// The rollouts as a token batch whose old-policy statistics are `old` (flattened (N,) each).
fn token_batch(
    outs: &[llmrl::generate::Completion],
    old: &LogProbStats,
    adv: &[f32],
    weight_of: impl Fn(usize) -> f32,
) -> TokenBatch {
    let logp = old.logp.to_vec1::<f32>().unwrap();
    let mean = old.mean_logp.to_vec1::<f32>().unwrap();
    let mut start = 0;
    let seqs: Vec<SequenceTargets> = outs
        .iter()
        .zip(adv)
        .map(|(c, &advantage)| {
            let k = c.token_ids.len();
            start += k;
            SequenceTargets {
                old_logp: &logp[start - k..start],
                old_mean_logp: &mean[start - k..start],
                advantage,
                weight: weight_of(k),
                is_weight: &[],
                group: c.prompt_index,
            }
        })
        .collect();
    TokenBatch::new(&seqs, None, &Device::Cpu).unwrap()
}

/// Gradients of `algo`'s loss on the rollouts, θ = θ_old (first mini-batch).
fn first_minibatch_grads(
    algo: &dyn Algorithm,
    m: &LoadedModel,
    outs: &[llmrl::generate::Completion],
    adv: &[f32],
) -> Vec<Tensor> {
    let seqs: Vec<(&[u32], &[u32])> = outs
        .iter()
        .map(|c| (PROMPTS[c.prompt_index], c.token_ids.as_slice()))
        .collect();
    let dec = Decoder::new(&m.config, &m.params, Mode::Train).unwrap();
    let cur = completion_stats(&dec, &seqs, 1.0, &Device::Cpu).unwrap();
    let n = cur.logp.dim(0).unwrap();
    let shape = MinibatchShape {
        num_sequences: outs.len(),
        num_groups: outs.len(),
        num_tokens: n,
        max_new_tokens: 6,
    };
    let batch = token_batch(outs, &cur, adv, |k| algo.token_weight(k, &shape));
    let (loss, _) = algo.loss(&cur, &batch).unwrap();
    let g = loss.backward().unwrap();
    m.params
        .named_vars()
        .iter()
        .map(|(_, v)| g.get(v.as_tensor()).unwrap().clone())
        .collect()
}

#[test]
fn first_rover_step_is_centered_reward_reinforce() {
    let m = load_fixture("tiny_llama");
    let outs = rollouts(&m);
    let rewards = [1.0f32, 0.0, 0.1, 1.0];
    let rho = 0.5;
    let rover = Rover::new(&RoverConfig {
        rho,
        ..Default::default()
    })
    .unwrap();
    let grpo = Grpo::new(&GrpoConfig {
        loss_type: LossType::Dapo,
        scale_rewards: ScaleRewards::None,
        epsilon: 1e9, // no clipping
        ..Default::default()
    })
    .unwrap();
    let adv_r = rover.advantages(&rewards, 2);
    let adv_g = grpo.advantages(&rewards, 2);
    assert_eq!(adv_r, adv_g, "both center rewards within the group");
    let gr = first_minibatch_grads(&rover, &m, &outs, &adv_r);
    let gg = first_minibatch_grads(&grpo, &m, &outs, &adv_g);
    // d/dθ Σ w (ρ(logπ − logπ_old) − r̃)² at θ = θ_old is −2ρ Σ w r̃ ∇logπ: the REINFORCE gradient
    // (−Σ w r̃ ∇logπ, GRPO's at ratio 1) scaled by 2ρ.
    for (a, b) in gr.iter().zip(&gg) {
        let diff = (a - (b * (2.0 * rho)).unwrap())
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        let scale = b
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(
            diff <= 1e-5 + 1e-4 * scale,
            "max diff {diff} (scale {scale})"
        );
    }
}

#[test]
fn rover_loss_gradient_matches_finite_differences() {
    let m = load_fixture("tiny_qwen2");
    let outs = rollouts(&m);
    let seqs: Vec<(&[u32], &[u32])> = outs
        .iter()
        .map(|c| (PROMPTS[c.prompt_index], c.token_ids.as_slice()))
        .collect();
    // θ_old = the model now; then move θ so that Q and Q' are non-zero.
    let old = Decoder::new(&m.config, &m.params.deep_clone().unwrap(), Mode::Infer).unwrap();
    let old_stats = completion_stats(&old, &seqs, 1.0, &Device::Cpu).unwrap();
    perturb(&m, 0.02);
    // β = 0: the stop-gradient target is then a constant, so central differences check ∂L/∂θ
    // exactly (the successor value itself is checked against its definition above).
    let rover = Rover::new(&RoverConfig {
        beta: 0.0,
        ..Default::default()
    })
    .unwrap();
    let adv = rover.advantages(&[1.0, 0.0, 0.0, 1.0], 2);
    let n = old_stats.logp.dim(0).unwrap();
    let shape = MinibatchShape {
        num_sequences: 4,
        num_groups: 4,
        num_tokens: n,
        max_new_tokens: 6,
    };
    let batch = token_batch(&outs, &old_stats, &adv, |_| rover.token_weight(1, &shape));
    let loss_at = |mode| {
        let dec = Decoder::new(&m.config, &m.params, mode).unwrap();
        let cur = completion_stats(&dec, &seqs, 1.0, &Device::Cpu).unwrap();
        rover.loss(&cur, &batch).unwrap().0
    };
    let loss = loss_at(Mode::Train);
    let grads = loss.backward().unwrap();
    let var = m
        .params
        .var("model.layers.1.mlp.up_proj.weight")
        .unwrap()
        .clone();
    let g = grads.get(var.as_tensor()).unwrap();
    let (analytic, numeric) = directional_derivatives(&var, g, 1e-2, || {
        loss_at(Mode::Infer).to_scalar::<f32>().unwrap() as f64
    });
    let rel = (numeric - analytic).abs() / analytic.abs().max(1e-4);
    assert!(rel < 2e-2, "analytic {analytic} vs numeric {numeric}");
}

/// The shared-prefix training forward (a group's prompt run once) gives the same per-token
/// statistics and the same gradients as running every prompt+completion row in full.
#[test]
fn shared_prefix_forward_equals_row_by_row() {
    use llmrl::model::logprobs::completion_stats_unshared;
    let prompts: [&[u32]; 3] = [&[1, 72, 101, 108, 7], &[5, 9, 33], &[2, 4]];
    let completions: [(usize, &[u32]); 6] = [
        (0, &[11, 12, 13]),
        (1, &[21]),
        (0, &[14, 15, 16, 17, 18]),
        (2, &[31, 32]),
        (1, &[22, 23, 24, 25]),
        (0, &[19]),
    ];
    let seqs: Vec<(&[u32], &[u32])> = completions.iter().map(|&(p, c)| (prompts[p], c)).collect();
    for family in FAMILIES {
        let m = load_fixture(family);
        let dec = Decoder::new(&m.config, &m.params, Mode::Train).unwrap();
        let run = |stats: LogProbStats| {
            // A loss that reads all three statistics, so every path of the backward is used.
            let n = stats.logp.dim(0).unwrap();
            let w = Tensor::arange(1f32, n as f32 + 1.0, &Device::Cpu).unwrap();
            let loss = ((&stats.logp * &w).unwrap().sum_all().unwrap()
                + (&stats.mean_logp * 0.3).unwrap().sum_all().unwrap()
                + stats.entropy.sum_all().unwrap())
            .unwrap();
            let g = loss.backward().unwrap();
            let grads: Vec<Tensor> = m
                .params
                .named_vars()
                .iter()
                .map(|(_, v)| g.get(v.as_tensor()).unwrap().clone())
                .collect();
            let flat = |t: &Tensor| t.to_vec1::<f32>().unwrap();
            (
                flat(&stats.logp),
                flat(&stats.mean_logp),
                flat(&stats.entropy),
                grads,
            )
        };
        let shared = run(completion_stats(&dec, &seqs, 0.8, &Device::Cpu).unwrap());
        let full = run(completion_stats_unshared(&dec, &seqs, 0.8, &Device::Cpu).unwrap());
        assert_eq!(
            shared.0.len(),
            16,
            "{family}: one statistic per completion token"
        );
        for (a, b) in [
            (&shared.0, &full.0),
            (&shared.1, &full.1),
            (&shared.2, &full.2),
        ] {
            for (x, y) in a.iter().zip(b.iter()) {
                assert!((x - y).abs() < 1e-5, "{family}: {x} vs {y}");
            }
        }
        for ((name, _), (gs, gf)) in m
            .params
            .named_vars()
            .iter()
            .zip(shared.3.iter().zip(&full.3))
        {
            let diff = (gs - gf).unwrap().sqr().unwrap().sum_all().unwrap();
            let diff = diff.to_scalar::<f32>().unwrap().sqrt();
            let norm = gf
                .sqr()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap()
                .sqrt();
            assert!(
                diff <= 1e-4 * norm.max(1e-3),
                "{family}: gradient of {name} differs by {diff} (norm {norm})"
            );
        }
    }
}

/// The trainer skips zero-advantage samples when the algorithm says they carry no gradient:
/// for every GRPO loss type without KL, the gradient of the whole batch equals that of its
/// non-zero-advantage samples (with the whole batch's normalizer), off-policy too.
#[test]
fn zero_advantage_samples_carry_no_gradient_in_grpo() {
    let m = load_fixture("tiny_llama");
    let outs = rollouts(&m);
    let old_dec = Decoder::new(&m.config, &m.params, Mode::Infer).unwrap();
    let all: Vec<(&[u32], &[u32])> = outs
        .iter()
        .map(|c| (PROMPTS[c.prompt_index], c.token_ids.as_slice()))
        .collect();
    let old = completion_stats(&old_dec, &all, 1.0, &Device::Cpu).unwrap();
    perturb(&m, 0.05); // θ ≠ θ_old, so ratios and clipping are live
    let adv = [0.7f32, 0.0, -0.7, 0.0];
    let n_all = old.logp.dim(0).unwrap();
    let shape = MinibatchShape {
        num_sequences: outs.len(),
        num_groups: outs.len(),
        num_tokens: n_all,
        max_new_tokens: 6,
    };
    for loss_type in [
        LossType::Grpo,
        LossType::DrGrpo,
        LossType::Dapo,
        LossType::Bnpo,
    ] {
        let algo = Grpo::new(&GrpoConfig {
            loss_type,
            epsilon: 0.01,
            ..GrpoConfig::default()
        })
        .unwrap();
        assert!(algo.zero_advantage_has_no_gradient());
        let grads = |keep: &[usize]| -> Vec<Tensor> {
            let sub: Vec<_> = keep.iter().map(|&i| outs[i].clone()).collect();
            let seqs: Vec<(&[u32], &[u32])> = keep.iter().map(|&i| all[i]).collect();
            let sub_old = completion_stats(&old_dec, &seqs, 1.0, &Device::Cpu).unwrap();
            let dec = Decoder::new(&m.config, &m.params, Mode::Train).unwrap();
            let cur = completion_stats(&dec, &seqs, 1.0, &Device::Cpu).unwrap();
            let a: Vec<f32> = keep.iter().map(|&i| adv[i]).collect();
            let batch = token_batch(&sub, &sub_old, &a, |k| algo.token_weight(k, &shape));
            let g = algo.loss(&cur, &batch).unwrap().0.backward().unwrap();
            m.params
                .named_vars()
                .iter()
                .map(|(_, v)| g.get(v.as_tensor()).unwrap().clone())
                .collect()
        };
        for (full, part) in grads(&[0, 1, 2, 3]).iter().zip(grads(&[0, 2])) {
            let diff = (full - &part).unwrap().abs().unwrap().max_all().unwrap();
            let diff = diff.to_scalar::<f32>().unwrap();
            assert!(diff < 1e-6, "{loss_type:?}: gradients differ by {diff}");
        }
    }
    let kl = Grpo::new(&GrpoConfig {
        beta: 0.04,
        ..GrpoConfig::default()
    })
    .unwrap();
    assert!(
        !kl.zero_advantage_has_no_gradient(),
        "the KL term has a gradient"
    );
    let rover = Rover::new(&RoverConfig::default()).unwrap();
    assert!(
        !rover.zero_advantage_has_no_gradient(),
        "ROVER's target has Q'"
    );
}
