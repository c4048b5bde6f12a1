//! RQ-KMeans: residual quantization of the raw vectors by k-means, level by level. Level 0
//! clusters the vectors; level l clusters what levels 0..l left (r_l = r_{l−1} − c_l(z_l)), so a
//! SID is coarse to fine and the sum of its centroids reconstructs the vector. Plain or balanced
//! (every code of a level holds ⌊n/K⌋ or ⌈n/K⌉ items: HSRL, MiniOneRec's constrained variant).

use super::kmeans::{kmeans, sq_dist, KMeansConfig};
use super::Quantized;
use crate::progress::Reporter;

#[derive(Clone, Debug, PartialEq)]
pub struct RqKMeansConfig {
    /// Codes per level (its length is the number of levels).
    pub sizes: Vec<usize>,
    pub balanced: bool,
    /// Lloyd iterations per level at most.
    pub max_iter: usize,
    /// Level l uses seed + l.
    pub seed: u64,
}

/// Quantizes the `[n, dim]` rows of `data`.
pub fn rq_kmeans(data: &[f32], dim: usize, cfg: &RqKMeansConfig, rep: &dyn Reporter) -> Quantized {
    let n = data.len() / dim;
    let levels = cfg.sizes.len();
    let mut residual = data.to_vec();
    let mut codes = vec![Vec::with_capacity(levels); n];
    let (mut last_residual, mut last_codebook) = (Vec::new(), Vec::new());
    rep.begin(
        if cfg.balanced {
            "rq-kmeans-balanced"
        } else {
            "rq-kmeans"
        },
        levels as u64,
        0,
    );
    for (l, &k) in cfg.sizes.iter().enumerate() {
        let c = kmeans(
            &residual,
            dim,
            &KMeansConfig {
                k,
                max_iter: cfg.max_iter,
                balanced: cfg.balanced,
                seed: cfg.seed.wrapping_add(l as u64),
            },
        );
        if l + 1 == levels {
            last_residual = residual.clone();
            last_codebook = c.centroids.clone();
        }
        for (i, (r, &a)) in residual.chunks_exact_mut(dim).zip(&c.assign).enumerate() {
            codes[i].push(a);
            for (x, &m) in r.iter_mut().zip(c.centroid(a as usize, dim)) {
                *x -= m;
            }
        }
        let mse = residual
            .iter()
            .map(|&x| (x as f64) * (x as f64))
            .sum::<f64>()
            / residual.len() as f64;
        rep.progress(
            l as u64 + 1,
            &[
                ("level", l as f64),
                ("iterations", c.iterations as f64),
                ("residual_mse", mse),
            ],
        );
    }
    rep.end();
    // What is left after the last level is exactly x − x̂.
    let sq: f64 = residual
        .chunks_exact(dim)
        .map(|r| sq_dist(r, &vec![0.0; dim]) as f64)
        .sum();
    let norm: f64 = data.iter().map(|&x| (x as f64) * (x as f64)).sum();
    Quantized {
        codes,
        sizes: cfg.sizes.clone(),
        latent_dim: dim,
        last_residual,
        last_codebook,
        reconstruction_mse: sq / (n * dim) as f64,
        relative_error: if norm > 0.0 { sq / norm } else { 0.0 },
        training: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::progress::Silent;

    #[test]
    fn residual_levels_reconstruct_a_grid_exactly() {
        // Points on a 4 × 4 grid with spacing 10 and 1: level 0 (4 codes) finds the coarse
        // 10-spaced corners, level 1 (4 codes) the 1-spaced offsets; nothing is left over.
        let mut data = Vec::new();
        for (cx, cy) in [(0.0, 0.0), (10.0, 0.0), (0.0, 10.0), (10.0, 10.0)] {
            for (dx, dy) in [(0.0, 0.0), (1.0, 0.0), (0.0, 1.0), (1.0, 1.0)] {
                data.push(cx + dx);
                data.push(cy + dy);
            }
        }
        for balanced in [false, true] {
            let cfg = RqKMeansConfig {
                sizes: vec![4, 4],
                balanced,
                max_iter: 50,
                seed: 3,
            };
            let q = rq_kmeans(&data, 2, &cfg, &Silent);
            assert!(
                q.reconstruction_mse < 1e-10,
                "{balanced}: {}",
                q.reconstruction_mse
            );
            // 16 distinct SIDs: the two levels are independent.
            let distinct: std::collections::HashSet<_> = q.codes.iter().collect();
            assert_eq!(distinct.len(), 16);
            assert_eq!(q.last_residual.len(), 32);
            assert_eq!(q.last_codebook.len(), 8);
        }
    }
}
