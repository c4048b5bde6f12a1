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
//!   With `--profile`, the decoder also records the wall time of its phases (the layers'
//!   projections, attention and KV-cache appends within decode steps, the prefill, the LM head),
//!   reported per decode step in `profile` next to what is spent outside the model (sampling,
//!   logits to host, positions, dropping rows) and a separate timing of the sampling alone;
//!   without it the decoder reads no clock.
//! - `bandwidth`: the machine's limits. Memory bandwidth by a plain parallel copy (and a
//!   read-only sum) of 256 MiB buffers, best of 5, and the batch-1 decode limit it implies for
//!   streaming the model's f32 weights once per token; the f32 GEMM rate of candle's matmul on
//!   1024³ (best of 5) and the large-batch decode limit it implies at 2 FLOPs per weight per token.
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
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use clap::{Parser, ValueEnum};
use llmrl::generate::{self, sampling, SamplingConfig};
use llmrl::model::decoder::{Phase, PhaseTimes};
use llmrl::model::{self, ops, Decoder, Message, Mode, ModelSource, Positions};
use rand::SeedableRng;
use rayon::prelude::*;

#[derive(Clone, Copy, Debug, ValueEnum)]
enum BenchMode {
    Generate,
    Train,
    Bandwidth,
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
    /// `generate`: record per-phase times of the decoder (see the module docs).
    #[arg(long)]
    profile: bool,
    /// `cpu` (f32) or `cuda:N` (bf16; needs a `--features cuda` build).
    #[arg(long, default_value = "cpu")]
    device: String,
    /// `train`: recompute each layer's activations in the backward (`train.gradient_checkpointing`).
    #[arg(long)]
    gradient_checkpointing: bool,
    /// `train`: attach a LoRA adapter of this rank on every projection (alpha = 2r); only the
    /// adapter then tracks gradients.
    #[arg(long)]
    lora_r: Option<usize>,
    /// `generate` with `--lora-r`: run the adapter unmerged (default: merged, as rollouts do).
    #[arg(long)]
    unmerged: bool,
    /// `generate`: weight-only int8 projections and head (`rollout_precision = "int8"`).
    #[arg(long)]
    int8: bool,
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
    llmrl::model::device::keep_freed_host_memory();
    let a = Args::parse();
    anyhow::ensure!(a.iters >= 1, "--iters must be at least 1");
    let (device, dtype) = llmrl::model::device::parse_device(&a.device)?;
    let src = ModelSource::parse(&a.model)?;
    let t_load = Instant::now();
    let mut m = model::load(&src, &device, dtype)?;
    if let Some(r) = a.lora_r {
        let cfg = llmrl::model::lora::LoraConfig {
            r,
            alpha: 2.0 * r as f64,
            target_modules: llmrl::model::lora::TARGETS.map(String::from).to_vec(),
            ..Default::default()
        };
        llmrl::model::lora::attach(&mut m, &cfg, 0, None)?;
    }
    let load_s = t_load.elapsed().as_secs_f64();
    let rss_after_load_mb = status_mb("VmRSS:");
    let load_peak_rss_mb = status_mb("VmHWM:");
    // Reset the high-water mark so the phase peak excludes loading; harmless if refused.
    let _ = std::fs::write("/proc/self/clear_refs", "5");

