//! Token sampling from one row of logits: greedy, temperature, top-k, top-p.
//!
//! Each sample owns its RNG and draws exactly one number per step, whatever the settings, so a
//! sample depends only on its seed and its own logits — never on what else is in the batch.

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::constraint::Allowed;
use crate::model::ops::simd::{exp_f64, max_of, simd_fn};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SamplingConfig {
    /// 0 = greedy.
    pub temperature: f64,
    /// Keep the k most likely tokens; 0 = off.
    pub top_k: usize,
    /// Keep the smallest set of tokens with cumulative probability ≥ p; 1 = off.
    pub top_p: f64,
    pub max_new_tokens: usize,
    /// End-of-sequence tokens are masked until this many tokens were generated (HF's
    /// `min_new_tokens`).
    pub min_new_tokens: usize,
    /// Generation ends when the completion's text contains one of these (it is cut there).
    pub stop: Vec<String>,
}

impl Default for SamplingConfig {
    fn default() -> Self {
        Self {
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            max_new_tokens: 256,
            min_new_tokens: 0,
            stop: vec![],
        }
    }
}

impl SamplingConfig {
    pub fn validate(&self) -> anyhow::Result<()> {
        if !(self.temperature >= 0.0 && self.temperature.is_finite()) {
            anyhow::bail!(
                "temperature must be ≥ 0 (0 = greedy), got {}",
                self.temperature
            );
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            anyhow::bail!("top_p must be in (0, 1], got {}", self.top_p);
        }
        if self.max_new_tokens == 0 {
            anyhow::bail!("max_new_tokens must be ≥ 1");
        }
        Ok(())
    }

    /// The temperature log-probs are reported under (greedy reports the raw distribution).
    pub fn logprob_temperature(&self) -> f64 {
        if self.temperature > 0.0 {
            self.temperature
        } else {
            1.0
        }
    }
}

/// Pick a token from `logits` (V,). Returns the id and its log-prob under softmax(logits / T)
/// (T = 1 for greedy) — the full tempered distribution, which is what the trainer recomputes;
/// top-k/top-p truncation is not folded into the reported log-prob.
pub fn sample(logits: &[f32], cfg: &SamplingConfig, rng: &mut ChaCha8Rng) -> (u32, f32) {
    let d = sample_with_stats(logits, cfg, rng);
    (d.id, d.logp)
}

/// One drawn token and the statistics of the tempered distribution it was drawn from.
#[derive(Clone, Copy, Debug)]
pub struct Draw {
    pub id: u32,
    /// log-prob of `id` under softmax(logits / T).
    pub logp: f32,
    /// Mean over the vocabulary of the tempered log-softmax (ROVER's successor value of the
    /// sampling policy at this state).
    pub mean_logp: f32,
    /// Entropy of the tempered distribution (nats).
    pub entropy: f32,
}

/// `sample`, plus the statistics of the whole tempered distribution ([`Draw`]).
pub fn sample_with_stats(logits: &[f32], cfg: &SamplingConfig, rng: &mut ChaCha8Rng) -> Draw {
    let u: f64 = rng.random(); // drawn every step so the stream never depends on the settings
    let t = cfg.logprob_temperature();
    let Tempered {
        max,
        weights,
        total,
        sum_z,
        sum_wz,
    } = tempered(logits, t);
    let lse = max / t + total.ln(); // logsumexp of z = logits / t
    let mean_z = sum_z / logits.len() as f64;
    // H = lse − E_p[z]; masked (−inf) logits have zero weight and are left out.
    let expected_z = sum_wz / total;
    let id = pick(logits, max as f32, &weights, total, cfg, u);
    Draw {
        id: id as u32,
        logp: (logits[id] as f64 / t - lse) as f32,
        mean_logp: (mean_z - lse) as f32,
        entropy: (lse - expected_z).max(0.0) as f32,
    }
}

/// The first index of the row's largest logit `max` (its NaN-ignoring max, [`max_of`]): the
/// serial scan's answer (NaNs never win; a row without a number gives 0), found by comparing
/// with the max instead of carrying the best so far.
fn argmax(logits: &[f32], max: f32) -> usize {
    logits.iter().position(|&x| x == max).unwrap_or(0)
}

