//! Runtime benchmark of the llmrl side of `eval/bench/run_runtime_bench.sh`: greedy generation
//! throughput, or the time and peak memory of one full-sequence forward+backward, printed as one
//! JSON line on stdout for the driver script to tabulate next to PyTorch+transformers
//! (`eval/bench/bench_torch.py` measures the same things the same way).
//!
//! Modes:
//! - `generate`: `--batch` copies of one chat prompt, greedy, exactly `--new-tokens` new tokens
//!   (`min_new_tokens` = `max_new_tokens` masks EOS, as on the transformers side). One short
//!   warm-up generation, then `--iters` timed ones; tokens/s = batch × new tokens / median time
//!   (prefill included, as in `generate()` on the peer side).
//! - `train`: rows of token ids from `--ids` (one row per line, space-separated, T+1 ids each);
//!   mean next-token NLL over all T positions of every row, then `.backward()`. One warm-up step,
//!   then `--iters` timed ones; the median is reported.
//!
//! Memory: `peak_rss_mb` is the process's lifetime VmHWM; `phase_peak_rss_mb` is VmHWM after it is
//! reset (`/proc/self/clear_refs` ← 5) once the model is loaded, so model loading (which differs
//! a lot between the two stacks) does not hide the peak of the measured phase.
//!
//! What it deliberately doesn't do: no optimizer step, no sampling, no padding (every row is full
//! length), no GPU timing (the CUDA path isn't benchmarked here). It follows `llmrl generate`
//! (src/cli.rs) for generation and the `nll` helper of tests/integration/golden.rs for the loss.
//!
//! Usage: cargo run --release --example bench_runtime -- --model M.gguf --mode generate --batch 8

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use clap::{Parser, ValueEnum};
use llmrl::generate::{self, SamplingConfig};
use llmrl::model::{self, ops, Decoder, Message, Mode, ModelSource, Positions};

#[derive(Clone, Copy, Debug, ValueEnum)]
enum BenchMode {
    Generate,
    Train,
}

#[derive(Parser, Debug)]
struct Args {
    /// A `.gguf` file, a local HF directory, or a hub id.
    #[arg(long)]
    model: String,
    #[arg(long, value_enum)]
    mode: BenchMode,
    /// Generation batch (copies of the prompt).
    #[arg(long, default_value_t = 1)]
    batch: usize,
    #[arg(long, default_value_t = 128)]
    new_tokens: usize,
    /// User message of the chat prompt.
    #[arg(
        long,
        default_value = "Write a short story about a robot who learns to paint."
    )]
    prompt: String,
    /// Token-id rows for `train` (one row per line, space-separated).
    #[arg(long)]
    ids: Option<PathBuf>,
    /// Timed iterations after the warm-up.
    #[arg(long, default_value_t = 3)]
    iters: usize,
    /// `cpu` (f32) or `cuda:N` (bf16; needs a `--features cuda` build).
    #[arg(long, default_value = "cpu")]
    device: String,
}

/// A `VmXxx:  N kB` field of /proc/self/status in MiB (0 where unavailable, e.g. not Linux).
fn status_mb(field: &str) -> f64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|r| r.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> Result<()> {
    let a = Args::parse();
    anyhow::ensure!(a.iters >= 1, "--iters must be at least 1");
    let (device, dtype) = llmrl::model::device::parse_device(&a.device)?;
    let src = ModelSource::parse(&a.model)?;
    let t_load = Instant::now();
    let m = model::load(&src, &device, dtype)?;
    let load_s = t_load.elapsed().as_secs_f64();
    let rss_after_load_mb = status_mb("VmRSS:");
    let load_peak_rss_mb = status_mb("VmHWM:");
    // Reset the high-water mark so the phase peak excludes loading; harmless if refused.
    let _ = std::fs::write("/proc/self/clear_refs", "5");

    let mut out = match a.mode {
        BenchMode::Generate => bench_generate(&a, &m, &device)?,
        BenchMode::Train => bench_train(&a, &m, &device)?,
    };
    let extra = serde_json::json!({
        "side": "llmrl",
        "threads": rayon::current_num_threads(),
        "load_s": load_s,
        "rss_after_load_mb": rss_after_load_mb,
        "load_peak_rss_mb": load_peak_rss_mb,
        "phase_peak_rss_mb": status_mb("VmHWM:"),
        // The process's lifetime VmHWM, had it not been reset.
        "peak_rss_mb": load_peak_rss_mb.max(status_mb("VmHWM:")),
    });
    for (k, v) in extra.as_object().expect("json! object") {
        out[k] = v.clone();
    }
    println!("{out}");
    Ok(())
}

