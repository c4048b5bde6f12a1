//! Seeded k-means over f32 rows: k-means++ initialisation, Lloyd iterations, and a *balanced*
//! variant whose clusters each hold ⌊n/K⌋ or ⌈n/K⌉ points.
//!
//! Balanced assignment is the greedy sorted-distance method with capacities (HSRL's
//! `k_means_acc.py`): every (point, centroid) pair sorted by distance, each pair taken in turn
//! when its point is still free and its cluster still has room. It is not the optimal transport
//! MiniOneRec's `rqkmeans_constrained.py` solves by min-cost flow, but it is O(nK log nK) with no
//! solver, exact about the capacities, deterministic, and the Lloyd iterations around it (means
//! of the assigned points, then a fresh assignment) recover most of the gap; we keep the
//! iteration of least inertia, since capacity-constrained Lloyd need not descend monotonically.
//! Memory: the pairs take 8 bytes each (27 MB for 1682 × 256; 200 MB for 100k × 256).
//!
//! Plain k-means reseeds an empty cluster with the point farthest from its centroid (the usual
//! fix; sklearn does the same) so every code stays in use when n ≥ K.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

/// How to cluster.
#[derive(Clone, Debug, PartialEq)]
pub struct KMeansConfig {
    pub k: usize,
    /// Lloyd iterations at most (stops earlier when no assignment changes).
    pub max_iter: usize,
    /// Capacity-constrained: every cluster holds ⌊n/K⌋ or ⌈n/K⌉ points.
    pub balanced: bool,
    pub seed: u64,
}

/// A clustering of n rows.
#[derive(Clone, Debug, PartialEq)]
pub struct Clustering {
    /// `[k, dim]` row-major.
    pub centroids: Vec<f32>,
    /// Cluster of each row.
    pub assign: Vec<u32>,
    /// Σ ‖x − c(x)‖².
    pub inertia: f64,
    /// Lloyd iterations run.
    pub iterations: usize,
}

impl Clustering {
    pub fn centroid(&self, c: usize, dim: usize) -> &[f32] {
        &self.centroids[c * dim..(c + 1) * dim]
    }
    /// Points per cluster.
    pub fn counts(&self, k: usize) -> Vec<usize> {
        assign_counts(&self.assign, k)
    }
}

/// ‖a − b‖², in eight lanes so the compiler vectorizes it.
pub fn sq_dist(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for j in 0..8 {
            let d = x[j] - y[j];
            acc[j] += d * d;
        }
    }
    let mut s: f32 = acc.iter().sum();
    for (x, y) in ra.iter().zip(rb) {
        s += (x - y) * (x - y);
    }
    s
}

/// `[n, k]` squared distances of every row to every centroid, rows in parallel.
pub fn distances(data: &[f32], dim: usize, centroids: &[f32]) -> Vec<f32> {
    let k = centroids.len() / dim;
    let n = data.len() / dim;
    let mut out = vec![0f32; n * k];
    out.par_chunks_mut(k.max(1))
        .zip(data.par_chunks(dim))
        .for_each(|(o, x)| {
            for (c, d) in o.iter_mut().enumerate() {
                *d = sq_dist(x, &centroids[c * dim..(c + 1) * dim]);
            }
        });
    out
}

/// Index of the nearest centroid of each row and its distance.
pub fn nearest(data: &[f32], dim: usize, centroids: &[f32]) -> Vec<(u32, f32)> {
    data.par_chunks(dim)
        .map(|x| {
            let mut best = (0u32, f32::INFINITY);
            for (c, cen) in centroids.chunks_exact(dim).enumerate() {
                let d = sq_dist(x, cen);
                if d < best.1 {
                    best = (c as u32, d);
                }
            }
            best
        })
        .collect()
}

/// Clusters the `[n, dim]` rows of `data`. n ≥ 1; k ≥ 1 (k > n leaves clusters empty).
pub fn kmeans(data: &[f32], dim: usize, cfg: &KMeansConfig) -> Clustering {
    let n = data.len() / dim;
    let k = cfg.k.max(1);
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    let mut centroids = plus_plus(data, dim, k, &mut rng);
    let mut assign: Vec<u32> = vec![u32::MAX; n];
    let mut best: Option<Clustering> = None;
    let mut iterations = 0;
    for it in 1..=cfg.max_iter.max(1) {
        iterations = it;
        let next: Vec<u32> = if cfg.balanced {
            balanced_assign(&distances(data, dim, &centroids), n, k).0
        } else {
            nearest(data, dim, &centroids)
                .into_iter()
                .map(|(c, _)| c)
                .collect()
        };
        let changed = next != assign;
        assign = next;
        // Centroids become the means of their points, and the inertia is measured against
        // them: what a code then stands for.
        centroids = means(data, dim, &assign, &centroids, !cfg.balanced);
        let inertia: f64 = data
            .par_chunks(dim)
            .zip(assign.par_iter())
            .map(|(x, &a)| sq_dist(x, &centroids[a as usize * dim..(a as usize + 1) * dim]) as f64)
            .sum();
        if best.as_ref().is_none_or(|b| inertia < b.inertia) {
            best = Some(Clustering {
                centroids: centroids.clone(),
                assign: assign.clone(),
                inertia,
                iterations: it,
            });
        }
        // An empty cluster was just reseeded (plain k-means): let the next assignment use it.
        let reseeded = !cfg.balanced && n >= k && assign_counts(&assign, k).contains(&0);
        if !changed && !reseeded {
            break;
        }
    }
    let mut out = best.unwrap_or(Clustering {
        centroids,
        assign,
        inertia: f64::INFINITY,
        iterations,
    });
    out.iterations = iterations;
    out
}