/// The tempered distribution of one row, unnormalized: what sampling and its statistics need.
struct Tempered {
    /// max of the logits.
    max: f64,
    /// exp((x − max) / t) per logit.
    weights: Vec<f64>,
    /// Σ weights.
    total: f64,
    /// Σ z over the vocabulary, z = x / t.
    sum_z: f64,
    /// Σ weight · z over the logits with a positive weight (masked −∞ logits left out).
    sum_wz: f64,
}

/// Lanes of the f64 accumulators: independent partial sums so the passes vectorize.
const LANES: usize = 8;

simd_fn! {
    /// [`Tempered`] in two passes over the row (max, then weights and sums). This was the
    /// sampling cost (49,152 scalar libm `exp` calls and three serial f64 sums per row: 21 ms
    /// per decode step at batch 64); here the exp is [`exp_f64`] and the sums run in [`LANES`]
    /// partial sums, so both vectorize.
    fn tempered(logits: &[f32], t: f64) -> Tempered {
        let max = max_of(logits) as f64;
        let mut weights = vec![0f64; logits.len()];
        for (w, &x) in weights.iter_mut().zip(logits) {
            *w = exp_f64((x as f64 - max) / t);
        }
        let (mut tot, mut sz, mut swz) = ([0f64; LANES], [0f64; LANES], [0f64; LANES]);
        let (wc, xc) = (weights.chunks_exact(LANES), logits.chunks_exact(LANES));
        let (wt, xt) = (wc.remainder(), xc.remainder());
        for (w, x) in wc.zip(xc) {
            for i in 0..LANES {
                let z = x[i] as f64 / t;
                tot[i] += w[i];
                sz[i] += z;
                swz[i] += if w[i] > 0.0 { w[i] * z } else { 0.0 };
            }
        }
        for (&w, &x) in wt.iter().zip(xt) {
            let z = x as f64 / t;
            tot[0] += w;
            sz[0] += z;
            swz[0] += if w > 0.0 { w * z } else { 0.0 };
        }
        Tempered {
            max,
            weights,
            total: tot.iter().sum(),
            sum_z: sz.iter().sum(),
            sum_wz: swz.iter().sum(),
        }
    }
}

/// `sample_with_stats` under a constraint: drawn from, and reporting the statistics of, the
/// renormalized constrained distribution (see [`super::constraint`]); `None` when nothing is
/// allowed. Sampling over the allowed ids in ascending order makes the draw identical to sampling
/// the full row with the disallowed logits set to −∞ (same RNG number, same order).
pub fn sample_allowed(
    logits: &[f32],
    allowed: &Allowed,
    cfg: &SamplingConfig,
    rng: &mut ChaCha8Rng,
) -> Option<Draw> {
    let Some(ids) = allowed.ids(logits.len()) else {
        return Some(sample_with_stats(logits, cfg, rng));
    };
    if ids.is_empty() {
        return None;
    }
    let sub: Vec<f32> = ids.iter().map(|&i| logits[i as usize]).collect();
    let d = sample_with_stats(&sub, cfg, rng);
    Some(Draw {
        id: ids[d.id as usize],
        ..d
    })
}

