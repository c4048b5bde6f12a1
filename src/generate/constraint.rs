//! Constrained generation: which tokens a row may produce next.
//!
//! A [`Constraint`] answers, for one row (its prompt index and the tokens it generated so far),
//! the set of allowed next tokens ([`Allowed`]). The sampler and beam search ask it before every
//! token; `min_new_tokens` is one ([`MinNewTokens`]), a prefix trie over valid token sequences is
//! another ([`TrieConstraint`], e.g. Semantic-ID items), and several compose by intersection
//! ([`Intersection`]).
//!
//! # Which distribution a log-prob is taken under
//!
//! Under a constraint the policy is the **renormalized constrained policy**: softmax of
//! `logits / T` over the allowed set only, zero elsewhere. It is what the sampler draws from, and
//! it is what the sampler reports: `logprobs` (log π_C(token)), `mean_logprobs` (the mean of
//! log π_C over the *allowed* set, ROVER's successor value — the mean over the whole vocabulary
//! would be −∞) and `entropies` (of π_C). For a fixed action space such as Semantic IDs this is
//! the policy RL should improve: the masked tokens are not actions. The trainer recomputes the
//! same quantities from full logits with [`constrained_logprob_stats`] (a (T, V) block with one
//! [`Allowed`] per position, differentiable) or [`constrained_log_softmax`] /
//! [`constrained_stats`] (one row); [`allowed_along`] replays a constraint along a completion to
//! get those per-position sets. Without a constraint (every set [`Allowed::Any`]) all of this is
//! exactly the unconstrained policy, and the fused kernel is used.
//!
//! In training (`[generation] constraint`) the rollout samples from π_C and the update
//! recomputes π_C along the same tokens (`train::constrained::policy_stats`, which replays the
//! constraint with [`allowed_along`] and calls [`constrained_logprob_stats`]): GRPO's ratio and
//! KL, and ROVER's Q = log π_C − log π_C,old and successor value (the mean over the allowed set,
//! never −∞), are all taken under the constrained policy. Sampler and trainer agree to ≤ 1e-5 on
//! the same tokens (`tests/integration/rec_rl.rs`).
//!
//! Beam search ranks by the model's own likelihood instead (HF's semantics: log-softmax over the
//! full vocabulary, disallowed tokens removed, no renormalization) — a ranking of items should not
//! depend on how many siblings each trie node has. Beams also carry the constrained log-probs per
//! token, so they can be used as an RL group under the policy above.
//!
//! A row whose allowed set is empty cannot continue: the sampler ends it with
//! [`super::Finish::Constrained`] (no token is added), beam search ends that beam the same way.
//! Ids at or beyond the vocabulary size are ignored (never allowed).

use std::borrow::Cow;

use candle_core::{DType, Result, Tensor, D};

use super::sampling::Draw;
use crate::model::ops::{self, LogProbStats};

