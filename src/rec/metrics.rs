//! Top-K recommendation metrics: HR@K and NDCG@K for K ∈ {1, 3, 5, 10, 20}, their means over test
//! rows, and paired-bootstrap intervals of the difference between two rankers.
//!
//! A ranking is a list of entries, best first; each entry is a *set* of items tied at that place
//! (a singleton for an ordinary ranked list; several items when a collided SID maps to all of
//! them, or when a scorer gives them exactly equal scores). With one relevant item per row, IDCG
//! is 1 and NDCG@K = 1/log2(rank + 2) for a 0-based rank < K (MiniOneRec's `calc.py`).
//!
//! How a tied set counts ([`TieRule`]):
//! - `Expected` (default): the target's rank is uniform over the set's places. For a set of s
//!   items after c items ranked above it, rank r ∈ {c, …, c+s−1} each with probability 1/s, so
//!   HR@K = |{r < K}| / s and NDCG@K = (1/s) Σ_{r<K} 1/log2(r+2): the metric of a random
//!   tie-break, in expectation. A tied set never gains from its size.
//! - `Optimistic`: the set is one entry at its position (MiniOneRec matches SID strings, so a
//!   collided item counts as a hit at its beam's rank); reported only for parity with it.
//!
//! Items already in the history ([`HistoryRule`]): allowed by default (MiniOneRec evaluates so; a
//! repeat can then be the right answer only if the log repeats items, which ML-100K never does),
//! or excluded: removed from every entry before scoring, the same for every ranker.
//!
//! Rows are averaged with equal weight; under leave-one-out there is one test row per user.

use anyhow::{ensure, Result};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// The cut-offs reported everywhere.
pub const KS: [usize; 5] = [1, 3, 5, 10, 20];

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum HistoryRule {
    /// History items may be recommended (MiniOneRec).
    #[default]
    Allow,
    /// History items are removed from every ranking before scoring.
    Exclude,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TieRule {
    /// The target's expected metric under a uniform random order within its tied set.
    #[default]
    Expected,
    /// A tied set is one entry: a hit at the set's position (MiniOneRec's SID-string match).
    Optimistic,
}

/// HR and NDCG of one row at each K of [`KS`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct RowMetrics {
    pub hr: [f64; 5],
    pub ndcg: [f64; 5],
}

/// The ranking with history items removed (rule `Exclude`) or unchanged (`Allow`); emptied
/// entries are dropped.
pub fn apply_history_rule(
    ranking: &[Vec<u32>],
    history: &[u32],
    rule: HistoryRule,
) -> Vec<Vec<u32>> {
    match rule {
        HistoryRule::Allow => ranking.to_vec(),
        HistoryRule::Exclude => ranking
            .iter()
            .map(|e| {
                e.iter()
                    .copied()
                    .filter(|i| !history.contains(i))
                    .collect::<Vec<_>>()
            })
            .filter(|e| !e.is_empty())
            .collect(),
    }
}

fn gain(rank: usize) -> f64 {
    1.0 / ((rank + 2) as f64).log2()
}

/// HR@K and NDCG@K of one ranking for one target. The first entry holding the target counts;
/// a ranking without it scores 0.
pub fn row_metrics(ranking: &[Vec<u32>], target: u32, ties: TieRule) -> RowMetrics {
    let mut m = RowMetrics::default();
    let mut above = 0usize; // items ranked strictly above the current entry
    for (pos, entry) in ranking.iter().enumerate() {
        if entry.contains(&target) {
            for (j, &k) in KS.iter().enumerate() {
                match ties {
                    TieRule::Optimistic => {
                        if pos < k {
                            m.hr[j] = 1.0;
                            m.ndcg[j] = gain(pos);
                        }
                    }
                    TieRule::Expected => {
                        let s = entry.len();
                        let places = (above..above + s).filter(|&r| r < k);
                        let (n, g) = places.fold((0usize, 0.0), |(n, g), r| (n + 1, g + gain(r)));
                        m.hr[j] = n as f64 / s as f64;
                        m.ndcg[j] = g / s as f64;
                    }
                }
            }
            return m;
        }
        above += entry.len();
    }
    m
}

/// One cut-off's means.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct AtK {
    pub k: usize,
    pub hr: f64,
    pub ndcg: f64,
}

