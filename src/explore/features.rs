//! The fixed input of i-MENTOR's random network distillation: a vector that depends only on a
//! trajectory's token sequence, never on its padding, its position in the batch or its batch-mates.
//!
//! Each n-gram order `n` in `1..=orders` contributes `dims_per_order` values: the token sequence's
//! bag of n-grams (a count vector over all possible n-grams) times a fixed random ±1 matrix, i.e.
//! a Johnson–Lindenstrauss random projection (Achlioptas 2003), then L2-normalized and scaled to
//! unit RMS. Each n-gram is hashed (with the run seed) to 64 random signs per `u64`, so no
//! vocabulary-sized table is stored and any vocabulary works. Cosine similarity between two
//! projections approximates cosine similarity between the two n-gram histograms: trajectories
//! that share wording are close, unrelated ones are nearly orthogonal.
//!
//! Why not the official input (`reference/rover_imentor.md` §2.1: the padded 1,280 token ids,
//! embedded, flattened and batch-normalized): there a token's meaning depends on its absolute
//! position in the padded buffer, so a prompt one token shorter shifts every response feature; the
//! pad id 0 is a real token; and BatchNorm in training mode makes a sample's bonus depend on the
//! rest of the batch. Here the same token sequence always maps to the same vector.
//!
//! Deliberately not here: sub-linear count weighting (TF-IDF and the like), positional features
//! and length features; the bag of n-grams is length-invariant after normalization (a sequence and
//! the same sequence twice over differ only in the bigram at the seam).

/// Number of random signs one hash yields.
const SIGNS_PER_HASH: usize = 64;

/// SplitMix64's finalizer: a bijective 64-bit mixer with full avalanche.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Hash of one n-gram under `seed`; the order is mixed in so a unigram and a bigram never share
/// a hash by construction.
fn ngram_hash(seed: u64, gram: &[u32]) -> u64 {
    let mut h = mix(seed ^ mix(gram.len() as u64));
    for &t in gram {
        h = mix(h ^ u64::from(t));
    }
    h
}

/// Trajectory features: `orders * dims_per_order` values, `dims_per_order` a multiple of 64.
#[derive(Clone, Debug, PartialEq)]
pub struct NgramProjection {
    seed: u64,
    orders: usize,
    dims_per_order: usize,
}

impl NgramProjection {
    pub fn new(seed: u64, orders: usize, dims_per_order: usize) -> Self {
        debug_assert!(orders >= 1 && dims_per_order >= SIGNS_PER_HASH);
        debug_assert_eq!(dims_per_order % SIGNS_PER_HASH, 0);
        Self {
            seed: mix(seed ^ 0x1be4_70f0),
            orders,
            dims_per_order,
        }
    }

    pub fn dim(&self) -> usize {
        self.orders * self.dims_per_order
    }

    /// Appends the features of `tokens` to `out` (`dim()` values). Orders longer than the sequence
    /// contribute zeros.
    pub fn extend(&self, tokens: &[u32], out: &mut Vec<f32>) {
        let words = self.dims_per_order / SIGNS_PER_HASH;
        let mut acc = vec![0f64; self.dims_per_order];
        for n in 1..=self.orders {
            acc.iter_mut().for_each(|a| *a = 0.0);
            for gram in tokens.windows(n) {
                let h = ngram_hash(self.seed, gram);
                for w in 0..words {
                    // Word 0 is the hash itself; further words are derived by re-mixing.
                    let bits = if w == 0 { h } else { mix(h ^ w as u64) };
                    for (j, a) in acc[w * SIGNS_PER_HASH..(w + 1) * SIGNS_PER_HASH]
                        .iter_mut()
                        .enumerate()
                    {
                        *a += if (bits >> j) & 1 == 1 { 1.0 } else { -1.0 };
                    }
                }
            }
            // Unit RMS per order, so each order weighs the same in the networks' input and the
            // scale does not depend on the sequence length.
            let norm = acc.iter().map(|a| a * a).sum::<f64>().sqrt();
            let scale = if norm > 0.0 {
                (self.dims_per_order as f64).sqrt() / norm
            } else {
                0.0
            };
            out.extend(acc.iter().map(|a| (a * scale) as f32));
        }
    }

    /// Features of a batch, row by row: (B, dim) flattened.
    pub fn batch(&self, sequences: &[Vec<u32>]) -> Vec<f32> {
        let mut out = Vec::with_capacity(sequences.len() * self.dim());
        for s in sequences {
            self.extend(s, &mut out);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feats(p: &NgramProjection, t: &[u32]) -> Vec<f32> {
        let mut v = Vec::new();
        p.extend(t, &mut v);
        v
    }

    fn cos(a: &[f32], b: &[f32]) -> f64 {
        let dot: f64 = a.iter().zip(b).map(|(x, y)| f64::from(x * y)).sum();
        let na: f64 = a.iter().map(|x| f64::from(x * x)).sum::<f64>().sqrt();
        let nb: f64 = b.iter().map(|x| f64::from(x * x)).sum::<f64>().sqrt();
        dot / (na * nb)
    }

    #[test]
    fn unit_rms_per_order_and_zero_for_missing_orders() {
        let p = NgramProjection::new(7, 2, 64);
        assert_eq!(p.dim(), 128);
        let v = feats(&p, &[5, 9, 5, 11]);
        for part in v.chunks(64) {
            let ms: f64 = part.iter().map(|x| f64::from(x * x)).sum::<f64>() / 64.0;
            assert!((ms - 1.0).abs() < 1e-5, "{ms}");
        }
        // A single token has no bigram: its second half is zero; the empty sequence is all zero.
        let one = feats(&p, &[5]);
        assert!(one[64..].iter().all(|&x| x == 0.0));
        assert!(feats(&p, &[]).iter().all(|&x| x == 0.0));
        // One unigram: every entry is ±1 exactly.
        assert!(one[..64].iter().all(|&x| x == 1.0 || x == -1.0));
    }

    #[test]
    fn depends_on_tokens_and_seed_only() {
        let p = NgramProjection::new(1, 2, 128);
        let a = vec![3u32, 1, 4, 1, 5, 9, 2, 6];
        // Same tokens: same features, alone or inside a batch, in any batch position.
        let batch = p.batch(&[vec![8, 8, 8], a.clone()]);
        assert_eq!(&batch[p.dim()..], feats(&p, &a).as_slice());
        assert_eq!(feats(&p, &a), feats(&NgramProjection::new(1, 2, 128), &a));
        assert_ne!(feats(&p, &a), feats(&NgramProjection::new(2, 2, 128), &a));
        // Unigram part is order-invariant, bigram part is not.
        let mut r = a.clone();
        r.reverse();
        let (fa, fr) = (feats(&p, &a), feats(&p, &r));
        assert_eq!(fa[..128], fr[..128]);
        assert_ne!(fa[128..], fr[128..]);
    }

    #[test]
    fn similar_sequences_are_close_and_unrelated_ones_nearly_orthogonal() {
        let p = NgramProjection::new(3, 2, 256);
        let a: Vec<u32> = (0..200).map(|i| (i * 7919) % 1000).collect();
        let mut b = a.clone();
        b[100] = 5000; // one token changed
        let c: Vec<u32> = (0..200).map(|i| 2000 + (i * 104_729) % 1000).collect();
        assert!(cos(&feats(&p, &a), &feats(&p, &b)) > 0.95);
        assert!(cos(&feats(&p, &a), &feats(&p, &c)).abs() < 0.2);
    }
}