/// The next tokens a row may produce.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Allowed<'a> {
    /// No restriction.
    Any,
    /// Only these ids (ascending, no duplicates). Empty = nothing is allowed.
    Only(Cow<'a, [u32]>),
    /// Every id except these (ascending, no duplicates).
    AllBut(Cow<'a, [u32]>),
}

impl<'a> Allowed<'a> {
    /// Nothing is allowed (the row ends with [`super::Finish::Constrained`]).
    pub fn nothing() -> Self {
        Allowed::Only(Cow::Borrowed(&[]))
    }

    /// `Only` from any list of ids (sorted and deduplicated here).
    pub fn only(mut ids: Vec<u32>) -> Allowed<'static> {
        ids.sort_unstable();
        ids.dedup();
        Allowed::Only(Cow::Owned(ids))
    }

    /// `AllBut` from any list of ids (sorted and deduplicated here).
    pub fn all_but(mut ids: Vec<u32>) -> Allowed<'static> {
        ids.sort_unstable();
        ids.dedup();
        Allowed::AllBut(Cow::Owned(ids))
    }

    pub fn is_any(&self) -> bool {
        matches!(self, Allowed::Any)
    }

    pub fn contains(&self, id: u32) -> bool {
        match self {
            Allowed::Any => true,
            Allowed::Only(ids) => ids.binary_search(&id).is_ok(),
            Allowed::AllBut(ids) => ids.binary_search(&id).is_err(),
        }
    }

    /// The allowed ids below `vocab`, ascending; `None` when every id is allowed.
    pub fn ids(&self, vocab: usize) -> Option<Cow<'_, [u32]>> {
        let inside = |ids: &[u32]| ids.partition_point(|&i| (i as usize) < vocab);
        match self {
            Allowed::Any => None,
            Allowed::AllBut(ids) if inside(ids) == 0 => None,
            Allowed::Only(ids) => Some(Cow::Borrowed(&ids[..inside(ids)])),
            Allowed::AllBut(ids) => {
                let mut out = Vec::with_capacity(vocab - inside(ids));
                let mut skip = ids.iter().copied().peekable();
                for i in 0..vocab as u32 {
                    if skip.peek() == Some(&i) {
                        skip.next();
                    } else {
                        out.push(i);
                    }
                }
                Some(Cow::Owned(out))
            }
        }
    }

    /// How many ids below `vocab` are allowed.
    pub fn count(&self, vocab: usize) -> usize {
        let inside = |ids: &[u32]| ids.partition_point(|&i| (i as usize) < vocab);
        match self {
            Allowed::Any => vocab,
            Allowed::Only(ids) => inside(ids),
            Allowed::AllBut(ids) => vocab - inside(ids),
        }
    }

    /// Tokens allowed by both.
    pub fn intersect(self, other: Allowed<'_>) -> Allowed<'static> {
        use Allowed::*;
        match (self, other) {
            (Any, x) => x.into_owned(),
            (x, Any) => x.into_owned(),
            (Only(a), Only(b)) => Only(Cow::Owned(merge(&a, &b, |ia, ib| ia && ib))),
            (Only(a), AllBut(b)) => Only(Cow::Owned(merge(&a, &b, |ia, ib| ia && !ib))),
            (AllBut(b), Only(a)) => Only(Cow::Owned(merge(&a, &b, |ia, ib| ia && !ib))),
            (AllBut(a), AllBut(b)) => AllBut(Cow::Owned(merge(&a, &b, |ia, ib| ia || ib))),
        }
    }

    pub fn into_owned(self) -> Allowed<'static> {
        match self {
            Allowed::Any => Allowed::Any,
            Allowed::Only(ids) => Allowed::Only(Cow::Owned(ids.into_owned())),
            Allowed::AllBut(ids) => Allowed::AllBut(Cow::Owned(ids.into_owned())),
        }
    }
}

/// The ids of two ascending lists for which `keep(in a, in b)` holds, ascending.
fn merge(a: &[u32], b: &[u32], keep: impl Fn(bool, bool) -> bool) -> Vec<u32> {
    let (mut i, mut j, mut out) = (0, 0, Vec::new());
    while i < a.len() || j < b.len() {
        let (x, y) = (a.get(i).copied(), b.get(j).copied());
        let id = match (x, y) {
            (Some(x), Some(y)) => x.min(y),
            (Some(x), None) => x,
            (None, Some(y)) => y,
            (None, None) => break,
        };
        let (ia, ib) = (x == Some(id), y == Some(id));
        if keep(ia, ib) {
            out.push(id);
        }
        i += ia as usize;
        j += ib as usize;
    }
    out
}

/// Allowed next tokens for a row, given its prompt index and the tokens it generated so far.
/// Called from worker threads, once per row and step: keep it cheap and pure.
pub trait Constraint: Send + Sync {
    fn allowed(&self, prompt: usize, generated: &[u32]) -> Allowed<'_>;
}

impl<C: Constraint + ?Sized> Constraint for &C {
    fn allowed(&self, prompt: usize, generated: &[u32]) -> Allowed<'_> {
        (**self).allowed(prompt, generated)
    }
}

impl<C: Constraint + ?Sized> Constraint for Box<C> {
    fn allowed(&self, prompt: usize, generated: &[u32]) -> Allowed<'_> {
        (**self).allowed(prompt, generated)
    }
}

/// End-of-sequence tokens are not allowed before `min` tokens were generated (HF's
/// `min_new_tokens`).
#[derive(Clone, Debug)]
pub struct MinNewTokens {
    min: usize,
    eos: Vec<u32>,
}

impl MinNewTokens {
    pub fn new(min: usize, eos: &[u32]) -> Self {
        let mut eos = eos.to_vec();
        eos.sort_unstable();
        eos.dedup();
        Self { min, eos }
    }
}

