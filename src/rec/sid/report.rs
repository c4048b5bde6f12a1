//! What `sid build` reports: collisions before and after handling, codebook use per level
//! (utilization = codes used / K; perplexity = exp of the entropy of code usage, K when every
//! code is used equally, 1 when one code takes all), reconstruction error, and timings.

use serde::Serialize;

use super::{SidTable, TrainingLog};

/// Collisions of one coding.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CollisionStats {
    /// Share of items in a group of ≥ 2 items with one SID.
    pub rate: f64,
    pub colliding_items: usize,
    pub distinct_sids: usize,
    pub largest_group: usize,
}

impl CollisionStats {
    pub fn of(codes: &[Vec<u32>]) -> Self {
        let mut groups: std::collections::HashMap<&[u32], usize> = std::collections::HashMap::new();
        for c in codes {
            *groups.entry(c.as_slice()).or_default() += 1;
        }
        let colliding: usize = groups.values().filter(|&&m| m > 1).sum();
        Self {
            rate: colliding as f64 / codes.len().max(1) as f64,
            colliding_items: colliding,
            distinct_sids: groups.len(),
            largest_group: groups.values().copied().max().unwrap_or(0),
        }
    }
}

/// Use of one level's codebook.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LevelStats {
    pub level: usize,
    pub size: usize,
    pub used: usize,
    /// used / size.
    pub utilization: f64,
    /// exp(−Σ p log p) over the codes' shares of items.
    pub perplexity: f64,
}

/// Per-level use of `codes` with level sizes `sizes`.
pub fn level_stats(codes: &[Vec<u32>], sizes: &[usize]) -> Vec<LevelStats> {
    let n = codes.len().max(1) as f64;
    sizes
        .iter()
        .enumerate()
        .map(|(l, &size)| {
            let mut count = vec![0usize; size];
            for c in codes {
                if let Some(slot) = c.get(l).and_then(|&x| count.get_mut(x as usize)) {
                    *slot += 1;
                }
            }
            let used = count.iter().filter(|&&m| m > 0).count();
            let entropy: f64 = count
                .iter()
                .filter(|&&m| m > 0)
                .map(|&m| {
                    let p = m as f64 / n;
                    -p * p.ln()
                })
                .sum();
            LevelStats {
                level: l,
                size,
                used,
                utilization: used as f64 / size.max(1) as f64,
                perplexity: entropy.exp(),
            }
        })
        .collect()
}

/// `report.json`.
#[derive(Clone, Debug, Serialize)]
pub struct SidReport {
    pub quantizer: String,
    pub items: usize,
    pub dim: usize,
    /// Codes per level of the quantizer (before any ordinal level).
    pub codebook: Vec<usize>,
    pub collisions_mode: String,
    pub seed: u64,
    /// Quantizer's output, before collision handling.
    pub before: CollisionStats,
    pub levels_before: Vec<LevelStats>,
    /// The written table.
    pub after: CollisionStats,
    pub levels: Vec<LevelStats>,
    pub bijection: bool,
    /// Items whose SID collision handling changed.
    pub moved_items: usize,
    pub sinkhorn_rounds: usize,
    pub left_after_sinkhorn: usize,
    /// Mean growth of the moved items' squared last-level error (reassign / sinkhorn).
    pub moved_extra_error: f64,
    /// Mean squared error per element in the input space.
    pub reconstruction_mse: f64,
    /// Σ‖x − x̂‖² / Σ‖x‖².
    pub relative_error: f64,
    /// Code space / items (Π K_l / n) of the quantizer's levels.
    pub code_space_ratio: f64,
    pub training: Option<TrainingLog>,
    pub quantize_seconds: f64,
    /// Everything the config said, resolved.
    pub config: serde_json::Value,
}

impl SidReport {
    /// A few lines for a person.
    pub fn summary(&self, table: &SidTable) -> Vec<String> {
        let sizes = self
            .codebook
            .iter()
            .map(|k| k.to_string())
            .collect::<Vec<_>>()
            .join(" × ");
        let mut out = vec![
            format!(
                "{}: {} items of dim {} → {} levels ({sizes}, code space {:.1}× the items) in {:.1} s",
                self.quantizer,
                self.items,
                self.dim,
                self.codebook.len(),
                self.code_space_ratio,
                self.quantize_seconds
            ),
            format!(
                "collisions: {:.2} % of items ({} in groups, largest {}) → {} handling → {:.2} %{}",
                100.0 * self.before.rate,
                self.before.colliding_items,
                self.before.largest_group,
                self.collisions_mode,
                100.0 * self.after.rate,
                if self.moved_items > 0 {
                    format!(
                        ", {} items moved (squared last-level error {:+.3e} each on average)",
                        self.moved_items, self.moved_extra_error
                    )
                } else {
                    String::new()
                }
            ),
        ];
        for s in &self.levels {
            out.push(format!(
                "level {}: {}/{} codes used ({:.0} %), perplexity {:.1}",
                s.level,
                s.used,
                s.size,
                100.0 * s.utilization,
                s.perplexity
            ));
        }
        out.push(format!(
            "reconstruction: MSE {:.3e} per element, relative error {:.4}; {} distinct SIDs, {} tokens",
            self.reconstruction_mse,
            self.relative_error,
            self.after.distinct_sids,
            table.all_tokens().len()
        ));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_computed_stats() {
        let codes = vec![vec![0, 1], vec![0, 1], vec![1, 2], vec![1, 3]];
        let c = CollisionStats::of(&codes);
        assert_eq!(
            (c.rate, c.colliding_items, c.distinct_sids, c.largest_group),
            (0.5, 2, 3, 2)
        );
        let l = level_stats(&codes, &[4, 4]);
        // Level 0: two codes used equally → perplexity 2; level 1: shares ½, ¼, ¼ →
        // exp(½ ln 2 + ½ ln 4) = 2^1.5.
        assert_eq!((l[0].used, l[0].utilization), (2, 0.5));
        assert!((l[0].perplexity - 2.0).abs() < 1e-12);
        assert!((l[1].perplexity - 2f64.powf(1.5)).abs() < 1e-12);
    }
}
