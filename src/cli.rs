//! The command line: one `match` over subcommands; nothing below this module parses arguments
//! or prints for a person.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device};
use clap::{Args, Parser, Subcommand};

use crate::generate::{self, SamplingConfig};
pub use crate::model::device::parse_device;
use crate::model::{self, Decoder, Message, Mode, ModelSource};
use crate::prompting::Prompter;
use crate::recipe;

#[derive(Parser, Debug)]
#[command(
    name = "llmrl",
    version,
    about = "RL from verifiable rewards for Hugging Face LLMs (ROVER, i-MENTOR, GRPO)"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Generate completions for a prompt.
    Generate(GenerateArgs),
    /// Describe a model: family, parameter count, vocabulary, dtype, chat template.
    Inspect(InspectArgs),
    /// Fine-tune with RL from verifiable rewards (or SFT) as a recipe says.
    Train(TrainArgs),
    /// pass@k, maj@n and diversity of a model or a run's checkpoint on a recipe's eval data.
    Eval(EvalArgs),
    /// Score given completions with a verifier (check a verifier on your data before training).
    Score(ScoreArgs),
    /// Line up the results of several `llmrl eval` runs in one table (before/after).
    Compare(compare::CompareArgs),
    /// Draw the metrics curves of one or several runs side by side (PNG/SVG + summary.md).
    Report(ReportArgs),
    /// Write a run's model for other tools: a LoRA adapter (PEFT files) or, with --merge, the
    /// full model as an HF directory.
    Export(export_cli::ExportArgs),
    /// Recommendation: sequential data, classic baselines.
    #[command(subcommand)]
    Rec(RecCommand),
    /// Semantic IDs: quantize item vectors into short code sequences (`sid build`).
    #[command(subcommand)]
    Sid(SidCommand),
    /// TrackRec: a recommendation CoT generator and its Yes/No validator trained in alternation.
    Trackrec(trackrec_cli::TrackRecArgs),
    /// LLM user simulator: keyword pass, simulated feedback, fidelity (`usersim build`).
    #[command(subcommand)]
    Usersim(UsersimCommand),
}

#[derive(Args, Debug)]
pub struct ReportArgs {
    /// Run directories: training runs (each with metrics.jsonl) or TrackRec runs (V's metrics
    /// by round, with the no-CoT V as a dashed level), not mixed.
    #[arg(required = true)]
    pub runs: Vec<PathBuf>,
    /// Output directory for the images and summary.md.
    #[arg(long, default_value = "report")]
    pub out: PathBuf,
    /// Metrics to plot (repeatable; default: all that exist).
    #[arg(long = "metric")]
    pub metrics: Vec<String>,
    #[arg(long, value_enum, default_value = "both")]
    pub format: crate::report::ImageFormat,
    /// Moving-average window in steps (1 = none).
    #[arg(long, default_value_t = 1)]
    pub smooth: usize,
    /// Smooth curves with a debiased EMA of this weight in [0, 1), as TensorBoard's slider
    /// (0.6 is its default); raw points stay drawn faint underneath.
    #[arg(long, value_name = "W")]
    pub ema: Option<f64>,
}

#[derive(Args, Debug)]
pub struct TrainArgs {
    /// The recipe (TOML). Not needed with --resume.
    pub recipe: Option<PathBuf>,
    /// Override any recipe key: --set train.max_steps=20 (repeatable; later wins).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Run directory (default: runs/<name>, numbered if taken; never overwritten).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Continue the run in this directory from its newest intact checkpoint (--set overrides
    /// are applied from there on and recorded in run.json).
    #[arg(long, value_name = "RUN_DIR", conflicts_with = "recipe")]
    pub resume: Option<PathBuf>,
    /// Where to train: `cpu` or `cuda:N` (needs a build with `--features cuda`); overrides the
    /// recipe's [model] device, recorded as the override model.device=D.
    #[arg(long, value_name = "D")]
    pub device: Option<String>,
}