impl Constraint for MinNewTokens {
    fn allowed(&self, _prompt: usize, generated: &[u32]) -> Allowed<'_> {
        if generated.len() < self.min {
            Allowed::AllBut(Cow::Borrowed(&self.eos))
        } else {
            Allowed::Any
        }
    }
}

/// Tokens allowed by every part.
pub struct Intersection<'c> {
    parts: Vec<&'c dyn Constraint>,
}

impl<'c> Intersection<'c> {
    pub fn new(parts: Vec<&'c dyn Constraint>) -> Self {
        Self { parts }
    }
}

impl Constraint for Intersection<'_> {
    fn allowed(&self, prompt: usize, generated: &[u32]) -> Allowed<'_> {
        let mut parts = self.parts.iter().map(|c| c.allowed(prompt, generated));
        let Some(first) = parts.next() else {
            return Allowed::Any;
        };
        parts.fold(
            first,
            |acc, a| {
                if a.is_any() {
                    acc
                } else {
                    acc.intersect(a)
                }
            },
        )
    }
}

/// A prefix trie over valid token sequences: a row may only extend its generated tokens along
/// one of them, and once it has produced a whole sequence, the `end` tokens (typically the EOS
/// ids) are allowed as well — alone if no longer sequence continues it. Off the trie (a prefix of
/// no sequence) nothing is allowed. The same trie holds for every prompt.
#[derive(Clone, Debug)]
pub struct TrieConstraint {
    nodes: Vec<TrieNode>,
    sequences: usize,
}

#[derive(Clone, Debug, Default)]
struct TrieNode {
    /// (token, child node), ascending by token.
    children: Vec<(u32, usize)>,
    /// What may follow this prefix: the children's tokens, plus `end` if a sequence ends here.
    allowed: Vec<u32>,
}

impl TrieConstraint {
    /// A trie over `sequences` (duplicates are harmless); `end` is allowed after each whole one.
    pub fn new(sequences: &[Vec<u32>], end: &[u32]) -> Self {
        let mut nodes = vec![TrieNode::default()];
        let mut terminal = vec![false];
        for seq in sequences {
            let mut at = 0;
            for &tok in seq {
                at = match nodes[at].children.binary_search_by_key(&tok, |c| c.0) {
                    Ok(i) => nodes[at].children[i].1,
                    Err(i) => {
                        nodes.push(TrieNode::default());
                        terminal.push(false);
                        let child = nodes.len() - 1;
                        nodes[at].children.insert(i, (tok, child));
                        child
                    }
                };
            }
            terminal[at] = true;
        }
        for (node, &term) in nodes.iter_mut().zip(&terminal) {
            let mut allowed: Vec<u32> = node.children.iter().map(|c| c.0).collect();
            if term {
                allowed.extend_from_slice(end);
                allowed.sort_unstable();
                allowed.dedup();
            }
            node.allowed = allowed;
        }
        Self {
            nodes,
            sequences: sequences.len(),
        }
    }

    /// Number of sequences it was built from.
    pub fn len(&self) -> usize {
        self.sequences
    }

    pub fn is_empty(&self) -> bool {
        self.sequences == 0
    }

    /// The node reached by following `prefix` from the root, if it is on the trie.
    fn walk(&self, prefix: &[u32]) -> Option<&TrieNode> {
        let mut at = &self.nodes[0];
        for &tok in prefix {
            let i = at.children.binary_search_by_key(&tok, |c| c.0).ok()?;
            at = &self.nodes[at.children[i].1];
        }
        Some(at)
    }
}

impl Constraint for TrieConstraint {
    fn allowed(&self, _prompt: usize, generated: &[u32]) -> Allowed<'_> {
        match self.walk(generated) {
            Some(node) => Allowed::Only(Cow::Borrowed(&node.allowed)),
            None => Allowed::nothing(),
        }
    }
}

/// The allowed set at each position of `completion` (position t: after `completion[..t]`).
pub fn allowed_along<'c>(
    constraint: &'c dyn Constraint,
    prompt: usize,
    completion: &[u32],
) -> Vec<Allowed<'c>> {
    (0..completion.len())
        .map(|t| constraint.allowed(prompt, &completion[..t]))
        .collect()
}

/// log π_C over the vocabulary: log-softmax of `logits / temperature` renormalized over the
/// allowed set, −∞ outside it (all −∞ when nothing is allowed). logits: (V,).
pub fn constrained_log_softmax(logits: &[f32], allowed: &Allowed, temperature: f64) -> Vec<f32> {
    let t = temperature;
    let lse = allowed_logsumexp(logits, allowed, t);
    logits
        .iter()
        .enumerate()
        .map(|(i, &x)| {
            if allowed.contains(i as u32) {
                (x as f64 / t - lse) as f32
            } else {
                f32::NEG_INFINITY
            }
        })
        .collect()
}

