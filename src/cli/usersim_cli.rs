//! `llmrl usersim ...`: the LLM user simulator (arXiv 2412.16984). `build` runs the keyword
//! pass over every item; `feedback` answers (user, history, candidates) requests with every
//! voter's vote; `eval` measures the voters and the ensemble on held-out ratings.

use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};
use clap::{Args, Subcommand};

use super::{console, parse_device, DeviceArgs};
use crate::generate::SamplingConfig;
use crate::model::{self, ModelSource};
use crate::rec::embed::{self, minilm::EncoderFiles, EmbedOptions};
use crate::rec::items::Catalogue;
use crate::rec::usersim::env::{run_episodes, EnvConfig, EpisodeStats};
use crate::rec::usersim::fidelity;
use crate::rec::usersim::llm::LlmGenerator;
use crate::rec::usersim::profile::{self, BuildConfig};
use crate::rec::usersim::prompt::PromptTemplate;
use crate::rec::usersim::ratings::{self, Scale};
use crate::rec::usersim::sim::{self, FitReport, Simulator};
use crate::rec::usersim::stat::MfConfig;
use crate::rec::usersim::table::{
    self, ProfileTable, CACHE_FILE, CONS_FILE, PROS_FILE, TABLE_FILE,
};
use rand::Rng;
use serde::Deserialize;

#[derive(Subcommand, Debug)]
pub enum UsersimCommand {
    /// The keyword pass: one LLM call per item (objective keywords, pros, cons), batched,
    /// cached in OUT/llm_cache.jsonl and resumable; writes OUT/keywords.jsonl and the MiniLM
    /// embeddings of each item's pros and cons (OUT/pros.safetensors, OUT/cons.safetensors).
    Build(BuildArgs),
    /// Simulated feedback for (user, history, candidates) requests, JSONL in and out.
    Feedback(FeedbackArgs),
    /// Fidelity on held-out ratings: AUC, accuracy, F1 of each voter and the ensemble.
    Eval(EvalArgs),
}

#[derive(Args, Debug)]
pub struct BuildArgs {
    /// A RecBole `.item` file or an item-metadata JSON (as `rec embed` reads).
    #[arg(long)]
    pub items: PathBuf,
    /// The LLM (a .gguf file, an HF directory, or a hub id).
    #[arg(
        long,
        default_value = "models/SmolLM2-135M-Instruct/SmolLM2-135M-Instruct.Q4_1.gguf"
    )]
    pub model: String,
    /// The sentence encoder for the pros/cons embeddings (scripts/fetch_minilm.sh).
    #[arg(long, default_value = "models/all-MiniLM-L6-v2")]
    pub encoder: PathBuf,
    /// The prompt file (sections `### system|user|assistant`; see src/rec/usersim/prompt.rs).
    #[arg(long, default_value = "prompts/usersim_item.txt")]
    pub prompt: PathBuf,
    /// Prompts per generation batch (and per cache flush).
    #[arg(long, default_value_t = 16)]
    pub batch_size: usize,
    #[arg(long, default_value_t = 48)]
    pub max_new_tokens: usize,
    /// 0 = greedy (the default: answers do not depend on the seed).
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f64,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Only the first N items (a trial run; the cache keeps them for the full one).
    #[arg(long)]
    pub limit: Option<usize>,
    /// Generate nothing: write the table from the answers cached so far (items without one
    /// get empty lists and the reason), e.g. while a pass is still running.
    #[arg(long)]
    pub from_cache: bool,
    #[command(flatten)]
    pub device: DeviceArgs,
    /// Output directory (created; a previous build there is resumed from its cache).
    #[arg(long)]
    pub out: PathBuf,
}

pub fn run(c: UsersimCommand) -> Result<()> {
    match c {
        UsersimCommand::Build(a) => build(a),
        UsersimCommand::Feedback(a) => feedback(a),
        UsersimCommand::Eval(a) => eval(a),
    }
}