/// The token drawn with uniform `u` from `weights` (unnormalized, summing to `total`), after
/// greedy / top-k / top-p selection.
fn pick(
    logits: &[f32],
    max: f32,
    weights: &[f64],
    total: f64,
    cfg: &SamplingConfig,
    u: f64,
) -> usize {
    if cfg.temperature <= 0.0 {
        return argmax(logits, max);
    }
    let draw = |idx: &mut dyn Iterator<Item = usize>, mass: f64| -> Option<usize> {
        let mut target = u * mass;
        let mut last = None;
        for i in idx {
            target -= weights[i];
            last = Some(i);
            if target < 0.0 {
                return Some(i);
            }
        }
        last // rounding left a sliver of mass: the last candidate
    };
    if cfg.top_k == 0 && cfg.top_p >= 1.0 {
        return draw(&mut (0..logits.len()), total).unwrap_or(0);
    }
    let mut idx: Vec<usize> = (0..logits.len()).collect();
    idx.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]).then(a.cmp(&b)));
    if cfg.top_k > 0 {
        idx.truncate(cfg.top_k);
    }
    if cfg.top_p < 1.0 {
        let candidates: f64 = idx.iter().map(|&i| weights[i]).sum();
        let mut cum = 0.0;
        let mut keep = idx.len();
        for (n, &i) in idx.iter().enumerate() {
            cum += weights[i] / candidates;
            if cum >= cfg.top_p {
                keep = n + 1;
                break;
            }
        }
        idx.truncate(keep);
    }
    let kept: f64 = idx.iter().map(|&i| weights[i]).sum();
    draw(&mut idx.iter().copied(), kept).expect("top-k/top-p keep at least one token")
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn cfg(t: f64, k: usize, p: f64) -> SamplingConfig {
        SamplingConfig {
            temperature: t,
            top_k: k,
            top_p: p,
            ..Default::default()
        }
    }

    #[test]
    fn exp_f64_is_within_two_ulp_of_libm() {
        let ulps = |a: f64, b: f64| (a.to_bits() as i64 - b.to_bits() as i64).unsigned_abs();
        let mut worst = 0;
        for i in 0..=200_000 {
            let x = -708.0 + 717.0 * i as f64 / 200_000.0;
            worst = worst.max(ulps(exp_f64(x), x.exp()));
        }
        for x in [
            0.0,
            -0.0,
            1e-300,
            -1e-20,
            0.5 * std::f64::consts::LN_2,
            -30.25,
            88.7,
        ] {
            worst = worst.max(ulps(exp_f64(x), x.exp()));
        }
        assert!(worst <= 2, "{worst} ulp");
        assert_eq!(exp_f64(f64::NEG_INFINITY), 0.0);
        assert_eq!(exp_f64(-1e4), 0.0);
        assert!(exp_f64(f64::NAN).is_nan());
        // The weights as the sampler computes them, masked logits included.
        let logits = [1.5f32, f32::NEG_INFINITY, -3.25, 0.0];
        let d = tempered(&logits, 0.7);
        assert_eq!(d.max, 1.5);
        assert!((d.total - (1.0 + (-4.75f64 / 0.7).exp() + (-1.5f64 / 0.7).exp())).abs() < 1e-15);
        assert_eq!(d.sum_z, f64::NEG_INFINITY);
        assert!(d.sum_wz.is_finite());
        for (&wi, &x) in d.weights.iter().zip(&logits) {
            let want = ((x as f64 - 1.5) / 0.7).exp();
            assert!(ulps(wi, want) <= 2, "{wi} vs {want}");
        }
    }

    #[test]
    fn argmax_equals_the_serial_scan() {
        let serial = |l: &[f32]| {
            let mut best = 0;
            for (i, &x) in l.iter().enumerate() {
                if x > l[best] || (l[best].is_nan() && !x.is_nan()) {
                    best = i;
                }
            }
            best
        };
        let (n, inf) = (f32::NAN, f32::NEG_INFINITY);
        let mut cases: Vec<Vec<f32>> = vec![
            vec![],
            vec![n, n, n],
            vec![inf; 20],
            vec![n, inf, 2.0, n, 2.0],
            vec![1.0; 19],
        ];
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        for len in [1, 7, 8, 9, 31, 100] {
            for _ in 0..50 {
                // Few distinct values so ties are common; some NaN and −∞.
                let row = (0..len)
                    .map(|_| match rng.random_range(0..10) {
                        0 => n,
                        1 => inf,
                        k => k as f32,
                    })
                    .collect();
                cases.push(row);
            }
        }
        for c in &cases {
            // The empty row: both give 0.
            assert_eq!(argmax(c, max_of(c)), serial(c), "{c:?}");
        }
    }

    #[test]
    fn greedy_picks_argmax_with_its_logprob() {
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let (id, lp) = sample(&[0.0, 2.0, 1.0], &cfg(0.0, 0, 1.0), &mut rng);
        assert_eq!(id, 1);
        let lse = (1.0f64 + 2f64.exp() + 1f64.exp()).ln();
        assert!((lp as f64 - (2.0 - lse)).abs() < 1e-6);
    }

    #[test]
    fn top_k_one_is_greedy() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        for _ in 0..50 {
            assert_eq!(
                sample(&[0.5, 0.1, 3.0, 2.9], &cfg(1.0, 1, 1.0), &mut rng).0,
                2
            );
        }
    }

    #[test]
    fn top_p_excludes_the_tail() {
        // probs ≈ [0.665, 0.245, 0.090]: top_p = 0.6 keeps only the first.
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        for _ in 0..100 {
            assert_eq!(sample(&[2.0, 1.0, 0.0], &cfg(1.0, 0, 0.6), &mut rng).0, 0);
        }
    }

    #[test]
    fn temperature_sampling_matches_probabilities() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let logits = [0.0f32, (3.0f32).ln()]; // p = [0.25, 0.75]
        let n = 20_000;
        let ones = (0..n)
            .filter(|_| sample(&logits, &cfg(1.0, 0, 1.0), &mut rng).0 == 1)
            .count();
        let frac = ones as f64 / n as f64;
        assert!((frac - 0.75).abs() < 0.02, "{frac}");
    }

    #[test]
    fn entropy_of_the_tempered_distribution() {
        let z = [0.3f32, -1.0, 2.0];
        let t = 0.7;
        let d = sample_with_stats(&z, &cfg(t, 0, 1.0), &mut ChaCha8Rng::seed_from_u64(1));
        let e: Vec<f64> = z.iter().map(|&x| (x as f64 / t).exp()).collect();
        let sum: f64 = e.iter().sum();
        let h: f64 = e.iter().map(|x| -(x / sum) * (x / sum).ln()).sum();
        assert!((d.entropy as f64 - h).abs() < 1e-6, "{} vs {h}", d.entropy);
        // A masked logit (−inf, e.g. EOS under min_new_tokens) contributes nothing.
        let d = sample_with_stats(
            &[0.0, f32::NEG_INFINITY],
            &cfg(1.0, 0, 1.0),
            &mut ChaCha8Rng::seed_from_u64(1),
        );
        assert!(d.entropy.abs() < 1e-7);
    }

    #[test]
    fn constrained_draw_equals_the_masked_draw() {
        // Same seed: sampling the allowed ids equals sampling the row with the rest at −inf, and
        // the reported log-prob is renormalized over the allowed set.
        let z = [0.3f32, 1.0, -0.5, 2.0, 0.1];
        let allowed = Allowed::only(vec![0, 2, 4]);
        let mut masked = z;
        for i in [1, 3] {
            masked[i] = f32::NEG_INFINITY;
        }
        for seed in 0..50 {
            let c = cfg(0.8, 0, 1.0);
            let a = sample_allowed(&z, &allowed, &c, &mut ChaCha8Rng::seed_from_u64(seed)).unwrap();
            let b = sample_with_stats(&masked, &c, &mut ChaCha8Rng::seed_from_u64(seed));
            assert_eq!(a.id, b.id);
            assert!((a.logp - b.logp).abs() < 1e-6);
            assert!(a.mean_logp.is_finite() && b.mean_logp == f32::NEG_INFINITY);
            assert!(allowed.contains(a.id));
        }
        let c = cfg(1.0, 0, 1.0);
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        assert!(sample_allowed(&z, &Allowed::nothing(), &c, &mut rng).is_none());
    }

    #[test]
    fn logprob_uses_temperature() {
        let mut rng = ChaCha8Rng::seed_from_u64(4);
        let logits = [1.0f32, 3.0];
        let (id, lp) = sample(&logits, &cfg(2.0, 0, 1.0), &mut rng);
        let z = [0.5f64, 1.5];
        let lse = (z[0].exp() + z[1].exp()).ln();
        assert!((lp as f64 - (z[id as usize] - lse)).abs() < 1e-6);
    }
}
