//! What a step leaves behind: rollout statistics, the `metrics.jsonl` line, the rollout dump,
//! and the comparison of two metrics files that resume tests (and users) make.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Result;
use serde_json::{json, Value};

use super::rollout::{Rollout, Sample};
use crate::algo::{self, Metrics};
use crate::generate::Finish;
use crate::model::Tokenizer;
use crate::run_dir::RunDir;

/// Metric keys that measure time; they differ between runs and are ignored by resume tests.
pub const TIMING_KEYS: [&str; 5] = [
    "tokens_per_s",
    "gen_seconds",
    "recompute_seconds",
    "train_seconds",
    "step_seconds",
];

/// Rewards, lengths, entropy and advantage statistics of a generated rollout batch, laid out
/// in groups of `group_size` (a prompt's samples together).
pub fn rollout_metrics(samples: &[Sample], group_size: usize) -> Metrics {
    let n = samples.len().max(1) as f64;
    let rewards: Vec<f32> = samples.iter().map(|s| s.score.value).collect();
    let (mean, std) = algo::grpo::mean_std(&rewards);
    let lens: Vec<f64> = samples
        .iter()
        .map(|s| s.completion.token_ids.len() as f64)
        .collect();
    let share = |f: &dyn Fn(&Sample) -> bool| samples.iter().filter(|s| f(s)).count() as f64 / n;
    let mut m = Metrics::new();
    m.insert("reward_mean".into(), mean as f64);
    m.insert("reward_std".into(), std as f64);
    m.insert(
        "reward_std_within_group".into(),
        within_group_std(&rewards, group_size),
    );
    m.insert("accuracy".into(), share(&|s| s.score.correct));
    m.insert("format_rate".into(), share(&|s| s.score.formatted()));
    m.insert("response_length_mean".into(), lens.iter().sum::<f64>() / n);
    m.insert(
        "response_length_max".into(),
        lens.iter().copied().fold(0.0, f64::max),
    );
    m.insert(
        "truncation_rate".into(),
        share(&|s| s.completion.finish_reason == Finish::Length),
    );
    // The sampling policy's entropy over every generated token (trained or not).
    let (ent_sum, ent_n) = samples.iter().fold((0.0, 0usize), |(sum, n), s| {
        let e = &s.completion.entropies;
        (sum + e.iter().map(|&x| x as f64).sum::<f64>(), n + e.len())
    });
    m.insert("entropy".into(), ent_sum / ent_n.max(1) as f64);
    m.insert(
        "nonzero_advantage_rate".into(),
        share(&|s| s.advantage != 0.0),
    );
    m.insert(
        "advantage_abs_mean".into(),
        samples
            .iter()
            .map(|s| s.advantage.abs() as f64)
            .sum::<f64>()
            / n,
    );
    m
}

/// Mean over groups of the reward's std among a group's samples (the unbiased std the
/// advantages are normalized by): the spread GRPO's advantages are made from. `reward_std`,
/// over the whole batch, also counts how much prompts differ from each other, so a batch of
/// easy and hard prompts whose samples all agree shows a large `reward_std` and no signal.
/// (TRL logs this quantity under the name `reward_std`.)
fn within_group_std(rewards: &[f32], group_size: usize) -> f64 {
    let stds: Vec<f64> = rewards
        .chunks(group_size.max(1))
        .map(|g| algo::grpo::mean_std(g).1 as f64)
        .collect();
    stds.iter().sum::<f64>() / stds.len().max(1) as f64
}

/// One `metrics.jsonl` line: step, epoch and every metric (non-finite ones as null).
pub fn line(step: u64, epoch: u64, metrics: &Metrics) -> Value {
    let mut line = json!({ "step": step, "epoch": epoch });
    for (k, v) in metrics {
        line[k] = if v.is_finite() { json!(v) } else { Value::Null };
    }
    line
}

/// `rollouts/step_N.jsonl`: every sample with its prompt, completion, score and advantage.
pub fn dump_rollouts(run: &RunDir, step: u64, rollout: &Rollout, tok: &Tokenizer) -> Result<()> {
    let dir = run.path("rollouts");
    std::fs::create_dir_all(&dir)?;
    let mut text = String::new();
    for s in &rollout.samples {
        let c = &s.completion;
        let line = json!({
            "example_id": rollout.examples[c.prompt_index].id,
            "prompt": tok.decode(&s.prompt, false),
            "completion": c.text,
            "finish_reason": c.finish_reason,
            "score": s.score.value,
            "correct": s.score.correct,
            "parts": s.score.parts.iter().cloned().collect::<BTreeMap<_, _>>(),
            "reason": s.score.reason,
            "advantage": s.advantage,
            "num_tokens": c.token_ids.len(),
        });
        text.push_str(&line.to_string());
        text.push('\n');
    }
    std::fs::write(dir.join(format!("step_{step:06}.jsonl")), text)?;
    Ok(())
}

/// Compare two metrics files line by line, ignoring timing keys (used by resume tests and users).
pub fn metrics_equal_ignoring_timing(a: &Path, b: &Path) -> Result<bool> {
    let read = |p: &Path| -> Result<Vec<Value>> {
        std::fs::read_to_string(p)?
            .lines()
            .map(|l| {
                let mut v: Value = serde_json::from_str(l)?;
                if let Some(o) = v.as_object_mut() {
                    for k in TIMING_KEYS {
                        o.remove(k);
                    }
                }
                Ok(v)
            })
            .collect()
    };
    Ok(read(a)? == read(b)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_finite_metrics_are_null() {
        let mut m = Metrics::new();
        m.insert("loss".into(), f64::NAN);
        m.insert("lr".into(), 0.5);
        assert_eq!(
            line(3, 1, &m),
            json!({"epoch": 1, "lr": 0.5, "loss": null, "step": 3})
        );
    }

    #[test]
    fn within_group_std_ignores_differences_between_prompts() {
        // Group 1: [1, 0] has unbiased std sqrt(0.5); group 2: [0.5, 0.5] has 0. Their mean is
        // sqrt(0.5) / 2, while the std over all four rewards (0.408) also counts the groups'
        // different means; a second batch of two constant groups has spread but no signal.
        let w = within_group_std(&[1.0, 0.0, 0.5, 0.5], 2);
        assert!((w - 0.5f64.sqrt() / 2.0).abs() < 1e-6, "{w}");
        assert_eq!(within_group_std(&[1.0, 1.0, 0.0, 0.0], 2), 0.0);
        assert_eq!(within_group_std(&[0.3], 1), 0.0);
    }
}