/// Refuses an output directory holding files a build would replace that no build wrote.
fn check_out_dir(out: &Path) -> Result<()> {
    for name in [PROS_FILE, CONS_FILE] {
        let p = out.join(name);
        ensure!(
            !p.exists()
                || embed::read_item_embeddings(&p).is_ok_and(|e| e
                    .metadata
                    .get("producer")
                    .map(String::as_str)
                    == Some(table::PRODUCER)),
            "{} exists and was not written by `llmrl usersim build`; hint: choose another --out",
            p.display()
        );
    }
    let t = out.join(TABLE_FILE);
    if t.exists() {
        profile::read_table(&t).with_context(|| {
            format!(
                "{} exists and is not a keyword table; hint: choose another --out",
                t.display()
            )
        })?;
    }
    Ok(())
}

fn build(a: BuildArgs) -> Result<()> {
    let text = std::fs::read_to_string(&a.prompt).with_context(|| {
        format!(
            "reading the prompt {}; hint: run from the repository root or pass --prompt",
            a.prompt.display()
        )
    })?;
    let template =
        PromptTemplate::parse(&text).with_context(|| format!("prompt {}", a.prompt.display()))?;
    let catalogue = Catalogue::read(&a.items)?;
    let mut items = catalogue.items;
    if let Some(n) = a.limit {
        items.truncate(n);
    }
    ensure!(!items.is_empty(), "{} holds no items", a.items.display());
    let files = EncoderFiles::locate(&a.encoder)?;
    check_out_dir(&a.out)?;
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let cfg = SamplingConfig {
        temperature: a.temperature,
        max_new_tokens: a.max_new_tokens,
        ..SamplingConfig::default()
    };
    cfg.validate()?;
    let (device, dtype) = parse_device(&a.device.device)?;
    let report = console::reporter();
    let t0 = std::time::Instant::now();
    let (profiles, generated) = if a.from_cache {
        let cache = a.out.join(CACHE_FILE);
        ensure!(cache.is_file(), "--from-cache: no {} yet", cache.display());
        (
            profile::profiles_from_cache(&items, &template, &cache, report.as_ref())?,
            0,
        )
    } else {
        let src = ModelSource::parse(&a.model)?;
        let m = model::load(&src, &device, dtype)?;
        let mut gen = LlmGenerator::new(m, &a.model, cfg, a.seed, &device)?;
        profile::build_profiles(
            &items,
            &template,
            &mut gen,
            &a.out.join(CACHE_FILE),
            &BuildConfig {
                batch_size: a.batch_size,
            },
            report.as_ref(),
        )?
    };
    let llm_secs = t0.elapsed().as_secs_f64();
    profile::write_table(&a.out.join(TABLE_FILE), &profiles)?;
    let malformed: Vec<&profile::ItemProfile> =
        profiles.iter().filter(|p| p.reason.is_some()).collect();
    let opts = EmbedOptions {
        batch_size: 64,
        cache_dir: Some(a.out.join("embed_cache")),
        device,
    };
    let (pros, cons) = table::embed_profiles(&files, &profiles, &opts, report.as_ref())?;
    embed::write_item_embeddings(&a.out.join(PROS_FILE), &pros)?;
    embed::write_item_embeddings(&a.out.join(CONS_FILE), &cons)?;
    let summary = serde_json::json!({
        "items": profiles.len(),
        "generated_now": generated,
        "from_cache": profiles.len() - generated,
        "from_cache_only": a.from_cache,
        "not_answered_yet": profiles.iter().filter(|p| p.reason.as_deref().is_some_and(|r| r.starts_with("not answered"))).count(),
        "with_a_reason": malformed.len(),
        "empty_pros": profiles.iter().filter(|p| p.pros.is_empty()).count(),
        "empty_cons": profiles.iter().filter(|p| p.cons.is_empty()).count(),
        "model": a.model,
        "prompt": a.prompt,
        "max_new_tokens": a.max_new_tokens,
        "temperature": a.temperature,
        "llm_seconds": llm_secs,
    });
    std::fs::write(
        a.out.join("build.json"),
        serde_json::to_string_pretty(&summary)?,
    )?;
    eprintln!(
        "{} items ({generated} generated now, {:.1} s); {} with a reason (e.g. {}); wrote {}",
        profiles.len(),
        llm_secs,
        malformed.len(),
        malformed
            .first()
            .map(|p| format!("{}: {}", p.item, p.reason.as_deref().unwrap_or("")))
            .unwrap_or_else(|| "none".into()),
        a.out.display()
    );
    Ok(())
}

