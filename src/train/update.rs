//! Update: the optimizer steps of one rollout batch.
//!
//! `num_iterations` passes × `num_minibatches` mini-batches, each one optimizer step; a
//! mini-batch runs as micro-batches (forward, loss, backward) whose gradients accumulate, then
//! clip and step. [`step_optimizer`] is the single place where accumulated gradients become an
//! update, and so the one place data-parallel ranks sum them (before the clip).
//!
//! Data parallel: every rank holds the whole rollout and forms the same mini-batches (so the
//! loss normalizers are those of the whole mini-batch), but runs forward/backward only on the
//! groups it owns (`UpdateCtx::owned`, the prompts it generated); the others count in the
//! mini-batch's shape exactly as skipped zero-advantage samples do.

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::Result;
use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Tensor};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::constrained::policy_stats;
use crate::algo::{Algorithm, Metrics, MinibatchShape, SequenceTargets, TokenBatch};
use crate::generate::Constraint;
use crate::model::decoder::BuildOptions;
use crate::model::recompute::Recompute;
use crate::model::{Decoder, LoadedModel, Mode, Params};
use crate::optim::AdamW;
use crate::parallel::{self, wire, Comm};
use crate::recipe::UpdatePlan;

/// One training sequence: a prompt and its completion with what the rollout knew about it.
pub struct Sequence {
    pub prompt: Arc<Vec<u32>>,
    /// Completion token ids (the loss is over these).
    pub tokens: Vec<u32>,
    /// Per token: log π_old of the token (zeros where the algorithm needs no old policy).
    pub old_logp: Vec<f32>,
    /// Per token: mean over the vocabulary of log π_old.
    pub old_mean_logp: Vec<f32>,
    pub advantage: f32,
    /// Per token: the rollout correction's importance weight (`super::correction`); empty when
    /// the rollout sampled from π_old itself.
    pub is_weight: Vec<f32>,
    /// The group it belongs to (its prompt's index in the step); groups are contiguous.
    pub group: usize,
    /// Whether it contributes to the loss.
    pub in_loss: bool,
}

/// The models an update reads: the policy it trains and the frozen reference, if any; the
/// constraint the rollout generated under (log-probs are recomputed under it); and this rank's
/// place in a data-parallel run.
pub struct UpdateCtx<'a> {
    pub policy: &'a LoadedModel,
    pub reference: Option<&'a Params>,
    pub constraint: Option<&'a dyn Constraint>,
    pub device: &'a Device,
    pub comm: &'a dyn Comm,
    /// The groups (the step's prompt indices) whose forward/backward this rank runs.
    pub owned: std::ops::Range<usize>,
}