#[derive(Args, Debug)]
pub struct EvalArgs {
    /// A model source (dir, .gguf, hub id) or a run directory (its latest checkpoint).
    #[arg(long)]
    pub model: String,
    /// Recipe giving the dataset (`eval_data`, else `data`), prompt and verifier.
    #[arg(long)]
    pub recipe: PathBuf,
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Samples per problem (default: the recipe's eval.num_samples).
    #[arg(long)]
    pub n: Option<usize>,
    /// Evaluate at most this many problems.
    #[arg(long)]
    pub max_problems: Option<usize>,
    #[arg(long)]
    pub temperature: Option<f64>,
    #[arg(long)]
    pub max_new_tokens: Option<usize>,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Problems per generation batch.
    #[arg(long, default_value_t = 4)]
    pub batch: usize,
    /// Output directory for summary.json and problems.jsonl.
    #[arg(long)]
    pub out: PathBuf,
    #[command(flatten)]
    pub device: DeviceArgs,
}

#[derive(Args, Debug)]
pub struct ScoreArgs {
    /// Take the judge from this recipe's [judge] table, else its [verifier]...
    #[arg(long, conflicts_with_all = ["verifier", "judge"])]
    pub recipe: Option<PathBuf>,
    /// ...or name a built-in verifier with its defaults (countdown, math)...
    #[arg(long, conflicts_with = "judge")]
    pub verifier: Option<String>,
    /// ...or give a judge config (TOML: `name = "label"`, `model = ...`, or a [judge] table).
    #[arg(long)]
    pub judge: Option<PathBuf>,
    /// JSONL: each line the example's fields plus the completion.
    #[arg(long)]
    pub input: PathBuf,
    /// Where to write the scored JSONL (default: INPUT with .scored.jsonl).
    #[arg(long = "out", visible_alias = "output")]
    pub output: Option<PathBuf>,
    #[arg(long, default_value = "completion")]
    pub completion_field: String,
    /// Where a judge model runs.
    #[command(flatten)]
    pub device: DeviceArgs,
}

#[derive(Args, Debug)]
pub struct DeviceArgs {
    /// `cpu` (default) or `cuda:N` (needs a build with `--features cuda`).
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

#[derive(Args, Debug)]
pub struct GenerateArgs {
    /// A local HF directory, a `.gguf` file, or a hub id (`org/name`).
    #[arg(long)]
    pub model: String,
    /// The prompt text (with --chat: the user message).
    #[arg(long)]
    pub prompt: String,
    /// Wrap the prompt in the model's chat template (with the assistant turn opened).
    #[arg(long)]
    pub chat: bool,
    /// System message (implies --chat).
    #[arg(long)]
    pub system: Option<String>,
    #[arg(long, default_value_t = 128)]
    pub max_new_tokens: usize,
    /// 0 = greedy.
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f64,
    #[arg(long, default_value_t = 1.0)]
    pub top_p: f64,
    /// 0 = off.
    #[arg(long, default_value_t = 0)]
    pub top_k: usize,
    /// Number of samples.
    #[arg(long, default_value_t = 1)]
    pub n: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Stop strings (repeatable).
    #[arg(long)]
    pub stop: Vec<String>,
    /// One JSON object per sample: text, token_ids, logprobs, finish_reason.
    #[arg(long)]
    pub json: bool,
    /// Beam search with B beams instead of sampling: prints the B best sequences with their
    /// scores, best first (HF's semantics; --n, --temperature, --top-p/k and --stop do not apply).
    #[arg(long, value_name = "B")]
    pub num_beams: Option<usize>,
    /// Beam search scores are sum_logprob / len^length_penalty (> 0 favours longer sequences).
    #[arg(long, default_value_t = 1.0)]
    pub length_penalty: f64,
    #[command(flatten)]
    pub device: DeviceArgs,
}

#[derive(Args, Debug)]
pub struct InspectArgs {
    #[arg(long)]
    pub model: String,
    #[arg(long)]
    pub json: bool,
}

pub use rec_cli::RecCommand;
pub use sid_cli::SidCommand;
pub use usersim_cli::UsersimCommand;

pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Generate(a) => cmd_generate(a),
        Command::Inspect(a) => cmd_inspect(a),
        Command::Train(a) => train_cli::run(a),
        Command::Eval(a) => cmd_eval(a),
        Command::Score(a) => cmd_score(a),
        Command::Compare(a) => compare::run(a),
        Command::Rec(c) => rec_cli::run(c),
        Command::Export(a) => export_cli::run(a),
        Command::Sid(c) => sid_cli::run(c),
        Command::Trackrec(a) => trackrec_cli::run(a),
        Command::Usersim(c) => usersim_cli::run(c),
        Command::Report(a) => {
            let files = crate::report::report(
                &a.runs,
                &crate::report::ReportOptions {
                    metrics: a.metrics,
                    out_dir: a.out.clone(),
                    format: a.format,
                    smoothing: crate::report::Smoothing::from_options(a.smooth, a.ema)?,
                },
            )?;
            eprintln!("wrote {} files to {}", files.len(), a.out.display());
            Ok(())
        }
    }
}