    let mut out = match a.mode {
        BenchMode::Generate => bench_generate(&a, &m, &device)?,
        BenchMode::Train => bench_train(&a, &m, &device)?,
        BenchMode::Bandwidth => bench_bandwidth(&m)?,
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
    let times = Arc::new(PhaseTimes::default());
    let opts = llmrl::model::decoder::BuildOptions {
        adapters: if a.unmerged {
            llmrl::model::decoder::AdapterUse::Unmerged
        } else {
            llmrl::model::decoder::AdapterUse::Auto
        },
        int8_weights: a.int8,
        ..Default::default()
    };
    let mut dec = Decoder::build(&m.config, &m.params, Mode::Infer, &opts)?;
    if a.profile {
        dec = dec.with_profile(times.clone());
    }
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
    times.reset();
    let mut secs_each = Vec::with_capacity(a.iters);
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
        secs_each.push(t0.elapsed().as_secs_f64());
        if let Some(bad) = outs.iter().find(|o| o.token_ids.len() != a.new_tokens) {
            bail!(
                "a row produced {} tokens instead of {}",
                bad.token_ids.len(),
                a.new_tokens
            );
        }
        first_ids = outs[0].token_ids.clone();
    }
    let secs = median(secs_each.clone());
    let profile = if a.profile {
        let total: f64 = secs_each.iter().sum();
        // Snapshot first: the sampling timing's own forward must not count.
        let mut p = profile_json(&times, total);
        p["per_step_ms"]["sampling_alone"] = sampling_ms(&dec, &ids, a.batch, device)?.into();
        p
    } else {
        serde_json::Value::Null
    };
    Ok(serde_json::json!({
        "mode": "generate",
        "int8": a.int8,
        "batch": a.batch,
        "prompt_tokens": ids.len(),
        "new_tokens": a.new_tokens,
        "times_s": secs_each,
        "median_s": secs,
        "tokens_per_s": (a.batch * a.new_tokens) as f64 / secs,
        "first_ids": first_ids.iter().take(16).collect::<Vec<_>>(),
        "profile": profile,
    }))
}

/// Per decode step milliseconds of each phase over all timed iterations (`total_s` of them).
fn profile_json(t: &PhaseTimes, total_s: f64) -> serde_json::Value {
    let steps = t.decode_steps().max(1) as f64;
    let ms = |s: f64| s * 1e3 / steps;
    let fwd = t.seconds(Phase::DecodeForward);
    let (mm, att, cache) = (
        t.seconds(Phase::Matmul),
        t.seconds(Phase::Attention),
        t.seconds(Phase::Cache),
    );
    let model = fwd + t.seconds(Phase::Prefill) + t.seconds(Phase::LmHead);
    serde_json::json!({
        "decode_steps": t.decode_steps(),
        "per_step_ms": {
            "layers_matmul": ms(mm),
            "attention": ms(att),
            "cache_append": ms(cache),
            "layers_other": ms(fwd - mm - att - cache),
            "lm_head": ms(t.seconds(Phase::LmHead)),
            "outside_model": ms(total_s - model),
        },
        "prefill_s_total": t.seconds(Phase::Prefill),
        "total_s": total_s,
    })
}

/// Milliseconds for one decode step's sampling of `batch` rows (greedy with statistics, rows in
/// parallel as in `generate`), on real logits of the prompt.
fn sampling_ms(dec: &Decoder, ids: &[u32], batch: usize, device: &Device) -> Result<f64> {
    let row: Vec<f32> = model::decoder::logits_of(dec, ids, device)?
        .get(ids.len() - 1)?
        .to_vec1()?;
    let rows = vec![row; batch];
    let cfg = SamplingConfig {
        temperature: 0.0,
        ..SamplingConfig::default()
    };
    let reps = 8;
    let t0 = Instant::now();
    for _ in 0..reps {
        let _: Vec<u32> = rows
            .par_iter()
            .map(|lg| {
                let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
                sampling::sample_with_stats(lg, &cfg, &mut rng).id
            })
            .collect();
    }
    Ok(t0.elapsed().as_secs_f64() * 1e3 / reps as f64)
}