/// Means over rows at each K.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub rows: usize,
    pub at: Vec<AtK>,
}

impl Summary {
    pub fn new(rows: &[RowMetrics]) -> Self {
        let n = rows.len().max(1) as f64;
        let at = KS
            .iter()
            .enumerate()
            .map(|(j, &k)| AtK {
                k,
                hr: rows.iter().map(|r| r.hr[j]).sum::<f64>() / n,
                ndcg: rows.iter().map(|r| r.ndcg[j]).sum::<f64>() / n,
            })
            .collect();
        Self {
            rows: rows.len(),
            at,
        }
    }

    /// NDCG@k (0 for a k not in [`KS`]).
    pub fn ndcg(&self, k: usize) -> f64 {
        self.at.iter().find(|a| a.k == k).map_or(0.0, |a| a.ndcg)
    }

    pub fn hr(&self, k: usize) -> f64 {
        self.at.iter().find(|a| a.k == k).map_or(0.0, |a| a.hr)
    }
}

/// Column `j` of [`KS`] of a metric over rows (for [`paired_bootstrap`]).
pub fn column(rows: &[RowMetrics], ndcg: bool, k: usize) -> Vec<f64> {
    let j = KS.iter().position(|&x| x == k).unwrap_or(KS.len() - 1);
    rows.iter()
        .map(|r| if ndcg { r.ndcg[j] } else { r.hr[j] })
        .collect()
}

/// A difference of means with its percentile bootstrap interval.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Interval {
    pub mean: f64,
    pub lo: f64,
    pub hi: f64,
}

/// mean(a − b) with a 95 % percentile interval from `resamples` paired bootstrap resamples of the
/// rows (the same rows drawn for both rankers, so row difficulty cancels), seeded.
pub fn paired_bootstrap(a: &[f64], b: &[f64], resamples: usize, seed: u64) -> Result<Interval> {
    ensure!(
        a.len() == b.len() && !a.is_empty(),
        "paired bootstrap needs two equally long, non-empty per-row metric lists (got {} and {}); \
         hint: compare rankers on the same test rows",
        a.len(),
        b.len()
    );
    ensure!(resamples >= 1, "bootstrap needs at least one resample");
    let d: Vec<f64> = a.iter().zip(b).map(|(x, y)| x - y).collect();
    let n = d.len();
    let mean = d.iter().sum::<f64>() / n as f64;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut means: Vec<f64> = (0..resamples)
        .map(|_| (0..n).map(|_| d[rng.random_range(0..n)]).sum::<f64>() / n as f64)
        .collect();
    means.sort_by(f64::total_cmp);
    let q = |p: f64| means[((p * resamples as f64) as usize).min(resamples - 1)];
    Ok(Interval {
        mean,
        lo: q(0.025),
        hi: q(0.975),
    })
}

