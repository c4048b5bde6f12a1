//! `llmrl sid ...`: Semantic-ID tables from item vectors.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};

use crate::rec::sid::build::{build, BuildConfig, QuantizerKind};
use crate::rec::sid::collisions::CollisionMode;
use crate::rec::sid::rq_vae::RqVaeConfig;
use crate::rec::sid::vectors::{VectorSource, Vectors};

#[derive(Subcommand, Debug)]
pub enum SidCommand {
    /// Quantize item vectors into Semantic IDs; writes DIR/index.json (MiniOneRec's format),
    /// DIR/report.json and DIR/tokens.json (the level tokens, for `model.add_tokens.file`).
    Build(BuildArgs),
}

#[derive(Args, Debug)]
pub struct BuildArgs {
    /// Item vectors: .npy (2-D f32/f64), .safetensors (tensor `embeddings`, ids in the
    /// metadata key `item_ids`, as `llmrl rec embed` writes) or .jsonl ({"item_id", "embedding"}).
    #[arg(long)]
    pub embeddings: PathBuf,
    /// Item ids, one per line in row order (.npy, or safetensors without `item_ids`; default:
    /// the row numbers).
    #[arg(long)]
    pub ids: Option<PathBuf>,
    /// The safetensors tensor to read.
    #[arg(long)]
    pub tensor: Option<String>,
    #[arg(long, value_enum, default_value = "rq-kmeans-balanced")]
    pub quantizer: QuantizerKind,
    #[arg(long, default_value_t = 3)]
    pub levels: usize,
    /// Codes per level (default: the smallest K with K^levels ≥ 2 × items, a multiple of 4,
    /// at most 256; 16 for 1682 items).
    #[arg(long)]
    pub codebook: Option<usize>,
    /// What to do with items that share a SID: append an in-group ordinal level (always
    /// unique), move them to the nearest free last-level codes (reassign) or LC-Rec's Sinkhorn
    /// rounds first (sinkhorn), or keep them as item sets.
    #[arg(long, value_enum, default_value = "ordinal")]
    pub collisions: CollisionMode,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// RQ-KMeans: Lloyd iterations per level at most.
    #[arg(long, default_value_t = 100)]
    pub kmeans_iters: usize,
    /// RQ-VAE: training epochs.
    #[arg(long, default_value_t = RqVaeConfig::default().epochs)]
    pub epochs: usize,
    /// RQ-VAE: encoder hidden widths, comma-separated (the decoder mirrors them).
    #[arg(long, value_delimiter = ',', default_values_t = RqVaeConfig::default().hidden)]
    pub hidden: Vec<usize>,
    /// RQ-VAE: latent width.
    #[arg(long, default_value_t = RqVaeConfig::default().latent)]
    pub latent: usize,
    /// RQ-VAE: batch size.
    #[arg(long, default_value_t = RqVaeConfig::default().batch_size)]
    pub batch_size: usize,
    /// RQ-VAE: AdamW learning rate.
    #[arg(long, default_value_t = RqVaeConfig::default().learning_rate)]
    pub learning_rate: f64,
    /// Output directory (new or empty).
    #[arg(long)]
    pub out: PathBuf,
    /// Write into a non-empty --out, replacing its index.json, report.json and tokens.json
    /// (other files are left alone).
    #[arg(long)]
    pub force: bool,
}

pub fn run(c: SidCommand) -> Result<()> {
    match c {
        SidCommand::Build(a) => cmd_build(a),
    }
}

const OUTPUTS: [&str; 3] = ["index.json", "report.json", "tokens.json"];

fn cmd_build(a: BuildArgs) -> Result<()> {
    let cfg = BuildConfig {
        quantizer: a.quantizer,
        levels: a.levels,
        codebook: a.codebook,
        collisions: a.collisions,
        seed: a.seed,
        kmeans_iters: a.kmeans_iters,
        rq_vae: RqVaeConfig {
            epochs: a.epochs,
            hidden: a.hidden.clone(),
            latent: a.latent,
            batch_size: a.batch_size,
            learning_rate: a.learning_rate,
            ..RqVaeConfig::default()
        },
    };
    cfg.validate()?;
    check_out(&a.out, a.force)?;
    let v = Vectors::read(&VectorSource {
        path: a.embeddings.clone(),
        tensor: a.tensor.clone(),
        ids: a.ids.clone(),
    })?;
    eprintln!("{}: {} items × {}", a.embeddings.display(), v.len(), v.dim);
    let rep = super::console::reporter();
    let (table, mut report) = build(&v, &cfg, rep.as_ref())?;
    report.config["embeddings"] = a.embeddings.display().to_string().into();
    report.config["git_commit"] = serde_json::to_value(crate::run_dir::git_commit())?;
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    table.write_index(&a.out.join("index.json"))?;
    write_atomic(
        &a.out.join("report.json"),
        &(serde_json::to_string_pretty(&report)? + "\n"),
    )?;
    write_atomic(
        &a.out.join("tokens.json"),
        &(serde_json::to_string(&table.all_tokens())? + "\n"),
    )?;
    eprintln!("wrote {} ({})", a.out.display(), OUTPUTS.join(", "));
    Ok(())
}

/// --out must be new or empty, unless --force (then only our files are replaced).
fn check_out(out: &Path, force: bool) -> Result<()> {
    if out.exists() {
        if !out.is_dir() {
            bail!("--out {} is a file; hint: give a directory", out.display());
        }
        let non_empty = std::fs::read_dir(out)
            .with_context(|| format!("reading {}", out.display()))?
            .next()
            .is_some();
        if non_empty && !force {
            bail!(
                "--out {} exists and is not empty; hint: choose another directory, or add --force \
                 to replace its {} (other files are kept)",
                out.display(),
                OUTPUTS.join(", ")
            );
        }
    }
    Ok(())
}

fn write_atomic(path: &Path, text: &str) -> Result<()> {
    let tmp = path.with_extension("partial");
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
}