fn assign_counts(assign: &[u32], k: usize) -> Vec<usize> {
    let mut n = vec![0; k];
    for &a in assign {
        n[a as usize] += 1;
    }
    n
}

/// k-means++ (Arthur & Vassilvitskii 2007): the first centre uniform, each next one drawn with
/// probability ∝ its squared distance to the nearest centre chosen so far; uniform when every
/// point already sits on a centre (duplicates, or k > distinct points).
fn plus_plus(data: &[f32], dim: usize, k: usize, rng: &mut ChaCha8Rng) -> Vec<f32> {
    let n = data.len() / dim;
    let mut cen = Vec::with_capacity(k * dim);
    let first = rng.random_range(0..n);
    cen.extend_from_slice(&data[first * dim..(first + 1) * dim]);
    let mut d2: Vec<f64> = data
        .par_chunks(dim)
        .map(|x| sq_dist(x, &cen[..dim]) as f64)
        .collect();
    for _ in 1..k {
        let total: f64 = d2.iter().sum();
        let pick = if total > 0.0 {
            let mut u = rng.random::<f64>() * total;
            let mut pick = n - 1;
            for (i, &d) in d2.iter().enumerate() {
                if u < d {
                    pick = i;
                    break;
                }
                u -= d;
            }
            pick
        } else {
            rng.random_range(0..n)
        };
        let c = data[pick * dim..(pick + 1) * dim].to_vec();
        d2.par_iter_mut()
            .zip(data.par_chunks(dim))
            .for_each(|(d, x)| *d = d.min(sq_dist(x, &c) as f64));
        cen.extend(c);
    }
    cen
}

/// Means of the assigned rows; an empty cluster keeps its centroid, or (`reseed`) moves to the
/// row farthest from its own centroid, each such row used once.
fn means(data: &[f32], dim: usize, assign: &[u32], old: &[f32], reseed: bool) -> Vec<f32> {
    let k = old.len() / dim;
    let mut sum = vec![0f64; k * dim];
    let mut count = vec![0usize; k];
    for (x, &a) in data.chunks_exact(dim).zip(assign) {
        let a = a as usize;
        count[a] += 1;
        for (s, &v) in sum[a * dim..(a + 1) * dim].iter_mut().zip(x) {
            *s += v as f64;
        }
    }
    let mut out = old.to_vec();
    for c in 0..k {
        if count[c] > 0 {
            for j in 0..dim {
                out[c * dim + j] = (sum[c * dim + j] / count[c] as f64) as f32;
            }
        }
    }
    let empty: Vec<usize> = (0..k).filter(|&c| count[c] == 0).collect();
    if reseed && !empty.is_empty() {
        // Farthest rows from their (new) centroids, largest first; ties by row.
        let mut far: Vec<(f32, usize)> = data
            .chunks_exact(dim)
            .zip(assign)
            .enumerate()
            .filter(|(_, (_, &a))| count[a as usize] > 1)
            .map(|(i, (x, &a))| {
                (
                    sq_dist(x, &out[a as usize * dim..(a as usize + 1) * dim]),
                    i,
                )
            })
            .collect();
        far.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        for (c, (_, i)) in empty.into_iter().zip(far) {
            out[c * dim..(c + 1) * dim].copy_from_slice(&data[i * dim..(i + 1) * dim]);
        }
    }
    out
}