/// log π_C(target), the mean of log π_C over the allowed set, and the entropy of π_C, for one row
/// of logits (V,) — the statistics the sampler reports. `None` when nothing is allowed.
pub fn constrained_stats(
    logits: &[f32],
    allowed: &Allowed,
    temperature: f64,
    target: u32,
) -> Option<Draw> {
    let t = temperature;
    let ids: Vec<usize> = match allowed.ids(logits.len()) {
        None => (0..logits.len()).collect(),
        Some(ids) => ids.iter().map(|&i| i as usize).collect(),
    };
    if ids.is_empty() {
        return None;
    }
    let lse = allowed_logsumexp(logits, allowed, t);
    let lp = |i: usize| logits[i] as f64 / t - lse;
    let mean = ids.iter().map(|&i| lp(i)).sum::<f64>() / ids.len() as f64;
    let entropy = -ids.iter().map(|&i| lp(i).exp() * lp(i)).sum::<f64>();
    let logp = if allowed.contains(target) && (target as usize) < logits.len() {
        lp(target as usize)
    } else {
        f64::NEG_INFINITY
    };
    Some(Draw {
        id: target,
        logp: logp as f32,
        mean_logp: mean as f32,
        entropy: entropy.max(0.0) as f32,
    })
}

/// logsumexp of `logits / t` over the allowed ids (−∞ when there are none).
fn allowed_logsumexp(logits: &[f32], allowed: &Allowed, t: f64) -> f64 {
    let z: Vec<f64> = match allowed.ids(logits.len()) {
        None => logits.iter().map(|&x| x as f64 / t).collect(),
        Some(ids) => ids.iter().map(|&i| logits[i as usize] as f64 / t).collect(),
    };
    let max = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if max == f64::NEG_INFINITY {
        return max;
    }
    max + z.iter().map(|&x| (x - max).exp()).sum::<f64>().ln()
}

