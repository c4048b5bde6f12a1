//! `sid build` below the CLI: item vectors → quantizer → collision handling → table + report.

use std::time::Instant;

use anyhow::{ensure, Result};
use serde::{Deserialize, Serialize};

use super::collisions::{resolve, CollisionMode};
use super::report::{level_stats, CollisionStats, SidReport};
use super::rq_kmeans::{rq_kmeans, RqKMeansConfig};
use super::rq_vae::{rq_vae, RqVaeConfig};
use super::vectors::Vectors;
use super::SidTable;
use crate::progress::Reporter;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum QuantizerKind {
    /// Residual k-means on the raw vectors.
    RqKmeans,
    /// Residual k-means, every code of a level holding ⌊n/K⌋ or ⌈n/K⌉ items.
    RqKmeansBalanced,
    /// RQ-VAE: MLP encoder/decoder around residual codebooks, trained.
    RqVae,
}

impl QuantizerKind {
    pub fn name(self) -> &'static str {
        match self {
            Self::RqKmeans => "rq-kmeans",
            Self::RqKmeansBalanced => "rq-kmeans-balanced",
            Self::RqVae => "rq-vae",
        }
    }
}

/// Largest codebook the default picks: MiniOneRec's 3 × 256 for large catalogues.
pub const MAX_DEFAULT_CODEBOOK: usize = 256;