/// Capacity-constrained assignment of `n` rows to `k` clusters from their `[n, k]` distances:
/// (point, cluster) pairs by increasing distance (ties by point, then cluster), a pair taken when
/// its point is free and its cluster has room. `r = n mod k` clusters may hold ⌈n/k⌉, the rest
/// ⌊n/k⌋: a cluster at ⌊n/k⌋ takes one more while fewer than r clusters have. Total capacity is
/// exactly n at every moment, so every point is placed. Returns the assignment and its inertia.
pub fn balanced_assign(dist: &[f32], n: usize, k: usize) -> (Vec<u32>, f64) {
    let (lo, r) = (n / k, n % k);
    let mut pairs: Vec<u64> = Vec::with_capacity(n * k);
    // The distance's bits as the high half: non-negative f32 order equals its bit order.
    for (idx, &d) in dist.iter().enumerate() {
        pairs.push(((d.max(0.0).to_bits() as u64) << 32) | idx as u64);
    }
    pairs.par_sort_unstable();
    let mut assign = vec![u32::MAX; n];
    let mut count = vec![0usize; k];
    let (mut at_hi, mut placed, mut inertia) = (0usize, 0usize, 0f64);
    for key in pairs {
        let idx = (key & 0xffff_ffff) as usize;
        let (p, c) = (idx / k, idx % k);
        if assign[p] != u32::MAX {
            continue;
        }
        let room = count[c] < lo || (count[c] == lo && at_hi < r);
        if !room {
            continue;
        }
        if count[c] == lo {
            at_hi += 1;
        }
        count[c] += 1;
        assign[p] = c as u32;
        inertia += dist[idx] as f64;
        placed += 1;
        if placed == n {
            break;
        }
    }
    (assign, inertia)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::Rng;

    /// `per` points around each of `centres` (2-D), jittered by ±0.05.
    fn blobs(centres: &[[f32; 2]], per: usize, seed: u64) -> Vec<f32> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut v = Vec::new();
        for c in centres {
            for _ in 0..per {
                v.push(c[0] + rng.random_range(-0.05..0.05));
                v.push(c[1] + rng.random_range(-0.05..0.05));
            }
        }
        v
    }

    #[test]
    fn plain_kmeans_finds_separated_blobs() {
        let centres = [[0.0, 0.0], [5.0, 0.0], [0.0, 5.0], [5.0, 5.0]];
        let data = blobs(&centres, 25, 1);
        let cfg = KMeansConfig {
            k: 4,
            max_iter: 50,
            balanced: false,
            seed: 7,
        };
        let c = kmeans(&data, 2, &cfg);
        // Each blob is one cluster.
        for b in 0..4 {
            let a = &c.assign[b * 25..(b + 1) * 25];
            assert!(a.iter().all(|&x| x == a[0]), "blob {b}: {a:?}");
        }
        assert_eq!(c.counts(4), vec![25; 4]);
        assert!(c.inertia < 100.0 * 2.0 * 0.05 * 0.05);
        // Seeded: the same seed gives the same clustering.
        assert_eq!(kmeans(&data, 2, &cfg), c);
    }

    #[test]
    fn balanced_splits_an_uneven_blob_evenly() {
        // 30 points in one blob, 10 in another: plain k-means with k = 2 follows the blobs,
        // balanced must cut the big blob to give 20 / 20.
        let mut data = blobs(&[[0.0, 0.0]], 30, 2);
        data.extend(blobs(&[[9.0, 9.0]], 10, 3));
        let c = kmeans(
            &data,
            2,
            &KMeansConfig {
                k: 2,
                max_iter: 50,
                balanced: true,
                seed: 1,
            },
        );
        assert_eq!(c.counts(2), vec![20, 20]);
        // The far blob stays together.
        let far = c.assign[30];
        assert!(c.assign[30..].iter().all(|&a| a == far));
    }

    #[test]
    fn hand_worked_greedy_assignment() {
        // 3 points, 2 clusters (caps 2 and 1). Distances: p0 (0, 9), p1 (1, 8), p2 (2, 3).
        // Pairs by distance: p0→c0 (0), p1→c0 (1), p2→c0 (2: c0 is at ⌈3/2⌉ = 2, full),
        // p2→c1 (3).
        let d = [0.0, 9.0, 1.0, 8.0, 2.0, 3.0];
        let (a, inertia) = balanced_assign(&d, 3, 2);
        assert_eq!(a, vec![0, 0, 1]);
        assert_eq!(inertia, 4.0);
    }

    #[test]
    fn more_clusters_than_points_and_duplicates() {
        let data = vec![1.0, 1.0, 1.0, 1.0, 2.0, 2.0];
        for balanced in [false, true] {
            let c = kmeans(
                &data,
                2,
                &KMeansConfig {
                    k: 5,
                    max_iter: 10,
                    balanced,
                    seed: 0,
                },
            );
            assert_eq!(c.assign.len(), 3);
            assert!(c.assign.iter().all(|&a| a < 5));
            if balanced {
                assert!(c.counts(5).iter().all(|&n| n <= 1));
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        /// Every cluster holds ⌊n/K⌋ or ⌈n/K⌉ points, for any n, K and data.
        #[test]
        fn balanced_respects_capacities(n in 1usize..120, k in 1usize..20, dim in 1usize..5, seed in 0u64..1000) {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            // Clustered on purpose (three tight spots), the hardest case for capacities.
            let data: Vec<f32> = (0..n * dim)
                .map(|i| ((i / dim) % 3) as f32 * 10.0 + rng.random_range(-0.1..0.1))
                .collect();
            let c = kmeans(&data, dim, &KMeansConfig { k, max_iter: 20, balanced: true, seed });
            let counts = c.counts(k);
            let (lo, hi) = (n / k, n.div_ceil(k));
            prop_assert!(counts.iter().all(|&m| m == lo || m == hi), "{counts:?} n {n} k {k}");
            prop_assert_eq!(counts.iter().sum::<usize>(), n);
            prop_assert_eq!(counts.iter().filter(|&&m| m == hi && hi > lo).count(), if hi > lo { n % k } else { 0 });
        }
    }
}
