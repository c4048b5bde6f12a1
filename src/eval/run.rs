//! The evaluation loop: n samples per problem with the same prompt and verifier as training, then
//! the statistics of `stats.rs`. Used by `llmrl eval` and by the trainer every N steps.

use anyhow::Result;
use candle_core::Device;
use serde::Serialize;

use super::stats::{summarize, EvalSummary, ProblemResult, ProblemStats};
use crate::data::Example;
use crate::generate::{self, SamplingConfig};
use crate::model::{Decoder, Tokenizer};
use crate::progress::Reporter;
use crate::prompting::Prompter;
use crate::reward::Verifier;

#[derive(Serialize)]
pub struct EvalOutput {
    pub summary: EvalSummary,
    pub problems: Vec<ProblemStats>,
    /// Per problem: its samples' text and scores (for the per-problem JSONL).
    #[serde(skip)]
    pub results: Vec<ProblemResult>,
}

/// Evaluate `examples` with `n` samples each, `batch` problems per generation call. Seeds derive
/// from (seed, problem index, sample), so results do not depend on `batch`. Progress (problems
/// done, share of correct samples so far) goes to `report`.
#[allow(clippy::too_many_arguments)]
pub fn evaluate(
    dec: &Decoder,
    tok: &Tokenizer,
    examples: &[Example],
    prompter: &Prompter,
    verifier: &dyn Verifier,
    sampling: &SamplingConfig,
    n: usize,
    seed: u64,
    batch: usize,
    device: &Device,
    report: &dyn Reporter,
) -> Result<EvalOutput> {
    let mut results = Vec::with_capacity(examples.len());
    let (mut correct, mut scored) = (0usize, 0usize);
    report.begin("eval", examples.len() as u64, 0);
    for (chunk_i, chunk) in examples.chunks(batch.max(1)).enumerate() {
        let prompts: Vec<Vec<u32>> = chunk
            .iter()
            .map(|ex| prompter.ids(tok, ex))
            .collect::<Result<_>>()?;
        let seeds: Vec<Vec<u64>> = (0..chunk.len())
            .map(|j| {
                let p = (chunk_i * batch.max(1) + j) as u64;
                (0..n as u64)
                    .map(|s| generate::sample_seed(seed ^ 0xE7A1, p, s))
                    .collect()
            })
            .collect();
        let outs = generate::generate(dec, tok, &prompts, &seeds, sampling, device)?;
        for (j, ex) in chunk.iter().enumerate() {
            let mine: Vec<_> = outs.iter().filter(|o| o.prompt_index == j).collect();
            results.push(ProblemResult {
                id: ex.id.clone(),
                scores: mine.iter().map(|o| verifier.score(ex, &o.text)).collect(),
                completions: mine.iter().map(|o| o.text.clone()).collect(),
            });
        }
        for r in &results[results.len() - chunk.len()..] {
            correct += r.scores.iter().filter(|s| s.correct).count();
            scored += r.scores.len();
        }
        report.progress(
            results.len() as u64,
            &[("acc", correct as f64 / scored.max(1) as f64)],
        );
    }
    report.end();
    let problems: Vec<ProblemStats> = results.iter().map(ProblemStats::from_result).collect();
    Ok(EvalOutput {
        summary: summarize(&problems),
        problems,
        results,
    })
}
