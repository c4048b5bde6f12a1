//! `llmrl rec init-model` and `llmrl rec eval`: the generative recommender's model and its
//! full-catalogue evaluation (logic in `rec::scratch`, `rec::generative`, `rec::metrics`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};
use candle_core::{DType, Device};
use clap::Args;

use crate::data::PromptTemplate;
use crate::model::{self, Decoder, Mode, ModelSource};
use crate::prompting::Prompter;
use crate::rec::baselines::{evaluate_rankings, paired_differences, Evaluation};
use crate::rec::dataset::{HistoryAs, Part, RecDataConfig};
use crate::rec::generative::{self, Ranked};
use crate::rec::metrics::{HistoryRule, RowMetrics, Summary, KS};
use crate::rec::scratch::{self, ScratchConfig};
use crate::rec::sequences::{self, Split};
use crate::rec::sid::SidTable;
use crate::rec::trie::SidTrie;

#[derive(Args, Debug)]
pub struct InitModelArgs {
    /// The SID index (MiniOneRec format) whose tokens make the vocabulary.
    #[arg(long)]
    pub index: PathBuf,
    #[arg(long, default_value_t = ScratchConfig::default().layers)]
    pub layers: usize,
    #[arg(long, default_value_t = ScratchConfig::default().hidden)]
    pub hidden: usize,
    #[arg(long, default_value_t = ScratchConfig::default().heads)]
    pub heads: usize,
    /// Key/value heads (default: = heads).
    #[arg(long)]
    pub kv_heads: Option<usize>,
    /// MLP width (default 4 × hidden).
    #[arg(long, default_value_t = 0)]
    pub intermediate: usize,
    #[arg(long, default_value_t = ScratchConfig::default().max_position_embeddings)]
    pub max_positions: usize,
    #[arg(long, default_value_t = ScratchConfig::default().initializer_range)]
    pub initializer_range: f64,
    #[arg(long)]
    pub tie_embeddings: bool,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Output HF directory (must be new or empty).
    #[arg(long)]
    pub out: PathBuf,
}

pub fn init_model(a: InitModelArgs) -> Result<()> {
    let table = SidTable::read_index(&a.index)?;
    let cfg = ScratchConfig {
        layers: a.layers,
        hidden: a.hidden,
        heads: a.heads,
        kv_heads: a.kv_heads.unwrap_or(a.heads),
        intermediate: a.intermediate,
        max_position_embeddings: a.max_positions,
        rope_theta: ScratchConfig::default().rope_theta,
        initializer_range: a.initializer_range,
        tie_word_embeddings: a.tie_embeddings,
        seed: a.seed,
    };
    scratch::write_model(&table, &cfg, &a.out)?;
    let m = model::load(&ModelSource::Dir(a.out.clone()), &Device::Cpu, DType::F32)?;
    eprintln!(
        "wrote {}: {} parameters, vocabulary {} ({} SID tokens over {} levels, {} items)",
        a.out.display(),
        m.params.num_elements(),
        m.config.vocab_size,
        table.all_tokens().len(),
        table.levels(),
        table.len()
    );
    Ok(())
}