fn bench_generate(a: &Args, m: &model::LoadedModel, device: &Device) -> Result<serde_json::Value> {
    anyhow::ensure!(a.batch >= 1, "--batch must be at least 1");
    let text = m
        .tokenizer
        .apply_chat_template(&[Message::new("user", &a.prompt)], true)?;
    let ids = m.tokenizer.encode(&text, false)?;
    let prompts = vec![ids.clone(); a.batch];
    let seeds = vec![vec![0u64]; a.batch];
    let dec = Decoder::new(&m.config, &m.params, Mode::Infer)?;
    let cfg = |n: usize| SamplingConfig {
        temperature: 0.0,
        max_new_tokens: n,
        // EOS masked throughout, exactly as transformers' min_new_tokens on the peer side.
        min_new_tokens: n,
        ..SamplingConfig::default()
    };
    // Warm-up: thread pools, allocator, first-touch of the weights.
    generate::generate(
        &dec,
        &m.tokenizer,
        &prompts,
        &seeds,
        &cfg(a.new_tokens.min(8)),
        device,
    )?;
    let mut times = Vec::with_capacity(a.iters);
    let mut first_ids = Vec::new();
    for _ in 0..a.iters {
        let t0 = Instant::now();
        let outs = generate::generate(
            &dec,
            &m.tokenizer,
            &prompts,
            &seeds,
            &cfg(a.new_tokens),
            device,
        )?;
        times.push(t0.elapsed().as_secs_f64());
        if let Some(bad) = outs.iter().find(|o| o.token_ids.len() != a.new_tokens) {
            bail!(
                "a row produced {} tokens instead of {}",
                bad.token_ids.len(),
                a.new_tokens
            );
        }
        first_ids = outs[0].token_ids.clone();
    }
    let secs = median(times.clone());
    Ok(serde_json::json!({
        "mode": "generate",
        "batch": a.batch,
        "prompt_tokens": ids.len(),
        "new_tokens": a.new_tokens,
        "times_s": times,
        "median_s": secs,
        "tokens_per_s": (a.batch * a.new_tokens) as f64 / secs,
        "first_ids": first_ids.iter().take(16).collect::<Vec<_>>(),
    }))
}

fn read_rows(path: &PathBuf) -> Result<Vec<Vec<u32>>> {
    let text = std::fs::read_to_string(path).with_context(|| {
        format!(
            "reading {}; write it with bench_torch.py ids",
            path.display()
        )
    })?;
    let rows: Vec<Vec<u32>> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.split_whitespace().map(str::parse).collect())
        .collect::<Result<_, _>>()
        .with_context(|| format!("{}: expected space-separated token ids", path.display()))?;
    anyhow::ensure!(
        !rows.is_empty() && rows[0].len() >= 2 && rows.iter().all(|r| r.len() == rows[0].len()),
        "{}: need rows of equal length ≥ 2",
        path.display()
    );
    Ok(rows)
}

fn bench_train(a: &Args, m: &model::LoadedModel, device: &Device) -> Result<serde_json::Value> {
    let path = a.ids.as_ref().context("--mode train needs --ids FILE")?;
    let rows = read_rows(path)?;
    let (b, t) = (rows.len(), rows[0].len() - 1);
    let inputs: Vec<u32> = rows.iter().flat_map(|r| r[..t].iter().copied()).collect();
    let targets: Vec<u32> = rows.iter().flat_map(|r| r[1..].iter().copied()).collect();
    let x = Tensor::from_vec(inputs, (b, t), device)?; // (B, T)
    let tgt = Tensor::from_vec(targets, b * t, device)?; // (B*T,)
    let pos = Positions::right_padded(&vec![t; b], t, device)?;
    let dec = Decoder::new(&m.config, &m.params, Mode::Train)?;
    let num_vars = m.params.named_vars().len();

    // One step: (fwd seconds, bwd seconds, loss, parameters with a gradient).
    let step = || -> Result<(f64, f64, f32, usize)> {
        let t0 = Instant::now();
        let hidden = dec.forward_hidden(&x, &pos, None)?; // (B, T, H)
        let h = hidden.dim(2)?;
        let logits = dec.logits(&hidden.reshape((b * t, h))?)?; // (B*T, V)
        let loss = ops::logprob_stats(&logits, &tgt, 1.0)?
            .logp
            .mean_all()?
            .neg()?; // ()
        let loss_v = loss.to_scalar::<f32>()?;
        let fwd = t0.elapsed().as_secs_f64();
        let t1 = Instant::now();
        let grads = loss.backward()?;
        device.synchronize()?; // GPU kernels run asynchronously
        let bwd = t1.elapsed().as_secs_f64();
        let with_grad = m
            .params
            .named_vars()
            .iter()
            .filter(|(_, v)| grads.get(v.as_tensor()).is_some())
            .count();
        Ok((fwd, bwd, loss_v, with_grad))
    };
    step()?; // warm-up
    let (mut fwd, mut bwd, mut total) = (vec![], vec![], vec![]);
    let (mut loss, mut with_grad) = (0.0, 0);
    for _ in 0..a.iters {
        let (f, bw, l, g) = step()?;
        fwd.push(f);
        bwd.push(bw);
        total.push(f + bw);
        (loss, with_grad) = (l, g);
    }
    Ok(serde_json::json!({
        "mode": "train",
        "batch": b,
        "seq_len": t,
        "loss": loss,
        "params_with_grad": with_grad,
        "params_total": num_vars,
        "times_s": total,
        "median_s": median(total.clone()),
        "median_fwd_s": median(fwd),
        "median_bwd_s": median(bwd),
        "tokens_per_s": (b * t) as f64 / median(total),
    }))
}
