//! The command line: one `match` over subcommands; nothing below this module parses arguments
//! or prints for a person.

use anyhow::{Context, Result};
use candle_core::{DType, Device};
use clap::{Args, Parser, Subcommand};

use crate::generate::{self, SamplingConfig};
use crate::model::{self, Decoder, Message, Mode, ModelSource};

#[derive(Parser, Debug)]
#[command(name = "llmrl", version, about = "RL from verifiable rewards for Hugging Face LLMs (ROVER, i-MENTOR, GRPO)")]
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

pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Generate(a) => cmd_generate(a),
        Command::Inspect(a) => cmd_inspect(a),
    }
}

/// `cpu` or `cuda:N`, and the dtype that goes with it (f32 on CPU, bf16 on CUDA).
pub fn parse_device(s: &str) -> Result<(Device, DType)> {
    if s == "cpu" {
        return Ok((Device::Cpu, DType::F32));
    }
    if let Some(n) = s.strip_prefix("cuda") {
        let ordinal: usize = n.trim_start_matches(':').parse().unwrap_or(0);
        let dev = Device::new_cuda(ordinal).with_context(|| {
            format!("opening {s}; this binary needs `--features cuda` and an NVIDIA GPU with a driver")
        })?;
        return Ok((dev, DType::BF16));
    }
    anyhow::bail!("unknown device `{s}`; use `cpu` or `cuda:N`")
}

fn cmd_generate(a: GenerateArgs) -> Result<()> {
    let cfg = SamplingConfig {
        temperature: a.temperature,
        top_k: a.top_k,
        top_p: a.top_p,
        max_new_tokens: a.max_new_tokens,
        stop: a.stop.clone(),
    };
    cfg.validate()?;
    anyhow::ensure!(a.n >= 1, "--n must be at least 1");
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
    anyhow::ensure!(!ids.is_empty(), "the prompt tokenized to nothing; give some text");
    let decoder = Decoder::new(&m.config, &m.params, Mode::Infer)?;
    let seeds = vec![(0..a.n as u64).map(|s| generate::sample_seed(a.seed, 0, s)).collect()];
    let t0 = std::time::Instant::now();
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
                println!("--- sample {} ({:?}) ---", o.sample_index, o.finish_reason);
            }
            println!("{}", o.text);
        }
    }
    let toks: usize = outs.iter().map(|o| o.token_ids.len()).sum();
    eprintln!("[{toks} tokens in {secs:.2} s, {:.1} tok/s]", toks as f64 / secs);
    Ok(())
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