#[derive(Args, Debug)]
pub struct EvalArgs {
    /// The policy: an HF directory (a run's `checkpoints/step_N/model`) or a .gguf.
    #[arg(long)]
    pub model: String,
    #[arg(long)]
    pub index: PathBuf,
    /// A RecBole `.inter` file.
    #[arg(long, group = "input")]
    pub inter: Option<PathBuf>,
    /// A JSON of ordered item ids per user.
    #[arg(long, group = "input")]
    pub sequences: Option<PathBuf>,
    /// One MiniOneRec CSV split (the part to evaluate; --split/--part are ignored).
    #[arg(long, group = "input")]
    pub csv: Option<PathBuf>,
    /// Item titles (RecBole .item or item-metadata JSON), for title prompts.
    #[arg(long)]
    pub items: Option<PathBuf>,
    #[arg(long, value_enum, default_value = "loo")]
    pub split: Split,
    #[arg(long, value_enum, default_value = "test")]
    pub part: Part,
    #[arg(long, default_value_t = sequences::DEFAULT_MAX_HISTORY)]
    pub history: usize,
    #[arg(long, value_enum, default_value = "sid")]
    pub history_as: HistoryAs,
    /// Prompt template: a built-in name (`rec_sid`, `minionerec_sid`) or a .txt path. Must be
    /// the one the model was trained with.
    #[arg(long, default_value = "rec_sid")]
    pub template: String,
    /// Wrap the prompt in the model's chat template.
    #[arg(long)]
    pub chat: bool,
    /// Beams of the main ranking (MiniOneRec evaluates with 50).
    #[arg(long, default_value_t = 50)]
    pub beams: usize,
    /// Further beam widths to report (repeatable; MiniOneRec's RL groups use 16).
    #[arg(long = "also-beams")]
    pub also_beams: Vec<usize>,
    /// Skip HSRL's factorized scoring.
    #[arg(long)]
    pub no_factorized: bool,
    /// Prompts per beam-search batch.
    #[arg(long, default_value_t = 16)]
    pub batch: usize,
    /// Evaluate only the first N users (0 = all).
    #[arg(long, default_value_t = 0)]
    pub max_users: usize,
    #[arg(long, value_enum, default_value = "allow")]
    pub history_rule: HistoryRule,
    /// Per-row results of another ranker on the same rows (`rec baseline`'s NAME.rows.jsonl),
    /// as NAME=PATH, for paired-bootstrap differences (repeatable).
    #[arg(long)]
    pub against: Vec<String>,
    #[arg(long, default_value_t = 10_000)]
    pub bootstrap: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Output directory (must be new or empty).
    #[arg(long)]
    pub out: PathBuf,
}

/// Another ranker's rows: its name, each row's (user, target item), its per-row metrics.
type Rows = (String, Vec<(String, String)>, Evaluation);

/// Per-row metrics another command wrote (`{"user", "target", "hr": [..], "ndcg": [..]}`).
fn read_rows(spec: &str) -> Result<Rows> {
    let (name, path) = spec
        .split_once('=')
        .with_context(|| format!("--against `{spec}`: expected NAME=PATH"))?;
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading --against {path}"))?;
    let mut keys = Vec::new();
    let mut rows = Vec::new();
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let v: serde_json::Value = serde_json::from_str(line)
            .with_context(|| format!("{path} line {}: not JSON", i + 1))?;
        let arr = |k: &str| -> Result<[f64; 5]> {
            let xs: Vec<f64> = v[k]
                .as_array()
                .map(|a| a.iter().filter_map(|x| x.as_f64()).collect())
                .unwrap_or_default();
            xs.try_into().map_err(|_| {
                anyhow::anyhow!(
                    "{path} line {}: `{k}` is not a list of {} numbers",
                    i + 1,
                    KS.len()
                )
            })
        };
        rows.push(RowMetrics {
            hr: arr("hr")?,
            ndcg: arr("ndcg")?,
        });
        let s = |k: &str| v[k].as_str().map(str::to_string).unwrap_or_default();
        keys.push((s("user"), s("target")));
    }
    let summary = Summary::new(&rows);
    Ok((name.to_string(), keys, Evaluation { rows, summary }))
}