fn cmd_generate(a: GenerateArgs) -> Result<()> {
    let cfg = SamplingConfig {
        temperature: a.temperature,
        top_k: a.top_k,
        top_p: a.top_p,
        max_new_tokens: a.max_new_tokens,
        min_new_tokens: 0,
        stop: a.stop.clone(),
    };
    cfg.validate()?;
    anyhow::ensure!(a.n >= 1, "--n must be at least 1");
    let beam = a
        .num_beams
        .map(|b| -> Result<generate::beam::BeamConfig> {
            anyhow::ensure!(
                a.n == 1 && a.temperature == 0.0 && a.stop.is_empty(),
                "--num-beams is deterministic beam search: drop --n, --temperature and --stop"
            );
            let c = generate::beam::BeamConfig {
                num_beams: b,
                max_new_tokens: a.max_new_tokens,
                length_penalty: a.length_penalty,
                ..Default::default()
            };
            c.validate().context("--num-beams / --length-penalty")?;
            Ok(c)
        })
        .transpose()?;
    let src = ModelSource::parse(&a.model)?;
    let (device, dtype) = parse_device(&a.device.device)?;
    let m = model::load(&src, &device, dtype)?;
    let text = if a.chat || a.system.is_some() {
        let mut msgs = Vec::new();
        if let Some(s) = &a.system {
            msgs.push(Message::new("system", s));
        }
        msgs.push(Message::new("user", &a.prompt));
        m.tokenizer.apply_chat_template(&msgs, true)?
    } else {
        a.prompt.clone()
    };
    let ids = m.tokenizer.encode(&text, !(a.chat || a.system.is_some()))?;
    anyhow::ensure!(
        !ids.is_empty(),
        "the prompt tokenized to nothing; give some text"
    );
    let decoder = Decoder::new(&m.config, &m.params, Mode::Infer)?;
    let seeds = vec![(0..a.n as u64)
        .map(|s| generate::sample_seed(a.seed, 0, s))
        .collect()];
    let t0 = std::time::Instant::now();
    if let Some(bc) = beam {
        let out = generate::beam::beam_search(&decoder, &m.tokenizer, &[ids], &bc, None, &device)?;
        let secs = t0.elapsed().as_secs_f64();
        for (j, b) in out[0].beams.iter().enumerate() {
            if a.json {
                println!(
                    "{}",
                    serde_json::json!({"text": b.text, "token_ids": b.token_ids, "score": b.score,
                        "sum_logprob": b.sum_logprob, "logprobs": b.logprobs,
                        "finish_reason": b.finish_reason, "beam_index": j})
                );
            } else {
                println!(
                    "--- beam {j} (score {:.4}, {}) ---",
                    b.score,
                    finish_name(b.finish_reason)
                );
                println!("{}", b.text);
            }
        }
        eprintln!("[{} beams in {secs:.2} s]", out[0].beams.len());
        return Ok(());
    }
    let outs = generate::generate(&decoder, &m.tokenizer, &[ids], &seeds, &cfg, &device)?;
    let secs = t0.elapsed().as_secs_f64();
    for o in &outs {
        if a.json {
            println!(
                "{}",
                serde_json::json!({"text": o.text, "token_ids": o.token_ids, "logprobs": o.logprobs,
                    "finish_reason": o.finish_reason, "sample_index": o.sample_index, "seed": o.seed})
            );
        } else {
            if a.n > 1 {
                println!(
                    "--- sample {} ({}) ---",
                    o.sample_index,
                    finish_name(o.finish_reason)
                );
            }
            println!("{}", o.text);
        }
    }
    let toks: usize = outs.iter().map(|o| o.token_ids.len()).sum();
    // One sample has no header line: its finish reason goes here.
    let finish = match outs.as_slice() {
        [o] if !a.json => format!("finish: {}; ", finish_name(o.finish_reason)),
        _ => String::new(),
    };
    eprintln!(
        "[{finish}{toks} tokens in {secs:.2} s, {:.1} tok/s]",
        toks as f64 / secs
    );
    Ok(())
}