/// All optimizer steps of one rollout batch; `seed` fixes the mini-batch shuffle.
pub fn optimize(
    ctx: &UpdateCtx,
    plan: &UpdatePlan,
    algo: &dyn Algorithm,
    opt: &mut AdamW,
    seqs: &[Sequence],
    seed: u64,
    lr: f64,
) -> Result<Metrics> {
    let mut order: Vec<usize> = (0..seqs.len())
        .filter(|&i| seqs[i].in_loss && !seqs[i].tokens.is_empty())
        .collect();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut acc = MetricAcc::default();
    let mut grad_norms = Vec::new();
    let mut losses = Vec::new();
    let mut skipped = false;
    for pass in 0..plan.num_iterations as u64 {
        if plan.shuffle_minibatches {
            shuffle(&mut order, seqs, plan.keep_groups_whole, &mut rng);
        }
        let mbs = minibatches(&order, seqs, plan.num_minibatches, plan.keep_groups_whole);
        for (mbi, mb) in mbs.into_iter().enumerate() {
            if mb.is_empty() {
                continue;
            }
            let shape = MinibatchShape {
                num_sequences: mb.len(),
                num_groups: mb
                    .iter()
                    .map(|&i| seqs[i].group)
                    .collect::<std::collections::BTreeSet<_>>()
                    .len(),
                num_tokens: mb.iter().map(|&i| seqs[i].tokens.len()).sum(),
                max_new_tokens: plan.max_new_tokens,
            };
            // Samples whose loss term has no gradient (zero advantage in a clipped-surrogate
            // loss without KL) skip the forward/backward, and so do other ranks' groups; they
            // still count in `shape`, the normalizer, exactly as in the full loss.
            let mut active: Vec<usize> = mb
                .iter()
                .copied()
                .filter(|&i| !(plan.skip_zero_advantage && seqs[i].advantage == 0.0))
                .filter(|&i| ctx.owned.contains(&seqs[i].group))
                .collect();
            // A prompt's samples go to the same micro-batches, so its prefix runs once.
            active.sort_by_key(|&i| (seqs[i].group, i));
            let mut grads = GradStore::default();
            let mut mb_loss = 0.0;
            if active.is_empty() {
                // All-zero gradient: still an optimizer step (moments and weight decay move on).
                for (_, var) in opt.params() {
                    grads.insert(var.as_tensor(), var.as_tensor().zeros_like()?);
                }
            }
            let micros =
                micro_batches(&active, seqs, plan.micro_batch_size, plan.keep_groups_whole);
            for (mi, micro) in micros.into_iter().enumerate() {
                // Adapter dropout masks: a function of (step seed, pass, mini-, micro-batch).
                let build = BuildOptions {
                    dropout_seed: seed ^ (pass << 40 | (mbi as u64) << 20 | mi as u64),
                    recompute: plan.gradient_checkpointing.then(|| {
                        Recompute::new(opt.params().iter().map(|(_, v)| v.clone()).collect())
                    }),
                    ..BuildOptions::default()
                };
                let (loss, m) = micro_loss(ctx, plan, algo, seqs, &micro, &shape, &build)?;
                let tokens: usize = micro.iter().map(|&i| seqs[i].tokens.len()).sum();
                acc.add(&m, tokens as f64);
                mb_loss += loss.to_dtype(DType::F32)?.to_scalar::<f32>()? as f64;
                grads.extend(loss.backward()?)?;
                if let Some(rc) = &build.recompute {
                    grads.extend(rc.take()?)?;
                }
            }
            // The mini-batch objective: micro-batch losses are already weighted to add up to it
            // (over every rank's: summed below).
            losses.push(mb_loss);
            match step_optimizer(ctx.comm, opt, &mut grads, plan.max_grad_norm, lr)? {
                Some(norm) => grad_norms.push(norm),
                None => skipped = true,
            }
        }
    }
    let losses = ctx.comm.all_reduce_sum_f64(&losses)?;
    let mut metrics = acc.all_reduce(ctx.comm)?.mean();
    metrics.insert("loss".into(), mean(&losses));
    metrics.insert("grad_norm".into(), mean(&grad_norms));
    metrics.insert("optimizer_steps".into(), grad_norms.len() as f64);
    metrics.insert("skipped".into(), if skipped { 1.0 } else { 0.0 });
    Ok(metrics)
}

fn mean(xs: &[f64]) -> f64 {
    xs.iter().sum::<f64>() / xs.len().max(1) as f64
}

/// Sum the ranks' gradients, clip and step; `None` (and no update) when the gradient is not
/// finite. Every rank then takes the same step.
pub fn step_optimizer(
    comm: &dyn Comm,
    opt: &mut AdamW,
    grads: &mut GradStore,
    max_norm: f64,
    lr: f64,
) -> Result<Option<f64>> {
    parallel::all_reduce_grads(comm, opt.params(), grads)?;
    // Over what the optimizer trains (frozen tensors and rows do not count).
    let norm = opt.clip_grad_norm(grads, max_norm)?;
    if !norm.is_finite() {
        return Ok(None);
    }
    opt.step(grads, lr)?;
    Ok(Some(norm))
}