/// Copy and read bandwidth (GB/s, best of 5 over 256 MiB buffers, rayon over 1 MiB chunks) and
/// the batch-1 tok/s limit of streaming the model's weights once per token at each.
fn bench_bandwidth(m: &model::LoadedModel) -> Result<serde_json::Value> {
    let n = 64 << 20; // f32s: 256 MiB
    let src: Vec<f32> = (0..n).into_par_iter().map(|i| i as f32).collect();
    let mut dst = vec![0f32; n];
    dst.par_chunks_mut(1 << 18).for_each(|c| c.fill(1.0)); // first touch
    let chunk = 1 << 18; // 1 MiB of f32
    let (mut copy, mut read) = (f64::INFINITY, f64::INFINITY);
    let mut sink = 0f32;
    for _ in 0..5 {
        let t = Instant::now();
        dst.par_chunks_mut(chunk)
            .zip(src.par_chunks(chunk))
            .for_each(|(d, s)| d.copy_from_slice(s));
        copy = copy.min(t.elapsed().as_secs_f64());
        let t = Instant::now();
        sink += src
            .par_chunks(chunk)
            .map(|c| {
                // Independent lanes, so the sum vectorizes and the loads are the bound.
                let lanes = c.chunks_exact(16).fold([0f32; 16], |mut a, x| {
                    for i in 0..16 {
                        a[i] += x[i];
                    }
                    a
                });
                lanes.iter().sum::<f32>()
            })
            .sum::<f32>();
        read = read.min(t.elapsed().as_secs_f64());
    }
    drop((src, dst));
    // The GEMM rate: one square matmul large enough for gemm's packing to amortize.
    let d = 1024;
    let a = Tensor::randn(0f32, 1f32, (d, d), &Device::Cpu)?;
    let b = Tensor::randn(0f32, 1f32, (d, d), &Device::Cpu)?;
    let _ = a.matmul(&b)?; // warm-up
    let mut gemm = f64::INFINITY;
    for _ in 0..5 {
        let t = Instant::now();
        let c = a.matmul(&b)?;
        gemm = gemm.min(t.elapsed().as_secs_f64());
        sink += c.get(0)?.get(0)?.to_scalar::<f32>()?;
    }
    let gemm_gflops = 2.0 * (d * d * d) as f64 / gemm / 1e9;
    // Every weight is one multiply-add per token (the tied embedding counted once: as the head).
    let flops_per_token = 2.0 * m.params.num_elements() as f64;
    let bytes = (n * 4) as f64;
    let weight_bytes = (m.params.num_elements() * 4) as f64;
    let (copy_gbps, read_gbps) = (2.0 * bytes / copy / 1e9, bytes / read / 1e9);
    Ok(serde_json::json!({
        "mode": "bandwidth",
        "buffer_mib": bytes / (1 << 20) as f64,
        // Bytes read plus bytes written per second.
        "copy_gbps": copy_gbps,
        "read_gbps": read_gbps,
        "weights_mb": weight_bytes / 1e6,
        "batch1_limit_tok_s_copy": copy_gbps * 1e9 / weight_bytes,
        "batch1_limit_tok_s_read": read_gbps * 1e9 / weight_bytes,
        "gemm_gflops": gemm_gflops,
        "gflops_per_token": flops_per_token / 1e9,
        "gemm_limit_tok_s": gemm_gflops * 1e9 / flops_per_token,
        "checksum": sink,
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
    let recompute = a.gradient_checkpointing.then(|| {
        llmrl::model::recompute::Recompute::new(
            m.params.named_vars().into_iter().map(|(_, v)| v).collect(),
        )
    });
    let opts = llmrl::model::decoder::BuildOptions {
        recompute: recompute.clone(),
        ..Default::default()
    };
    let dec = Decoder::build(&m.config, &m.params, Mode::Train, &opts)?;
    let num_vars = m.params.named_vars().len();

    // One step: (fwd seconds, bwd seconds, loss, parameters with a gradient).
    let step = || -> Result<(f64, f64, f32, usize)> {
        let t0 = Instant::now();
        let hidden = dec.forward_hidden(&x, &pos, None)?; // (B, T, H)
        let h = hidden.dim(2)?;
        // The LM head fused with the statistics, as the trainer computes them (no (B*T, V)
        // logits tensor).
        let flat = hidden.reshape((b * t, h))?; // (B*T, H)
        let loss = ops::head_logprob_stats(&flat, dec.lm_head_weight(), &tgt, 1.0)?
            .logp
            .mean_all()?
            .neg()?; // ()
        let loss_v = loss.to_scalar::<f32>()?;
        let fwd = t0.elapsed().as_secs_f64();
        let t1 = Instant::now();
        let mut grads = loss.backward()?;
        if let Some(rc) = &recompute {
            grads.extend(rc.take()?)?;
        }
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
        "gradient_checkpointing": a.gradient_checkpointing,
        "lora_r": a.lora_r,
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