/// What fitting the simulator reads: the build directory, the ratings, the scale and S.
#[derive(Args, Debug)]
pub struct SimArgs {
    /// A `usersim build` output directory (keywords.jsonl, pros/cons.safetensors).
    #[arg(long)]
    pub profiles: PathBuf,
    /// A RecBole `.inter` file with `rating` (and `timestamp`) columns.
    #[arg(long)]
    pub inter: PathBuf,
    #[arg(long, default_value_t = 1.0)]
    pub rating_min: f64,
    #[arg(long, default_value_t = 5.0)]
    pub rating_max: f64,
    /// A rating at or above this is a like.
    #[arg(long, default_value_t = 4.0)]
    pub like_at: f64,
    /// Share of each user's latest (non-test) ratings used to early-stop S and calibrate.
    #[arg(long, default_value_t = 0.1)]
    pub valid_frac: f64,
    /// S's factor width.
    #[arg(long, default_value_t = 32)]
    pub dim: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

impl SimArgs {
    fn scale(&self) -> Scale {
        Scale {
            min: self.rating_min,
            max: self.rating_max,
            like_at: self.like_at,
        }
    }

    fn mf(&self) -> MfConfig {
        MfConfig {
            dim: self.dim,
            seed: self.seed,
            ..MfConfig::default()
        }
    }
}

#[derive(Args, Debug)]
pub struct FeedbackArgs {
    #[command(flatten)]
    pub sim: SimArgs,
    /// JSONL requests: `{"user": ID, "candidates": [ITEM, ...], "history": [{"item": ID,
    /// "rating": R} | {"item": ID, "liked": B}, ...]}`; without `history`, the user's logged
    /// ratings (all of --inter, time order) are the history.
    #[arg(long)]
    pub requests: PathBuf,
    /// Output JSONL, one record per (request, candidate) with every vote and reason (default:
    /// stdout). An existing file is not overwritten.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct EvalArgs {
    #[command(flatten)]
    pub sim: SimArgs,
    /// Share of each user's latest ratings held out for the measurement.
    #[arg(long, default_value_t = 0.2)]
    pub test_frac: f64,
    /// Fixed-length (11-step) episodes run for the first N test users under a random and a
    /// popularity policy (0: none).
    #[arg(long, default_value_t = 100)]
    pub episodes: usize,
    /// Output directory (summary.json, summary.md, feedback_sample.jsonl).
    #[arg(long)]
    pub out: PathBuf,
}

/// One request line.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Request {
    user: serde_json::Value,
    candidates: Vec<serde_json::Value>,
    #[serde(default)]
    history: Option<Vec<HistoryEntry>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HistoryEntry {
    item: serde_json::Value,
    #[serde(default)]
    rating: Option<f64>,
    #[serde(default)]
    liked: Option<bool>,
}

fn id_of(v: &serde_json::Value, what: &str) -> Result<String> {
    match v {
        serde_json::Value::String(s) => Ok(s.clone()),
        serde_json::Value::Number(n) => Ok(n.to_string()),
        other => bail!("{what} should be an id (string or number), got {other}"),
    }
}

/// Requests as (user, optional history, candidates), every rating checked against the scale.
type Parsed = (String, Option<Vec<(String, bool)>>, Vec<String>);

fn read_requests(path: &Path, scale: &Scale) -> Result<Vec<Parsed>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading requests {}", path.display()))?;
    let mut out = Vec::new();
    for (k, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let at = || format!("{} line {}", path.display(), k + 1);
        let r: Request = serde_json::from_str(line).with_context(|| {
            format!(
                "{}: expected {{\"user\", \"candidates\", \"history\"?}}",
                at()
            )
        })?;
        let user = id_of(&r.user, "`user`").with_context(at)?;
        ensure!(!r.candidates.is_empty(), "{}: no candidates", at());
        let cands = r
            .candidates
            .iter()
            .map(|c| id_of(c, "a candidate"))
            .collect::<Result<Vec<_>>>()
            .with_context(at)?;
        let hist = match r.history {
            None => None,
            Some(h) => Some(
                h.iter()
                    .map(|e| -> Result<(String, bool)> {
                        let item = id_of(&e.item, "a history item")?;
                        let liked = match (e.rating, e.liked) {
                            (Some(r), _) => {
                                scale.check(r)?;
                                scale.liked(r)
                            }
                            (None, Some(l)) => l,
                            (None, None) => {
                                bail!("history item {item} has neither `rating` nor `liked`")
                            }
                        };
                        Ok((item, liked))
                    })
                    .collect::<Result<Vec<_>>>()
                    .with_context(at)?,
            ),
        };
        out.push((user, hist, cands));
    }
    ensure!(!out.is_empty(), "{} holds no requests", path.display());
    Ok(out)
}