/// Loss of one micro-batch under the current weights (with graph) and its metrics.
fn micro_loss(
    ctx: &UpdateCtx,
    plan: &UpdatePlan,
    algo: &dyn Algorithm,
    seqs: &[Sequence],
    micro: &[usize],
    shape: &MinibatchShape,
    build: &BuildOptions,
) -> Result<(Tensor, Metrics)> {
    let dev = ctx.device;
    let temp = plan.logprob_temperature;
    let pairs: Vec<(&[u32], &[u32])> = micro
        .iter()
        .map(|&i| (seqs[i].prompt.as_slice(), seqs[i].tokens.as_slice()))
        .collect();
    let groups: Vec<usize> = micro.iter().map(|&i| seqs[i].group).collect();
    let config = &ctx.policy.config;
    let stats = |dec: &Decoder| policy_stats(dec, &pairs, &groups, ctx.constraint, temp, dev);
    let cur = stats(&Decoder::build(
        config,
        &ctx.policy.params,
        Mode::Train,
        build,
    )?)?;
    let ref_logp = match ctx.reference {
        Some(p) => Some(stats(&Decoder::new(config, p, Mode::Infer)?)?.logp.detach()),
        None => None,
    };
    let targets: Vec<SequenceTargets> = micro
        .iter()
        .map(|&i| {
            let s = &seqs[i];
            SequenceTargets {
                old_logp: &s.old_logp,
                old_mean_logp: &s.old_mean_logp,
                advantage: s.advantage,
                weight: algo.token_weight(s.tokens.len(), shape),
                is_weight: &s.is_weight,
                group: s.group,
            }
        })
        .collect();
    let batch = TokenBatch::new(&targets, ref_logp, dev)?;
    algo.loss(&cur, &batch)
}

/// The mini-batches of one pass: `n` contiguous parts of near-equal size, or with
/// `keep_groups` near-equal numbers of whole groups.
fn minibatches(order: &[usize], seqs: &[Sequence], n: usize, keep_groups: bool) -> Vec<Vec<usize>> {
    if !keep_groups {
        return split_even(order, n)
            .into_iter()
            .map(<[usize]>::to_vec)
            .collect();
    }
    let groups = runs_of_groups(order, seqs);
    split_even(&(0..groups.len()).collect::<Vec<_>>(), n)
        .into_iter()
        .map(|part| {
            part.iter()
                .flat_map(|&g| groups[g].iter().copied())
                .collect()
        })
        .collect()
}

/// Micro-batches of at most `size` sequences; with `keep_groups`, whole groups packed greedily
/// (a group larger than `size` is one micro-batch of its own).
fn micro_batches(
    active: &[usize],
    seqs: &[Sequence],
    size: usize,
    keep_groups: bool,
) -> Vec<Vec<usize>> {
    if !keep_groups {
        return active.chunks(size.max(1)).map(<[usize]>::to_vec).collect();
    }
    let mut out: Vec<Vec<usize>> = Vec::new();
    for g in runs_of_groups(active, seqs) {
        match out.last_mut() {
            Some(last) if last.len() + g.len() <= size => last.extend(g),
            _ => out.push(g),
        }
    }
    out
}

/// Consecutive runs of the same group in `order`.
fn runs_of_groups(order: &[usize], seqs: &[Sequence]) -> Vec<Vec<usize>> {
    let mut out: Vec<Vec<usize>> = Vec::new();
    for &i in order {
        match out.last_mut() {
            Some(run) if seqs[run[0]].group == seqs[i].group => run.push(i),
            _ => out.push(vec![i]),
        }
    }
    out
}

/// Shuffle sequences, or with `keep_groups` the order of whole groups.
fn shuffle(order: &mut Vec<usize>, seqs: &[Sequence], keep_groups: bool, rng: &mut ChaCha8Rng) {
    if !keep_groups {
        order.shuffle(rng);
        return;
    }
    let mut groups = runs_of_groups(order, seqs);
    groups.shuffle(rng);
    *order = groups.concat();
}

/// Split `xs` into `n` contiguous parts of near-equal size.
fn split_even(xs: &[usize], n: usize) -> Vec<&[usize]> {
    let n = n.max(1);
    let base = xs.len() / n;
    let extra = xs.len() % n;
    let mut out = Vec::with_capacity(n);
    let mut start = 0;
    for i in 0..n {
        let len = base + usize::from(i < extra);
        out.push(&xs[start..start + len]);
        start += len;
    }
    out
}