/// Top of a full-catalogue score vector as a ranking: items sorted by score (descending), items
/// with exactly equal scores forming one tied entry, stopping once `depth` items are ranked (the
/// last entry is always complete, so ties at the cut stay whole).
pub fn rank_scores(scores: &[f32], depth: usize) -> Vec<Vec<u32>> {
    let mut order: Vec<u32> = (0..scores.len() as u32).collect();
    // NaN sorts last; the index breaks no ties (equal scores are grouped below).
    order.sort_by(|&a, &b| {
        let (x, y) = (scores[a as usize], scores[b as usize]);
        y.partial_cmp(&x)
            .unwrap_or_else(|| x.is_nan().cmp(&y.is_nan()))
            .then(a.cmp(&b))
    });
    let mut out: Vec<Vec<u32>> = Vec::new();
    for (ranked, i) in order.into_iter().enumerate() {
        let same = out
            .last()
            .and_then(|e| e.first())
            .is_some_and(|&j| scores[j as usize] == scores[i as usize]);
        if same {
            out.last_mut().expect("checked non-empty").push(i);
        } else if ranked >= depth {
            break;
        } else {
            out.push(vec![i]);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g(r: usize) -> f64 {
        1.0 / ((r + 2) as f64).log2()
    }

    fn close(a: f64, b: f64) {
        assert!((a - b).abs() < 1e-12, "{a} vs {b}");
    }

    #[test]
    fn hit_at_rank_three_by_hand() {
        let ranking: Vec<Vec<u32>> = [5, 9, 7, 1].iter().map(|&i| vec![i]).collect();
        let m = row_metrics(&ranking, 7, TieRule::Expected);
        // 0-based rank 2: misses K = 1; hits K ≥ 3 with NDCG = 1/log2(4) = 0.5.
        assert_eq!(m.hr, [0.0, 1.0, 1.0, 1.0, 1.0]);
        assert_eq!(m.ndcg, [0.0, 0.5, 0.5, 0.5, 0.5]);
        assert_eq!(
            row_metrics(&ranking, 42, TieRule::Expected),
            RowMetrics::default()
        );
    }

    #[test]
    fn a_tie_set_counts_its_expected_rank() {
        // Item 4 alone, then {2, 7, 8} tied at places 1..3 (0-based); target 7.
        let ranking = vec![vec![4], vec![2, 7, 8], vec![1]];
        let m = row_metrics(&ranking, 7, TieRule::Expected);
        // K=1: no place < 1 in the set → 0. K=3: places 1, 2 of 3 → HR 2/3, NDCG (g1+g2)/3.
        // K≥5: all three places → HR 1, NDCG (g1+g2+g3)/3.
        assert_eq!(m.hr[0], 0.0);
        close(m.hr[1], 2.0 / 3.0);
        close(m.ndcg[1], (g(1) + g(2)) / 3.0);
        close(m.hr[2], 1.0);
        close(m.ndcg[2], (g(1) + g(2) + g(3)) / 3.0);
        // Optimistic: the set is entry 1 → hit at rank 1 for every K ≥ 3 (and K = 1 misses).
        let o = row_metrics(&ranking, 7, TieRule::Optimistic);
        assert_eq!(o.hr, [0.0, 1.0, 1.0, 1.0, 1.0]);
        close(o.ndcg[1], g(1));
    }

    #[test]
    fn history_rule_removes_history_items_everywhere() {
        let ranking = vec![vec![3], vec![1, 2], vec![5]];
        assert_eq!(
            apply_history_rule(&ranking, &[3, 2], HistoryRule::Allow),
            ranking
        );
        let ex = apply_history_rule(&ranking, &[3, 2], HistoryRule::Exclude);
        assert_eq!(ex, vec![vec![1], vec![5]]);
        // Target 5 moves from rank 3 to rank 1 once the history is gone.
        close(row_metrics(&ex, 5, TieRule::Expected).ndcg[3], g(1));
    }

    #[test]
    fn summary_averages_rows() {
        let a = row_metrics(&[vec![1]], 1, TieRule::Expected);
        let b = row_metrics(&[vec![2]], 1, TieRule::Expected);
        let s = Summary::new(&[a, b]);
        assert_eq!(s.rows, 2);
        close(s.hr(1), 0.5);
        close(s.ndcg(20), 0.5);
    }

    #[test]
    fn rank_scores_groups_equal_scores_and_keeps_the_cut_tie_whole() {
        let scores = [1.0, 3.0, 2.0, 2.0, 0.5, 2.0];
        let r = rank_scores(&scores, 2);
        assert_eq!(r, vec![vec![1], vec![2, 3, 5]]);
        assert_eq!(rank_scores(&scores, 10).len(), 4);
    }

    #[test]
    fn paired_bootstrap_is_seeded_and_centred() {
        let a: Vec<f64> = (0..200).map(|i| ((i * 7) % 10) as f64 / 10.0).collect();
        let b: Vec<f64> = (0..200).map(|i| ((i * 3) % 10) as f64 / 20.0).collect();
        let x = paired_bootstrap(&a, &b, 2000, 7).unwrap();
        assert_eq!(x, paired_bootstrap(&a, &b, 2000, 7).unwrap());
        assert_ne!(x, paired_bootstrap(&a, &b, 2000, 8).unwrap());
        let mean = a.iter().zip(&b).map(|(p, q)| p - q).sum::<f64>() / 200.0;
        close(x.mean, mean);
        assert!(x.lo < mean && mean < x.hi, "{x:?}");
        // Identical rankers: every resample's difference is exactly 0.
        let z = paired_bootstrap(&a, &a, 100, 1).unwrap();
        assert_eq!((z.lo, z.mean, z.hi), (0.0, 0.0, 0.0));
        assert!(paired_bootstrap(&a, &b[..10], 10, 1).is_err());
    }
}
