//! `llmrl rec ...`: recommendation baselines (popularity, SASRec) on interaction logs; item
//! embeddings from item text.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};
use clap::{Args, Subcommand};

use super::{console, parse_device, DeviceArgs};
use crate::rec::baselines::{self, BaselineModel, Evaluation, Popularity};
use crate::rec::embed::{self, minilm::EncoderFiles, CacheUse, EmbedOptions, ItemEmbeddings};
use crate::rec::items::Catalogue;
use crate::rec::metrics::HistoryRule;
use crate::rec::sasrec::{self, SasRecConfig, SasRecLoss};
use crate::rec::sequences::{self, ItemIds, Split, Splits};

#[derive(Subcommand, Debug)]
pub enum RecCommand {
    /// Train and evaluate classic rankers (popularity, SASRec) on one split; writes
    /// metrics.json, per-row metrics and the SASRec checkpoint.
    Baseline(BaselineArgs),
    /// Embed every item's text (title, year, genres, brand, categories, description) with a
    /// sentence encoder (all-MiniLM-L6-v2); writes a safetensors file with `embeddings`
    /// [n_items, dim] and the item ids in row order (`llmrl sid build --embeddings` reads it).
    Embed(EmbedArgs),
    /// Write a fresh from-scratch Llama decoder over a SID index's tokens (word-level
    /// tokenizer, seeded random init) as an HF directory.
    InitModel(super::rec_gen::InitModelArgs),
    /// Evaluate a generative recommender: constrained beam search (and HSRL's factorized
    /// scoring) over the full catalogue; HR/NDCG@K, per-row results, paired bootstrap.
    Eval(super::rec_gen::EvalArgs),
}