/// The default codebook size for `n` items and `levels` levels: the smallest K with K^levels
/// ≥ 2n (a code space 2–3× the items keeps collisions low, `rq_seeds.md` §4), rounded up to a
/// multiple of 4, between 4 and 256. 1682 items, 3 levels: 15 → 16 (4096 codes, 2.4×).
pub fn default_codebook(n: usize, levels: usize) -> usize {
    let target = 2.0 * n as f64;
    let mut k = 1usize;
    while (k as f64).powi(levels as i32) < target && k < MAX_DEFAULT_CODEBOOK {
        k += 1;
    }
    k.div_ceil(4)
        .max(1)
        .saturating_mul(4)
        .clamp(4, MAX_DEFAULT_CODEBOOK)
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct BuildConfig {
    pub quantizer: QuantizerKind,
    pub levels: usize,
    /// Codes per level; `None`: [`default_codebook`].
    pub codebook: Option<usize>,
    pub collisions: CollisionMode,
    pub seed: u64,
    /// RQ-KMeans: Lloyd iterations per level at most.
    pub kmeans_iters: usize,
    /// RQ-VAE's settings (its `sizes` and `seed` are set from the fields above).
    pub rq_vae: RqVaeConfig,
}

impl Default for BuildConfig {
    fn default() -> Self {
        Self {
            quantizer: QuantizerKind::RqKmeansBalanced,
            levels: 3,
            codebook: None,
            collisions: CollisionMode::Ordinal,
            seed: 0,
            kmeans_iters: 100,
            rq_vae: RqVaeConfig::default(),
        }
    }
}

impl BuildConfig {
    /// Checks what needs no data (before the vectors are read).
    pub fn validate(&self) -> Result<()> {
        let max = if self.collisions == CollisionMode::Ordinal {
            25
        } else {
            26
        };
        ensure!(
            (1..=max).contains(&self.levels),
            "--levels {} is out of range: 1..={max} (the tokens' level letters are a..z{})",
            self.levels,
            if max == 25 {
                ", and ordinal adds one"
            } else {
                ""
            }
        );
        if let Some(k) = self.codebook {
            ensure!(k >= 2, "--codebook {k}: a level needs at least 2 codes");
        }
        ensure!(self.kmeans_iters >= 1, "--kmeans-iters must be ≥ 1");
        if self.quantizer == QuantizerKind::RqVae {
            self.rq_vae.validate()?;
        }
        Ok(())
    }
}

/// Quantizes `v`, handles collisions, and reports (the summary also as reporter messages).
pub fn build(v: &Vectors, cfg: &BuildConfig, rep: &dyn Reporter) -> Result<(SidTable, SidReport)> {
    cfg.validate()?;
    let n = v.len();
    let k = cfg
        .codebook
        .unwrap_or_else(|| default_codebook(n, cfg.levels));
    let sizes = vec![k; cfg.levels];
    let mut resolved = serde_json::to_value(cfg)?;
    resolved["codebook"] = k.into();
    let t0 = Instant::now();
    let q = match cfg.quantizer {
        QuantizerKind::RqKmeans | QuantizerKind::RqKmeansBalanced => {
            resolved.as_object_mut().map(|o| o.remove("rq_vae"));
            let c = RqKMeansConfig {
                sizes: sizes.clone(),
                balanced: cfg.quantizer == QuantizerKind::RqKmeansBalanced,
                max_iter: cfg.kmeans_iters,
                seed: cfg.seed,
            };
            rq_kmeans(&v.data, v.dim, &c, rep)
        }
        QuantizerKind::RqVae => {
            let c = RqVaeConfig {
                sizes: sizes.clone(),
                seed: cfg.seed,
                ..cfg.rq_vae.clone()
            };
            resolved["rq_vae"] = serde_json::to_value(&c)?;
            resolved.as_object_mut().map(|o| o.remove("kmeans_iters"));
            rq_vae(&v.data, v.dim, &c, rep)?
        }
    };
    let seconds = t0.elapsed().as_secs_f64();
    let res = resolve(&q, cfg.collisions)?;
    let table = SidTable::new(v.ids.clone(), res.codes.clone(), res.sizes.clone())?;
    let report = SidReport {
        quantizer: cfg.quantizer.name().into(),
        items: n,
        dim: v.dim,
        codebook: sizes.clone(),
        collisions_mode: cfg.collisions.name().into(),
        seed: cfg.seed,
        before: CollisionStats::of(&q.codes),
        levels_before: level_stats(&q.codes, &q.sizes),
        after: CollisionStats::of(&res.codes),
        levels: level_stats(&res.codes, &res.sizes),
        bijection: table.is_bijection(),
        moved_items: res.moved,
        sinkhorn_rounds: res.sinkhorn_rounds,
        left_after_sinkhorn: res.left_after_sinkhorn,
        moved_extra_error: res.moved_extra_error,
        reconstruction_mse: q.reconstruction_mse,
        relative_error: q.relative_error,
        code_space_ratio: sizes.iter().map(|&s| s as f64).product::<f64>() / n as f64,
        training: q.training.clone(),
        quantize_seconds: seconds,
        config: resolved,
    };
    for line in report.summary(&table) {
        rep.message(&line);
    }
    Ok((table, report))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::progress::Recorder;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn default_codebook_follows_the_catalogue() {
        assert_eq!(default_codebook(1682, 3), 16);
        assert_eq!(default_codebook(10, 3), 4);
        assert_eq!(default_codebook(3686, 3), 20);
        assert_eq!(default_codebook(100_000_000, 3), 256);
        assert_eq!(default_codebook(1682, 2), 60);
    }

    fn vectors(n: usize, dim: usize) -> Vectors {
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        Vectors {
            ids: (0..n).map(|i| format!("item{i}")).collect(),
            dim,
            data: (0..n * dim).map(|_| rng.random_range(-1.0..1.0)).collect(),
        }
    }

    #[test]
    fn every_quantizer_and_mode_gives_a_table_and_report() {
        let v = vectors(60, 6);
        for quantizer in [
            QuantizerKind::RqKmeans,
            QuantizerKind::RqKmeansBalanced,
            QuantizerKind::RqVae,
        ] {
            for collisions in [
                CollisionMode::Ordinal,
                CollisionMode::Reassign,
                CollisionMode::Sinkhorn,
                CollisionMode::Keep,
            ] {
                let cfg = BuildConfig {
                    quantizer,
                    levels: 3,
                    codebook: Some(8),
                    collisions,
                    kmeans_iters: 20,
                    rq_vae: RqVaeConfig {
                        hidden: vec![16],
                        latent: 4,
                        epochs: 5,
                        batch_size: 64,
                        ..RqVaeConfig::default()
                    },
                    ..BuildConfig::default()
                };
                let rec = Recorder::default();
                let (table, report) = build(&v, &cfg, &rec).unwrap();
                assert_eq!(table.len(), 60);
                // Keep leaves whatever the quantizer made.
                let want = collisions != CollisionMode::Keep || report.before.rate == 0.0;
                assert_eq!(report.bijection, want, "{quantizer:?} {collisions:?}");
                assert_eq!(
                    table.levels(),
                    3 + usize::from(collisions == CollisionMode::Ordinal)
                );
                assert_eq!(report.after.rate == 0.0, report.bijection);
                assert!(
                    rec.lines()
                        .iter()
                        .any(|l| l.starts_with("message collisions:")),
                    "{:?}",
                    rec.lines()
                );
                // Index round trip.
                let dir = tempfile::tempdir().unwrap();
                let p = dir.path().join("index.json");
                table.write_index(&p).unwrap();
                let back = SidTable::read_index(&p).unwrap();
                assert_eq!(back.items(), table.items());
                for i in 0..table.len() {
                    assert_eq!(back.codes(i), table.codes(i));
                }
            }
        }
    }

    #[test]
    fn bad_config_is_refused_before_work() {
        let cfg = BuildConfig {
            levels: 26,
            collisions: CollisionMode::Ordinal,
            ..BuildConfig::default()
        };
        assert!(format!("{:#}", cfg.validate().unwrap_err()).contains("ordinal adds one"));
        let cfg = BuildConfig {
            codebook: Some(1),
            ..BuildConfig::default()
        };
        assert!(cfg.validate().is_err());
    }
}