/// Token-weighted running means of micro-batch metrics.
#[derive(Default)]
struct MetricAcc {
    sums: BTreeMap<String, (f64, f64)>,
}

impl MetricAcc {
    fn add(&mut self, m: &Metrics, weight: f64) {
        for (k, v) in m {
            let e = self.sums.entry(k.clone()).or_insert((0.0, 0.0));
            e.0 += v * weight;
            e.1 += weight;
        }
    }

    /// The sums of every rank (keys a rank lacks count as zero there), in rank order.
    fn all_reduce(mut self, comm: &dyn Comm) -> Result<Self> {
        if comm.world_size() == 1 {
            return Ok(self);
        }
        let parts = parallel::all_gather(
            comm,
            &self.sums,
            |sums, w| {
                w.json(&sums.keys().collect::<Vec<_>>())?;
                for (s, n) in sums.values() {
                    w.f64(*s);
                    w.f64(*n);
                }
                Ok(())
            },
            |r: &mut wire::Reader| {
                let keys: Vec<String> = r.json()?;
                keys.into_iter()
                    .map(|k| Ok((k, (r.f64()?, r.f64()?))))
                    .collect::<Result<BTreeMap<_, _>>>()
            },
        )?;
        self.sums.clear();
        for part in parts {
            for (k, (s, n)) in part {
                let e = self.sums.entry(k).or_insert((0.0, 0.0));
                e.0 += s;
                e.1 += n;
            }
        }
        Ok(self)
    }

    fn mean(&self) -> Metrics {
        self.sums
            .iter()
            .map(|(k, (s, w))| (k.clone(), s / w.max(1e-12)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seqs(groups: &[usize]) -> Vec<Sequence> {
        groups
            .iter()
            .map(|&group| Sequence {
                prompt: Arc::new(vec![1]),
                tokens: vec![2],
                old_logp: vec![0.0],
                old_mean_logp: vec![0.0],
                advantage: 1.0,
                is_weight: vec![],
                group,
                in_loss: true,
            })
            .collect()
    }

    #[test]
    fn split_even_spreads_the_remainder_over_the_first_parts() {
        let xs: Vec<usize> = (0..7).collect();
        let parts: Vec<usize> = split_even(&xs, 3).iter().map(|p| p.len()).collect();
        assert_eq!(parts, [3, 2, 2]);
        assert_eq!(split_even(&xs, 1)[0], &xs[..]);
    }

    #[test]
    fn groups_stay_whole_when_asked() {
        // Three groups of 3; 2 mini-batches and micro-batches of 4.
        let s = seqs(&[0, 0, 0, 1, 1, 1, 2, 2, 2]);
        let order: Vec<usize> = (0..9).collect();
        let mbs = minibatches(&order, &s, 2, true);
        assert_eq!(mbs, [vec![0, 1, 2, 3, 4, 5], vec![6, 7, 8]]);
        // Without groups a mini-batch may cut one.
        assert_eq!(minibatches(&order, &s, 2, false)[0], [0, 1, 2, 3, 4]);
        assert_eq!(
            micro_batches(&mbs[0], &s, 4, true),
            [vec![0, 1, 2], vec![3, 4, 5]]
        );
        assert_eq!(micro_batches(&mbs[0], &s, 4, false)[0], [0, 1, 2, 3]);
        // A group larger than a micro-batch is one of its own; small ones pack together.
        let s = seqs(&[0, 1, 2, 2, 2, 2, 2]);
        assert_eq!(
            micro_batches(&(0..7).collect::<Vec<_>>(), &s, 3, true),
            [vec![0, 1], vec![2, 3, 4, 5, 6]]
        );
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let s = seqs(&[0, 0, 1, 1, 2, 2]);
        let mut o: Vec<usize> = (0..6).collect();
        shuffle(&mut o, &s, true, &mut rng);
        for pair in o.chunks(2) {
            assert_eq!(s[pair[0]].group, s[pair[1]].group, "{o:?}");
        }
    }
}