pub fn eval(a: EvalArgs) -> Result<()> {
    if a.out.exists() && std::fs::read_dir(&a.out)?.next().is_some() {
        bail!(
            "{} exists and is not empty; choose another --out",
            a.out.display()
        );
    }
    ensure!(a.beams >= 1, "--beams must be ≥ 1");
    // Everything a user can get wrong is checked before the model loads.
    let src = ModelSource::parse(&a.model)?;
    let table = SidTable::read_index(&a.index)?;
    let mut data = RecDataConfig::new(a.index.clone(), a.split, a.part, a.history);
    data.inter = a.inter.clone();
    data.sequences = a.sequences.clone();
    data.csv = a.csv.clone();
    data.items = a.items.clone();
    data.history_as = a.history_as;
    data.max_users = a.max_users;
    let examples = data.load_with(&table, Path::new("."))?;
    ensure!(
        !examples.is_empty(),
        "no {} examples to evaluate",
        a.part.name()
    );
    let template = PromptTemplate::load(&a.template, &crate::data::prompt::builtin_prompts_dir())?;
    template.validate(&examples[0])?;
    let against = a
        .against
        .iter()
        .map(|s| read_rows(s))
        .collect::<Result<Vec<_>>>()?;
    // Examples in the metrics' form: table indices.
    let idx = |id: &str| table.index_of(id).map(|i| i as u32).unwrap_or(u32::MAX);
    let rows: Vec<sequences::Example> = examples
        .iter()
        .map(|e| {
            let hist: Vec<u32> = e.fields["history_items"]
                .as_array()
                .map(|h| h.iter().filter_map(|x| x.as_str()).map(idx).collect())
                .unwrap_or_default();
            sequences::Example {
                user: e.text("user").unwrap_or_default(),
                history: hist,
                target: idx(&e.text("target_item").unwrap_or_default()),
                timestamp: 0.0,
            }
        })
        .collect();
    // Each baseline's rows for these examples, matched on (user, target): a subset of users
    // (--max-users) compares on the same rows.
    let against: Vec<(String, Evaluation)> = against
        .into_iter()
        .map(|(name, keys, ev)| {
            let at: HashMap<&(String, String), usize> =
                keys.iter().enumerate().map(|(i, k)| (k, i)).collect();
            let picked = examples
                .iter()
                .map(|e| {
                    let key = (
                        e.text("user").unwrap_or_default(),
                        e.text("target_item").unwrap_or_default(),
                    );
                    at.get(&key).map(|&i| ev.rows[i]).with_context(|| {
                        format!(
                            "--against {name}: no row for user `{}` with target `{}`; hint: run \
                             `rec baseline` on the same log, split, part and history",
                            key.0, key.1
                        )
                    })
                })
                .collect::<Result<Vec<RowMetrics>>>()?;
            let summary = Summary::new(&picked);
            Ok((
                name,
                Evaluation {
                    rows: picked,
                    summary,
                },
            ))
        })
        .collect::<Result<_>>()?;
    let (device, dtype) = crate::model::device::parse_device(&a.device)?;
    let m = model::load(&src, &device, dtype)?;
    let tok = &m.tokenizer;
    ensure!(
        !tok.eos_ids.is_empty(),
        "the model's tokenizer has no EOS token"
    );
    let trie = SidTrie::new(&table, tok, "", &tok.eos_ids)?;
    let level_ids = generative::level_token_ids(&table, tok)?;
    let dec = Decoder::new(&m.config, &m.params, Mode::Infer)?;
    let prompter = Prompter {
        template: &template,
        chat: a.chat,
        system: None,
    };
    let prompts = examples
        .iter()
        .map(|e| prompter.ids(tok, e))
        .collect::<Result<Vec<_>>>()?;
    let report = super::console::reporter();
    eprintln!(
        "{}: {} {} rows, {} items ({} distinct SIDs), prompt {} tokens on average",
        a.model,
        rows.len(),
        a.part.name(),
        table.len(),
        trie.len(),
        prompts.iter().map(Vec::len).sum::<usize>() / prompts.len()
    );

    let mut rankers: Vec<(String, Ranked)> = Vec::new();
    let mut widths = vec![a.beams];
    widths.extend(a.also_beams.iter().copied().filter(|&b| b != a.beams));
    for &b in &widths {
        let r = generative::beam_rankings(
            &dec,
            tok,
            &trie,
            table.levels(),
            &prompts,
            b,
            a.batch,
            &device,
            report.as_ref(),
        )?;
        rankers.push((format!("beam{b}"), r));
    }
    if !a.no_factorized {
        let depth = KS[KS.len() - 1] + a.history;
        let r = generative::factorized_rankings(
            &dec,
            &table,
            &level_ids,
            &trie,
            &prompts,
            depth,
            &device,
            report.as_ref(),
        )?;
        rankers.push(("factorized".into(), r));
    }

    std::fs::create_dir_all(&a.out)?;
    let mut models = serde_json::Map::new();
    let mut diffs = serde_json::Map::new();
    let mut invalid_total = 0;
    for (name, r) in &rankers {
        let ev = evaluate_rankings(&r.rankings, &rows, a.history_rule);
        invalid_total += r.invalid;
        let mut lines = String::new();
        for ((ex, row), ranking) in examples.iter().zip(&ev.rows).zip(&r.rankings) {
            let top: Vec<Vec<&str>> = ranking
                .iter()
                .take(KS[KS.len() - 1])
                .map(|e| {
                    e.iter()
                        .map(|&i| table.items()[i as usize].as_str())
                        .collect()
                })
                .collect();
            let line = serde_json::json!({"user": ex.text("user"), "target": ex.text("target_item"),
                "hr": row.hr, "ndcg": row.ndcg, "ranking": top});
            lines.push_str(&format!("{line}\n"));
        }
        std::fs::write(a.out.join(format!("{name}.rows.jsonl")), lines)?;
        eprintln!(
            "{name}: HR@5 {:.4}  HR@10 {:.4}  NDCG@5 {:.4}  NDCG@10 {:.4}  ({:.1} s, {:.1} items/s, {} invalid)",
            ev.summary.hr(5),
            ev.summary.hr(10),
            ev.summary.ndcg(5),
            ev.summary.ndcg(10),
            r.seconds,
            r.items_per_second(),
            r.invalid
        );
        models.insert(
            name.clone(),
            serde_json::json!({"test": ev.summary, "seconds": r.seconds,
                "prompts_per_second": r.prompts_per_second(),
                "ranked_entries_per_second": r.items_per_second(),
                "generated": r.generated, "invalid": r.invalid}),
        );
        for (other, oev) in &against {
            let d: serde_json::Map<String, serde_json::Value> =
                paired_differences(&ev, oev, a.bootstrap, a.seed)?
                    .into_iter()
                    .map(|(k, i)| (k, serde_json::json!(i)))
                    .collect();
            diffs.insert(format!("{name} - {other}"), d.into());
        }
    }
    let baselines: HashMap<&str, Summary> = against
        .iter()
        .map(|(n, e)| (n.as_str(), e.summary.clone()))
        .collect();
    let summary = serde_json::json!({
        "model": a.model,
        "index": a.index.display().to_string(),
        "source": a.inter.as_ref().or(a.sequences.as_ref()).or(a.csv.as_ref()).map(|p| p.display().to_string()),
        "split": a.split,
        "part": a.part,
        "history": a.history,
        "history_as": a.history_as,
        "template": a.template,
        "history_rule": a.history_rule,
        "tie_rule": "expected",
        "rows": rows.len(),
        "items": table.len(),
        "distinct_sids": trie.len(),
        "models": models,
        "against": baselines,
        "bootstrap_resamples": a.bootstrap,
        "seed": a.seed,
        "differences_95ci": diffs,
        "git_commit": crate::run_dir::git_commit(),
    });
    std::fs::write(
        a.out.join("metrics.json"),
        serde_json::to_string_pretty(&summary)? + "\n",
    )?;
    eprintln!("wrote {}", a.out.join("metrics.json").display());
    ensure!(
        invalid_total == 0,
        "{invalid_total} generated sequences were not catalogue items (the trie should make this \
         impossible): a bug; the results above are still written"
    );
    Ok(())
}