/// A finish reason as `--json` writes it (`eos`, `stop`, `length`, `no_allowed_token`).
fn finish_name(f: generate::Finish) -> String {
    serde_json::to_value(f)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| format!("{f:?}"))
}

fn cmd_inspect(a: InspectArgs) -> Result<()> {
    let src = ModelSource::parse(&a.model)?;
    let m = model::load(&src, &Device::Cpu, DType::F32)?;
    let c = &m.config;
    let info = serde_json::json!({
        "source": src.to_string(),
        "family": c.family.model_type(),
        "parameters": m.params.num_elements(),
        "layers": c.num_hidden_layers,
        "hidden_size": c.hidden_size,
        "heads": c.num_attention_heads,
        "kv_heads": c.num_key_value_heads,
        "head_dim": c.head_dim,
        "vocab_size": c.vocab_size,
        "tokenizer_vocab": m.tokenizer.vocab_size(),
        "tied_embeddings": c.tie_word_embeddings,
        "rope_theta": c.rope_theta,
        "stored_dtype": m.stored_dtype,
        "eos_token_ids": m.tokenizer.eos_ids,
        "chat_template": m.tokenizer.chat_template.is_some(),
    });
    if a.json {
        println!("{info}");
    } else {
        for (k, v) in info.as_object().expect("json! object") {
            println!("{k:>16}: {v}");
        }
    }
    Ok(())
}

fn cmd_eval(a: EvalArgs) -> Result<()> {
    let recipe = recipe::load_recipe(&a.recipe, &a.set)?;
    let plan = recipe.resolve(&a.recipe)?;
    let r = &plan.recipe;
    let examples = plan.eval_problems(a.max_problems.unwrap_or(r.eval.max_problems));
    let n = a.n.unwrap_or(r.eval.num_samples);
    anyhow::ensure!(n >= 1, "--n must be at least 1");
    let sampling = plan.eval_sampling(
        a.temperature.unwrap_or(r.eval.temperature),
        a.max_new_tokens.or(r.eval.max_new_tokens),
    );
    sampling.validate()?;
    if a.out.exists() && std::fs::read_dir(&a.out)?.next().is_some() {
        bail!(
            "{} exists and is not empty; choose another --out",
            a.out.display()
        );
    }
    let verifier = crate::reward::build(&r.verifier)?;
    let (device, dtype) = parse_device(&a.device.device)?;
    let m = export_cli::load_model_or_run(&a.model, &device, dtype)?;
    let dec = Decoder::new(&m.config, &m.params, Mode::Infer)?;
    let prompter = Prompter {
        template: &plan.prompt,
        chat: r.prompt.chat,
        system: r.prompt.system.as_deref(),
    };
    let t0 = std::time::Instant::now();
    let out = crate::eval::run::evaluate(
        &dec,
        &m.tokenizer,
        &examples,
        &prompter,
        verifier.as_ref(),
        &sampling,
        n,
        a.seed,
        a.batch,
        &device,
        console::reporter().as_ref(),
    )?;
    std::fs::create_dir_all(&a.out)?;
    let mut summary = serde_json::to_value(&out.summary)?;
    summary["model"] = a.model.clone().into();
    summary["recipe"] = a.recipe.display().to_string().into();
    summary["n"] = n.into();
    summary["temperature"] = sampling.temperature.into();
    summary["max_new_tokens"] = sampling.max_new_tokens.into();
    summary["seconds"] = t0.elapsed().as_secs_f64().into();
    std::fs::write(
        a.out.join("summary.json"),
        serde_json::to_string_pretty(&summary)? + "\n",
    )?;
    let mut lines = String::new();
    for (p, res) in out.problems.iter().zip(&out.results) {
        let mut v = serde_json::to_value(p)?;
        v["samples"] = res
            .completions
            .iter()
            .zip(&res.scores)
            .map(|(c, s)| serde_json::json!({"completion": c, "score": s.value, "correct": s.correct, "answer": s.answer}))
            .collect();
        lines.push_str(&v.to_string());
        lines.push('\n');
    }
    std::fs::write(a.out.join("problems.jsonl"), lines)?;
    println!("{}", serde_json::to_string_pretty(&out.summary)?);
    Ok(())
}

