//! llmrl side of `eval/bench/run_beam_bench.sh`: constrained beam search throughput, printed as
//! one JSON line for the driver to put beside transformers (`eval/bench/beam_torch.py`).
//!
//! Reads the workload the Python side wrote ({eos, prompts: [[ids]], trie: [[ids]]}), builds a
//! [`TrieConstraint`] over the trie sequences with EOS after each, and times
//! `beam_search(num_beams = B, max_new_tokens = 4)` over all prompts at once (ragged, left-padded,
//! as `generate()` does on the peer side). One warm-up, then `--iters` timed runs; items/s =
//! prompts × B returned sequences / median seconds.
//!
//! Usage: cargo run --release --example bench_beam -- --model M.gguf --work work.json --beams 16

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use candle_core::Device;
use clap::Parser;
use llmrl::generate::beam::{beam_search, BeamConfig};
use llmrl::generate::TrieConstraint;
use llmrl::model::{self, Decoder, Mode, ModelSource};

#[derive(Parser, Debug)]
struct Args {
    /// A `.gguf` file or a local HF directory.
    #[arg(long)]
    model: String,
    /// The workload JSON written by `beam_torch.py workload`.
    #[arg(long)]
    work: PathBuf,
    #[arg(long, default_value_t = 16)]
    beams: usize,
    #[arg(long, default_value_t = 2)]
    iters: usize,
}

#[derive(serde::Deserialize)]
struct Work {
    eos: u32,
    prompts: Vec<Vec<u32>>,
    trie: Vec<Vec<u32>>,
}

fn main() -> Result<()> {
    let a = Args::parse();
    let work: Work = serde_json::from_str(
        &std::fs::read_to_string(&a.work).with_context(|| format!("reading {:?}", a.work))?,
    )?;
    let m = model::load(
        &ModelSource::parse(&a.model)?,
        &Device::Cpu,
        candle_core::DType::F32,
    )?;
    let dec = Decoder::new(&m.config, &m.params, Mode::Infer)?;
    let trie = TrieConstraint::new(&work.trie, &[work.eos]);
    let cfg = BeamConfig {
        num_beams: a.beams,
        max_new_tokens: 4,
        ..Default::default()
    };
    let run = || {
        beam_search(
            &dec,
            &m.tokenizer,
            &work.prompts,
            &cfg,
            Some(&trie),
            &Device::Cpu,
        )
    };
    run()?; // warm-up
    let mut times = vec![];
    let mut out = vec![];
    for _ in 0..a.iters.max(1) {
        let t0 = Instant::now();
        out = run()?;
        times.push(t0.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    let secs = times[times.len() / 2];
    let np = work.prompts.len();
    println!(
        "{}",
        serde_json::json!({
            "side": "llmrl", "beams": a.beams, "prompts": np, "trie": work.trie.len(),
            "median_s": (secs * 1e4).round() / 1e4,
            "items_per_s": ((np * a.beams) as f64 / secs * 100.0).round() / 100.0,
            "prompts_per_s": (np as f64 / secs * 1e3).round() / 1e3,
            "top_beam_prompt0": out[0].beams[0].token_ids,
            "threads": rayon::current_num_threads(),
        })
    );
    Ok(())
}