/// What the trainer recomputes: for each row of logits (T, V) and target (T,), log π_C(target),
/// the mean of log π_C over the allowed set and the entropy of π_C, with π_C the renormalized
/// constrained policy at temperature `temperature` and `allowed[t]` the set at row t. Differentiable
/// with respect to `logits`. When every set is [`Allowed::Any`] this is exactly
/// [`ops::logprob_stats`] (the fused kernel); otherwise it materializes a (T, V) mask, so pass
/// one completion's block at a time. A target outside its allowed set gets ≈ −1e30 (the tokens
/// did not come from this constraint).
pub fn constrained_logprob_stats(
    logits: &Tensor,
    targets: &Tensor,
    allowed: &[Allowed],
    temperature: f64,
) -> Result<LogProbStats> {
    let (n, v) = logits.dims2()?;
    if allowed.len() != n {
        candle_core::bail!(
            "constrained_logprob_stats: {} allowed sets for {n} rows of logits",
            allowed.len()
        );
    }
    if allowed.iter().all(Allowed::is_any) {
        return ops::logprob_stats(logits, targets, temperature);
    }
    if !(temperature > 0.0 && temperature.is_finite()) {
        candle_core::bail!("constrained_logprob_stats: temperature must be > 0, got {temperature}");
    }
    // Additive mask (0 allowed, a large negative elsewhere: −inf would make 0·(−inf) = NaN in
    // the entropy) and the allowed indicator.
    let mut mask = vec![crate::model::decoder::MASKED; n * v];
    let mut count = Vec::with_capacity(n);
    for (row, a) in mask.chunks_mut(v).zip(allowed) {
        match a.ids(v) {
            None => row.fill(0.0),
            Some(ids) => ids.iter().for_each(|&i| row[i as usize] = 0.0),
        }
        count.push(a.count(v).max(1) as f32);
    }
    let dev = logits.device();
    let mask = Tensor::from_vec(mask, (n, v), dev)?; // (T, V)
    let indicator = mask.eq(0f32)?.to_dtype(DType::F32)?; // (T, V)
    let count = Tensor::from_vec(count, n, dev)?; // (T,)
    let z = (logits.to_dtype(DType::F32)? / temperature)?.add(&mask)?; // (T, V)
    let logp_all = candle_nn::ops::log_softmax(&z, D::Minus1)?; // (T, V)
    let targets = targets.to_dtype(DType::U32)?;
    let logp = logp_all.gather(&targets.unsqueeze(1)?, 1)?.squeeze(1)?; // (T,)
    let mean_logp = (logp_all.mul(&indicator)?.sum(D::Minus1)? / count)?; // (T,)
    let entropy = (logp_all.exp()? * &logp_all)?.sum(D::Minus1)?.neg()?; // (T,)
    Ok(LogProbStats {
        logp,
        mean_logp,
        entropy,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn only(ids: &[u32]) -> Allowed<'static> {
        Allowed::only(ids.to_vec())
    }

    #[test]
    fn intersections_are_closed_and_exact() {
        let a = only(&[1, 3, 5, 7]);
        assert_eq!(a.clone().intersect(only(&[3, 4, 7])), only(&[3, 7]));
        assert_eq!(
            a.clone().intersect(Allowed::all_but(vec![5, 9])),
            only(&[1, 3, 7])
        );
        assert_eq!(
            Allowed::all_but(vec![2]).intersect(Allowed::all_but(vec![1, 2])),
            Allowed::all_but(vec![1, 2])
        );
        assert_eq!(Allowed::Any.intersect(a.clone()), a);
        assert_eq!(a.clone().intersect(Allowed::nothing()), Allowed::nothing());
    }

    #[test]
    fn ids_and_counts_respect_the_vocabulary() {
        assert_eq!(only(&[1, 3, 9]).ids(5).unwrap().as_ref(), &[1, 3]);
        assert_eq!(only(&[1, 3, 9]).count(5), 2);
        assert_eq!(
            Allowed::all_but(vec![0, 2, 9]).ids(5).unwrap().as_ref(),
            &[1, 3, 4]
        );
        assert_eq!(Allowed::all_but(vec![0, 2, 9]).count(5), 3);
        assert!(Allowed::all_but(vec![7]).ids(5).is_none());
        assert!(Allowed::Any.ids(5).is_none());
    }

    #[test]
    fn min_new_tokens_masks_eos_until_the_minimum() {
        let c = MinNewTokens::new(2, &[9, 2]);
        assert_eq!(c.allowed(0, &[]), Allowed::all_but(vec![2, 9]));
        assert_eq!(c.allowed(0, &[4]), Allowed::all_but(vec![2, 9]));
        assert_eq!(c.allowed(0, &[4, 4]), Allowed::Any);
    }

    #[test]
    fn trie_follows_sequences_then_allows_the_end() {
        // [5, 6, 7], [5, 6], [5, 8, 1], [3]
        let seqs = vec![vec![5, 6, 7], vec![5, 6], vec![5, 8, 1], vec![3]];
        let t = TrieConstraint::new(&seqs, &[2]);
        assert_eq!(t.len(), 4);
        assert_eq!(t.allowed(0, &[]), only(&[3, 5]));
        assert_eq!(t.allowed(0, &[5]), only(&[6, 8]));
        // [5, 6] is whole and is continued by [5, 6, 7]: both the end and 7.
        assert_eq!(t.allowed(1, &[5, 6]), only(&[2, 7]));
        assert_eq!(t.allowed(0, &[5, 6, 7]), only(&[2]));
        assert_eq!(t.allowed(0, &[3]), only(&[2]));
        assert_eq!(t.allowed(0, &[4]), Allowed::nothing());
        assert_eq!(t.allowed(0, &[5, 6, 7, 2]), Allowed::nothing());
        // Without end tokens a whole sequence allows nothing more.
        let t = TrieConstraint::new(&seqs, &[]);
        assert_eq!(t.allowed(0, &[5, 8, 1]), Allowed::nothing());
    }

    #[test]
    fn intersection_of_trie_and_min_length() {
        let t = TrieConstraint::new(&[vec![5], vec![5, 6]], &[2]);
        let m = MinNewTokens::new(2, &[2]);
        let c = Intersection::new(vec![&t, &m]);
        assert_eq!(c.allowed(0, &[5]), only(&[6]));
        assert_eq!(c.allowed(0, &[5, 6]), only(&[2]));
        assert_eq!(Intersection::new(vec![]).allowed(0, &[]), Allowed::Any);
    }

    #[test]
    fn constrained_log_softmax_renormalizes_over_the_allowed_set() {
        let z = [0.5f32, -1.0, 2.0, 0.0];
        let a = only(&[0, 2]);
        let lp = constrained_log_softmax(&z, &a, 2.0);
        let lse = ((0.25f64).exp() + (1.0f64).exp()).ln();
        assert!((lp[0] as f64 - (0.25 - lse)).abs() < 1e-6);
        assert!((lp[2] as f64 - (1.0 - lse)).abs() < 1e-6);
        assert_eq!(lp[1], f32::NEG_INFINITY);
        let d = constrained_stats(&z, &a, 2.0, 2).unwrap();
        assert!((d.logp - lp[2]).abs() < 1e-6);
        assert!((d.mean_logp - (lp[0] + lp[2]) / 2.0).abs() < 1e-6);
        let h = -(lp[0].exp() * lp[0] + lp[2].exp() * lp[2]);
        assert!((d.entropy - h).abs() < 1e-6);
        assert!(constrained_stats(&z, &Allowed::nothing(), 1.0, 0).is_none());
        // Unconstrained: the plain tempered log-softmax.
        let d = constrained_stats(&z, &Allowed::Any, 1.0, 1).unwrap();
        let lse = z.iter().map(|&x| (x as f64).exp()).sum::<f64>().ln();
        assert!((d.logp as f64 - (-1.0 - lse)).abs() < 1e-6);
    }

    #[test]
    fn tensor_stats_equal_the_row_stats() {
        let dev = candle_core::Device::Cpu;
        let rows = [
            vec![0.5f32, -1.0, 2.0, 0.0, 1.5],
            vec![1.0f32, 0.2, -0.3, 0.7, -2.0],
            vec![-0.5f32, 0.0, 0.1, 3.0, 1.0],
        ];
        let allowed = [only(&[0, 2, 4]), Allowed::Any, Allowed::all_but(vec![3])];
        let targets = [4u32, 1, 0];
        let lg = Tensor::from_vec(rows.concat(), (3, 5), &dev).unwrap();
        let tg = Tensor::from_vec(targets.to_vec(), 3, &dev).unwrap();
        let s = constrained_logprob_stats(&lg, &tg, &allowed, 0.7).unwrap();
        let (lp, mean, ent): (Vec<f32>, Vec<f32>, Vec<f32>) = (
            s.logp.to_vec1().unwrap(),
            s.mean_logp.to_vec1().unwrap(),
            s.entropy.to_vec1().unwrap(),
        );
        for i in 0..3 {
            let d = constrained_stats(&rows[i], &allowed[i], 0.7, targets[i]).unwrap();
            assert!((lp[i] - d.logp).abs() < 1e-5, "row {i}");
            assert!((mean[i] - d.mean_logp).abs() < 1e-5, "row {i}");
            assert!((ent[i] - d.entropy).abs() < 1e-5, "row {i}");
        }
        // All unconstrained: the fused path, same numbers as the row function.
        let any = [Allowed::Any, Allowed::Any, Allowed::Any];
        let s = constrained_logprob_stats(&lg, &tg, &any, 0.7).unwrap();
        let d = constrained_stats(&rows[0], &Allowed::Any, 0.7, 4).unwrap();
        let m0 = s.mean_logp.to_vec1::<f32>().unwrap()[0];
        assert!((m0 - d.mean_logp).abs() < 1e-5);
    }

    #[test]
    fn tensor_stats_have_finite_gradients() {
        let dev = candle_core::Device::Cpu;
        let v = candle_core::Var::from_vec(vec![0.5f32, -1.0, 2.0, 0.0], (1, 4), &dev).unwrap();
        let tg = Tensor::from_vec(vec![2u32], 1, &dev).unwrap();
        let s = constrained_logprob_stats(v.as_tensor(), &tg, &[only(&[0, 2])], 1.0).unwrap();
        let loss = (s.logp.sum_all().unwrap() + s.mean_logp.sum_all().unwrap()).unwrap();
        let loss = (loss + s.entropy.sum_all().unwrap()).unwrap();
        let g = loss.backward().unwrap();
        let g: Vec<f32> = g.get(&v).unwrap().flatten_all().unwrap().to_vec1().unwrap();
        assert!(g.iter().all(|x| x.is_finite()), "{g:?}");
        // Masked logits do not move the constrained policy.
        assert!(g[1].abs() < 1e-12 && g[3].abs() < 1e-12, "{g:?}");
    }
}