/// Reads the table and ratings and fits S and the calibrations on `split`.
fn fit(a: &SimArgs, split: &ratings::RatingSplit) -> Result<(Simulator, FitReport)> {
    let table = ProfileTable::read(&a.profiles)?;
    let report = console::reporter();
    Simulator::fit(table, split, &a.scale(), &a.mf(), report.as_ref())
}

fn feedback(a: FeedbackArgs) -> Result<()> {
    if let Some(o) = &a.out {
        ensure!(
            !o.exists(),
            "{} exists; hint: choose another --out",
            o.display()
        );
    }
    let scale = a.sim.scale();
    let rated = ratings::read_ratings(&a.sim.inter, &scale)?;
    let requests = read_requests(&a.requests, &scale)?;
    let split = ratings::split(&rated, a.sim.valid_frac, 0.0)?;
    let (sim, _) = fit(&a.sim, &split)?;
    let logged = sim::histories(
        &ratings::by_user(&rated)
            .values()
            .flatten()
            .collect::<Vec<_>>(),
        &scale,
    );
    let mut lines = String::new();
    let none = Vec::new();
    for (k, (user, hist, cands)) in requests.iter().enumerate() {
        let h = hist
            .as_ref()
            .unwrap_or_else(|| logged.get(user).unwrap_or(&none));
        for c in cands {
            let fb = sim.feedback(user, h, c);
            let mut v = serde_json::to_value(&fb)?;
            v["request"] = serde_json::json!(k + 1);
            v["history_len"] = serde_json::json!(h.len());
            lines += &format!("{v}\n");
        }
    }
    match &a.out {
        Some(o) => {
            std::fs::write(o, lines).with_context(|| format!("writing {}", o.display()))?;
            eprintln!("wrote {}", o.display());
        }
        None => print!("{lines}"),
    }
    Ok(())
}