fn cmd_score(a: ScoreArgs) -> Result<()> {
    use crate::reward::JudgeConfig;
    let parent = |p: &Path| match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let (mut cfg, base_dir): (JudgeConfig, PathBuf) = match (&a.recipe, &a.verifier, &a.judge) {
        (Some(r), _, _) => match judge_table(r)? {
            Some(j) => (j, parent(r)),
            None => (recipe::load_recipe(r, &[])?.verifier.into(), parent(r)),
        },
        (None, Some(name), _) => (
            toml::from_str(&format!("name = {name:?}"))
                .with_context(|| format!("verifier `{name}`"))?,
            PathBuf::from("."),
        ),
        (None, None, Some(j)) => {
            let cfg = match judge_table(j)? {
                Some(cfg) => cfg,
                None => toml::from_str(&read_text(j)?)
                    .with_context(|| format!("{}: not a judge config", j.display()))?,
            };
            (cfg, parent(j))
        }
        (None, None, None) => {
            bail!("give --judge JUDGE.toml, --recipe R or --verifier NAME (countdown, math)")
        }
    };
    cfg.resolve_paths(&base_dir);
    anyhow::ensure!(
        a.input.is_file(),
        "input {} not found; hint: a JSONL file, one object per line",
        a.input.display()
    );
    let output = a
        .output
        .clone()
        .unwrap_or_else(|| a.input.with_extension("scored.jsonl"));
    if output.exists() {
        bail!(
            "{} exists; refusing to overwrite it (pass another --out)",
            output.display()
        );
    }
    let (device, dtype) = if cfg.needs_model() {
        parse_device(&a.device.device)?
    } else {
        (Device::Cpu, DType::F32)
    };
    let judge = crate::reward::build_judge(&cfg, &device, dtype)?;
    let summary =
        crate::reward::score_file(judge.as_ref(), &a.input, &output, &a.completion_field)?;
    println!("{}", serde_json::to_string_pretty(&summary)?);
    eprintln!("scores written to {}", output.display());
    Ok(())
}

fn read_text(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

/// The `[judge]` table of a TOML file, if it has one.
fn judge_table(path: &Path) -> Result<Option<crate::reward::JudgeConfig>> {
    let doc: toml::Table = toml::from_str(&read_text(path)?)
        .with_context(|| format!("{}: not TOML", path.display()))?;
    doc.get("judge")
        .map(|t| {
            t.clone()
                .try_into()
                .with_context(|| format!("{}: [judge]", path.display()))
        })
        .transpose()
}

// `llmrl train ...`: new runs and resumes, and what their run directories record.
mod train_cli;
// `llmrl compare ...`: eval summaries side by side.
mod compare;
// `llmrl rec ...` lives in cli/rec_cli.rs.
mod export_cli;
mod rec_cli;
mod rec_gen;
// `llmrl sid ...` lives in cli/sid_cli.rs.
mod sid_cli;
mod trackrec_cli;
// `llmrl usersim ...` lives in cli/usersim_cli.rs.
mod usersim_cli;
// The reporter the CLI gives everything below it: bars on a terminal, plain lines otherwise.
pub mod console;