#[derive(Args, Debug)]
pub struct EmbedArgs {
    /// A RecBole `.item` file, or an item-metadata JSON `{"id": {"title", "description",
    /// "brand", "categories"}}`.
    #[arg(long)]
    pub items: PathBuf,
    /// A sentence-encoder directory (config.json, tokenizer.json, model.safetensors), e.g.
    /// models/all-MiniLM-L6-v2 from scripts/fetch_minilm.sh.
    #[arg(long)]
    pub model: PathBuf,
    /// Texts per forward pass (padded to the batch's longest; texts go longest first).
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
    /// Where embeddings are cached by content hash (default: embed_cache/ beside --out).
    #[arg(long)]
    pub cache_dir: Option<PathBuf>,
    /// Compute even if a cached result exists, and cache nothing.
    #[arg(long, conflicts_with = "cache_dir")]
    pub no_cache: bool,
    #[command(flatten)]
    pub device: DeviceArgs,
    /// Output safetensors file (an existing file is replaced only if `rec embed` wrote it).
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(Args, Debug)]
pub struct BaselineArgs {
    /// A RecBole `.inter` file (user_id, item_id, timestamp).
    #[arg(long, group = "input")]
    pub inter: Option<PathBuf>,
    /// A JSON of ordered item ids per user: {"user": [item, ...]} (no timestamps).
    #[arg(long, group = "input")]
    pub sequences: Option<PathBuf>,
    /// MiniOneRec CSV splits, train/valid/test (already split: --split is ignored).
    #[arg(long, num_args = 3, value_names = ["TRAIN", "VALID", "TEST"], group = "input")]
    pub csv: Option<Vec<PathBuf>>,
    /// Item table every logged item must be in: a RecBole `.item`, or a JSON object keyed by
    /// item id (item metadata or a SID index).
    #[arg(long)]
    pub items: Option<PathBuf>,
    /// Rankers to run (repeatable); differences are reported against the first.
    #[arg(long = "model", value_enum, default_values_t = [BaselineModel::Popularity, BaselineModel::Sasrec])]
    pub models: Vec<BaselineModel>,
    #[arg(long, value_enum, default_value = "loo")]
    pub split: Split,
    /// History length: the last N items before the target.
    #[arg(long, default_value_t = sequences::DEFAULT_MAX_HISTORY)]
    pub history: usize,
    /// May items already in the history be recommended? (the same rule for every ranker)
    #[arg(long, value_enum, default_value = "allow")]
    pub history_rule: HistoryRule,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Paired bootstrap resamples for the differences' 95 % intervals.
    #[arg(long, default_value_t = 10_000)]
    pub bootstrap: usize,
    /// SASRec loss: full softmax over the catalogue, or BCE with sampled negatives.
    #[arg(long, value_enum, default_value = "softmax")]
    pub loss: LossArg,
    /// Negatives per example for --loss bce.
    #[arg(long, default_value_t = 1)]
    pub negatives: usize,
    #[arg(long, default_value_t = SasRecConfig::default().hidden)]
    pub hidden: usize,
    #[arg(long, default_value_t = SasRecConfig::default().heads)]
    pub heads: usize,
    #[arg(long, default_value_t = SasRecConfig::default().dropout)]
    pub dropout: f64,
    #[arg(long, default_value_t = SasRecConfig::default().learning_rate)]
    pub learning_rate: f64,
    #[arg(long, default_value_t = SasRecConfig::default().batch_size)]
    pub batch_size: usize,
    #[arg(long, default_value_t = SasRecConfig::default().max_epochs)]
    pub max_epochs: usize,
    #[arg(long, default_value_t = SasRecConfig::default().patience)]
    pub patience: usize,
    /// Output directory (must be new or empty).
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum LossArg {
    Softmax,
    Bce,
}

pub fn run(c: RecCommand) -> Result<()> {
    match c {
        RecCommand::Baseline(a) => baseline(a),
        RecCommand::Embed(a) => embed_items(a),
        RecCommand::InitModel(a) => super::rec_gen::init_model(a),
        RecCommand::Eval(a) => super::rec_gen::eval(a),
    }
}

fn embed_items(a: EmbedArgs) -> Result<()> {
    ensure!(a.batch_size > 0, "--batch-size must be at least 1");
    if a.out.exists() && !embed::written_by_us(&a.out) {
        bail!(
            "{} exists and was not written by `llmrl rec embed`; choose another --out",
            a.out.display()
        );
    }
    let (device, _) = parse_device(&a.device.device)?;
    let catalogue = Catalogue::read(&a.items)?;
    let files = EncoderFiles::locate(&a.model)?;
    let texts = catalogue.texts();
    let empty = texts.iter().filter(|t| t.is_empty()).count();
    eprintln!(
        "{}: {} items{}; e.g. `{}`",
        a.items.display(),
        texts.len(),
        if catalogue.ignored.is_empty() {
            String::new()
        } else {
            format!(" (not in the text: {})", catalogue.ignored.join(", "))
        },
        texts[0]
    );
    if empty > 0 {
        eprintln!("warning: {empty} items have no text; they get the embedding of \"\"");
    }
    let cache_dir = match (&a.cache_dir, a.no_cache) {
        (_, true) => None,
        (Some(d), false) => Some(d.clone()),
        (None, false) => Some(a.out.parent().unwrap_or(Path::new("")).join("embed_cache")),
    };
    let opts = EmbedOptions {
        batch_size: a.batch_size,
        cache_dir,
        device,
    };
    let t0 = std::time::Instant::now();
    let report = console::reporter();
    let e = embed::embed_texts(&files, &texts, &opts, report.as_ref())?;
    let secs = t0.elapsed().as_secs_f64();
    let out = ItemEmbeddings {
        ids: catalogue.ids(),
        data: e.data,
        dim: e.dim,
        metadata: [
            ("producer", embed::PRODUCER.to_string()),
            ("encoder", a.model.display().to_string()),
            ("encoder_sha256", e.encoder_sha256),
            ("source", a.items.display().to_string()),
            ("max_seq_length", files.max_seq_length.to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect(),
    };
    embed::write_item_embeddings(&a.out, &out)?;
    let how = match &e.cache {
        CacheUse::Off => "computed, cache off".to_string(),
        CacheUse::Hit(p) => format!("from the cache {}", p.display()),
        CacheUse::Miss(p) => format!("computed, cached in {}", p.display()),
    };
    eprintln!(
        "{} items × {} in {secs:.2} s ({:.1} items/s; {how})",
        out.ids.len(),
        out.dim,
        out.ids.len() as f64 / secs.max(1e-9)
    );
    eprintln!("wrote {}", a.out.display());
    Ok(())
}

/// Raw ids of an item table: a RecBole `.item` file or the keys of a JSON object.
fn known_items(path: &Path) -> Result<HashSet<String>> {
    if path.extension().is_some_and(|e| e == "item") {
        return Ok(sequences::read_atomic_items(path)?
            .into_iter()
            .map(|i| i.id)
            .collect());
    }
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading item table {}", path.display()))?;
    let v: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&text).with_context(|| {
            format!(
                "{}: expected a JSON object keyed by item id (item metadata or SID index) \
                 or a RecBole .item file",
                path.display()
            )
        })?;
    Ok(v.into_iter().map(|(k, _)| k).collect())
}

/// The split examples and the item table, validated, before any training.
fn load(a: &BaselineArgs) -> Result<(Splits, ItemIds, String)> {
    let known = a.items.as_deref().map(known_items).transpose()?;
    let table = a.items.as_ref().map(|p| p.display().to_string());
    if let Some(files) = &a.csv {
        let mut items = ItemIds::default();
        let mut parts = Vec::new();
        for f in files {
            let rows = sequences::read_minionerec_csv(f)?;
            if let (Some(k), Some(t)) = (&known, &table) {
                sequences::validate_csv_items(f, &rows, k, t)?;
            }
            parts.push(sequences::csv_examples(&rows, &mut items, a.history));
        }
        let mut parts = parts.into_iter();
        let mut next = || parts.next().unwrap_or_default();
        let splits = Splits {
            train: next(),
            valid: next(),
            test: next(),
        };
        let src = files
            .iter()
            .map(|f| f.display().to_string())
            .collect::<Vec<_>>()
            .join(",");
        return Ok((splits, items, src));
    }
    let log = match (&a.inter, &a.sequences) {
        (Some(p), _) => sequences::read_atomic_inter(p)?,
        (None, Some(p)) => sequences::read_json_sequences(p)?,
        (None, None) => bail!(
            "give the data: --inter FILE.inter, --sequences FILE.json, or --csv TRAIN VALID TEST"
        ),
    };
    if let (Some(k), Some(t)) = (&known, &table) {
        log.validate_items(k, t)?;
    }
    let splits = log.split(a.split, a.history)?;
    Ok((splits, log.items.clone(), log.file.display().to_string()))
}

fn baseline(a: BaselineArgs) -> Result<()> {
    ensure!(!a.models.is_empty(), "give at least one --model");
    if a.out.exists() && std::fs::read_dir(&a.out)?.next().is_some() {
        bail!(
            "{} exists and is not empty; choose another --out",
            a.out.display()
        );
    }
    let cfg = SasRecConfig {
        hidden: a.hidden,
        heads: a.heads,
        dropout: a.dropout,
        max_len: a.history,
        loss: match a.loss {
            LossArg::Bce => SasRecLoss::Bce {
                negatives: a.negatives,
            },
            LossArg::Softmax => SasRecLoss::Softmax,
        },
        learning_rate: a.learning_rate,
        batch_size: a.batch_size,
        max_epochs: a.max_epochs,
        patience: a.patience,
        seed: a.seed,
        ..SasRecConfig::default()
    };
    cfg.validate()?;
    let (splits, items, source) = load(&a)?;
    ensure!(!splits.test.is_empty(), "{source}: the test split is empty");
    let test_users: HashSet<&str> = splits.test.iter().map(|e| e.user.as_str()).collect();
    eprintln!(
        "{source}: {} items; train {} / valid {} / test {} examples ({} test users)",
        items.len(),
        splits.train.len(),
        splits.valid.len(),
        splits.test.len(),
        test_users.len()
    );
    std::fs::create_dir_all(&a.out)?;
    let mut results: Vec<(BaselineModel, Evaluation, serde_json::Value)> = Vec::new();
    for &m in &a.models {
        let t0 = std::time::Instant::now();
        let (eval, extra) = match m {
            BaselineModel::Popularity => {
                let pop = Popularity::fit(&splits.train, items.len());
                (
                    baselines::evaluate(&pop, &splits.test, a.history_rule, 256)?,
                    serde_json::json!({}),
                )
            }
            BaselineModel::Sasrec => {
                let ckpt = a.out.join("sasrec.safetensors");
                let mut show = |e: &sasrec::EpochLog| {
                    eprintln!(
                        "sasrec epoch {:>3}: loss {:.4}  valid NDCG@10 {:.4}  {:.1} s{}",
                        e.epoch,
                        e.train_loss,
                        e.valid_ndcg10,
                        e.seconds,
                        if e.best { "  (best)" } else { "" }
                    )
                };
                let fit = sasrec::Fit {
                    n_items: items.len(),
                    train: &splits.train,
                    valid: &splits.valid,
                    rule: a.history_rule,
                };
                let (model, logs) =
                    sasrec::train(&cfg, &fit, &ckpt, &candle_core::Device::Cpu, &mut show)?;
                let best = logs.iter().rev().find(|l| l.best).map_or(0, |l| l.epoch);
                let per_epoch =
                    logs.iter().map(|l| l.seconds).sum::<f64>() / logs.len().max(1) as f64;
                let extra = serde_json::json!({
                    "config": cfg, "best_epoch": best, "seconds_per_epoch": per_epoch,
                    "checkpoint": ckpt.display().to_string(), "epochs": logs,
                });
                (
                    baselines::evaluate(&model, &splits.test, a.history_rule, 256)?,
                    extra,
                )
            }
        };
        let secs = t0.elapsed().as_secs_f64();
        let mut rows = String::new();
        for (ex, r) in splits.test.iter().zip(&eval.rows) {
            let line = serde_json::json!({"user": ex.user, "target": items.id(ex.target), "hr": r.hr, "ndcg": r.ndcg});
            rows.push_str(&format!("{line}\n"));
        }
        std::fs::write(a.out.join(format!("{}.rows.jsonl", m.name())), rows)?;
        let mut v = serde_json::json!({"test": eval.summary, "seconds": secs});
        if let (Some(o), serde_json::Value::Object(e)) = (v.as_object_mut(), extra) {
            o.extend(e);
        }
        eprintln!(
            "{}: HR@5 {:.4}  HR@10 {:.4}  NDCG@5 {:.4}  NDCG@10 {:.4}",
            m.name(),
            eval.summary.hr(5),
            eval.summary.hr(10),
            eval.summary.ndcg(5),
            eval.summary.ndcg(10)
        );
        results.push((m, eval, v));
    }
    let mut diffs = serde_json::Map::new();
    if let Some((base, base_eval, _)) = results.first() {
        for (m, e, _) in &results[1..] {
            let d = baselines::paired_differences(e, base_eval, a.bootstrap, a.seed)?;
            let d: serde_json::Map<String, serde_json::Value> = d
                .into_iter()
                .map(|(k, i)| (k, serde_json::json!(i)))
                .collect();
            diffs.insert(format!("{} - {}", m.name(), base.name()), d.into());
        }
    }
    let summary = serde_json::json!({
        "source": source,
        "split": a.split,
        "history": a.history,
        "history_rule": a.history_rule,
        "tie_rule": "expected",
        "items": items.len(),
        "examples": {"train": splits.train.len(), "valid": splits.valid.len(), "test": splits.test.len()},
        "test_users": test_users.len(),
        "seed": a.seed,
        "bootstrap_resamples": a.bootstrap,
        "models": results.iter().map(|(m, _, v)| (m.name().to_string(), v.clone())).collect::<serde_json::Map<_, _>>(),
        "differences_95ci": diffs,
        "git_commit": crate::run_dir::git_commit(),
    });
    std::fs::write(
        a.out.join("metrics.json"),
        serde_json::to_string_pretty(&summary)? + "\n",
    )?;
    eprintln!("wrote {}", a.out.join("metrics.json").display());
    Ok(())
}