fn eval(a: EvalArgs) -> Result<()> {
    let scale = a.sim.scale();
    let rated = ratings::read_ratings(&a.sim.inter, &scale)?;
    let split = ratings::split(&rated, a.sim.valid_frac, a.test_frac)?;
    ensure!(
        !split.test.is_empty(),
        "no held-out ratings: raise --test-frac"
    );
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let t0 = std::time::Instant::now();
    let (sim, fit_report) = fit(&a.sim, &split)?;
    // The held-out ratings are answered with everything before them as the history.
    let before: Vec<&ratings::Rating> = split.train.iter().chain(&split.valid).collect();
    let hist = sim::histories(&before, &scale);
    let fb = sim.answer_all(&split.test, &hist);
    let truth: Vec<bool> = split.test.iter().map(|r| scale.liked(r.rating)).collect();
    let figs = fidelity::measure(&fb, &truth);
    let episodes = episodes(&sim, &split, &hist, a.episodes, scale.like_at, a.sim.seed)?;
    let decided: std::collections::BTreeMap<String, usize> =
        fb.iter().fold(Default::default(), |mut m, f| {
            *m.entry(f.decided_by.clone()).or_default() += 1;
            m
        });
    let summary = serde_json::json!({
        "figures": figs,
        "rows": {"train": split.train.len(), "valid": split.valid.len(), "test": split.test.len()},
        "test_liked_rate": truth.iter().filter(|&&y| y).count() as f64 / truth.len() as f64,
        "users": hist.len(),
        "history_cases": sim::edge_counts(&hist),
        "decided_by": decided,
        "episodes": episodes,
        "fit": fit_report,
        "scale": scale,
        "valid_frac": a.sim.valid_frac,
        "test_frac": a.test_frac,
        "mf": a.sim.mf(),
        "profiles": a.sim.profiles,
        "inter": a.sim.inter,
        "seconds": t0.elapsed().as_secs_f64(),
    });
    std::fs::write(
        a.out.join("summary.json"),
        serde_json::to_string_pretty(&summary)?,
    )?;
    let md = fidelity::markdown(&figs);
    std::fs::write(a.out.join("summary.md"), &md)?;
    let sample: String = fb
        .iter()
        .zip(&split.test)
        .take(200)
        .map(|(f, r)| {
            let mut v = serde_json::to_value(f).unwrap_or_default();
            v["rating"] = serde_json::json!(r.rating);
            format!("{v}\n")
        })
        .collect();
    std::fs::write(a.out.join("feedback_sample.jsonl"), sample)?;
    eprint!("{md}");
    eprintln!("wrote {}", a.out.display());
    Ok(())
}

/// Fixed-length episodes of the first `n` users under a random and a popularity policy (the
/// items most often liked in train, skipping what the episode's history holds).
fn episodes(
    sim: &Simulator,
    split: &ratings::RatingSplit,
    hist: &std::collections::HashMap<String, Vec<(String, bool)>>,
    n: usize,
    like_at: f64,
    seed: u64,
) -> Result<Vec<EpisodeStats>> {
    let mut users: Vec<&String> = hist.keys().collect();
    users.sort();
    let starts: Vec<(String, Vec<(String, bool)>)> = users
        .into_iter()
        .take(n)
        .map(|u| (u.clone(), hist[u].clone()))
        .collect();
    let cfg = EnvConfig {
        eval_steps: Some(11),
        ..EnvConfig::default()
    };
    let ids: Vec<String> = sim.table.profiles.iter().map(|p| p.item.clone()).collect();
    let mut likes: std::collections::HashMap<&str, usize> = Default::default();
    for r in split.train.iter().filter(|r| r.rating >= like_at) {
        *likes.entry(r.item.as_str()).or_default() += 1;
    }
    let mut popular = ids.clone();
    popular.sort_by_key(|i| std::cmp::Reverse(likes.get(i.as_str()).copied().unwrap_or(0)));
    let random = run_episodes(sim, &starts, cfg, seed, "random", &mut |_, rng| {
        ids[rng.random_range(0..ids.len())].clone()
    })?;
    let pop = run_episodes(sim, &starts, cfg, seed, "popular", &mut |ep, _| {
        let seen: std::collections::HashSet<&str> =
            ep.history.iter().map(|(i, _)| i.as_str()).collect();
        popular
            .iter()
            .find(|i| !seen.contains(i.as_str()))
            .unwrap_or(&popular[0])
            .clone()
    })?;
    Ok(vec![random, pop])
}
