//! Choosing the metrics to plot, their order, and their file names.

use std::collections::BTreeSet;

use anyhow::{bail, Result};

use super::{Run, RESERVED_STEMS};

/// The keys the trainer writes, in the order figures and the table list them. A key from this
/// list that no run has is reported as skipped in `summary.md` (when no metrics were requested).
pub(super) const STANDARD_METRICS: &[&str] = &[
    "reward_mean",
    "reward_std",
    "reward_std_within_group",
    "accuracy",
    "format_rate",
    "response_length_mean",
    "response_length_max",
    "truncation_rate",
    "entropy",
    "kl",
    "clip_fraction",
    "grad_norm",
    "lr",
    "loss",
    "tokens_per_s",
    "gen_seconds",
    "train_seconds",
];

/// Counters the trainer logs for bookkeeping (resume, schedules): not plotted or tabled unless
/// asked for by name, since a staircase of them says nothing about learning.
pub(super) const BOOKKEEPING: &[&str] = &["epoch", "optimizer_steps", "skipped_steps"];

/// Panels of `overview.*`, followed by every eval `pass@k` found.
const OVERVIEW_METRICS: &[&str] = &["reward_mean", "accuracy", "response_length_mean", "entropy"];

/// Every key with data in some run, standard keys first, then the rest by natural order
/// (so pass@2 comes before pass@16).
pub(super) fn available_metrics(runs: &[Run]) -> Vec<String> {
    let keys: BTreeSet<&String> = runs.iter().flat_map(|r| r.series.keys()).collect();
    let mut keys: Vec<String> = keys.into_iter().cloned().collect();
    keys.sort_by_key(|k| {
        let rank = STANDARD_METRICS
            .iter()
            .position(|s| s == k)
            .unwrap_or(usize::MAX);
        (rank, natural_key(k))
    });
    keys
}

/// Sort key splitting a trailing `@<number>`: ("pass", 16) sorts after ("pass", 2).
pub(super) fn natural_key(key: &str) -> (String, u64) {
    match key.rsplit_once('@') {
        Some((head, tail)) if tail.parse::<u64>().is_ok() => {
            (head.to_string(), tail.parse().unwrap_or(0))
        }
        _ => (key.to_string(), 0),
    }
}

/// The metrics to plot and the standard ones skipped for lack of data.
pub(super) fn select_metrics(
    requested: &[String],
    available: &[String],
) -> Result<(Vec<String>, Vec<String>)> {
    if requested.is_empty() {
        let skipped = STANDARD_METRICS
            .iter()
            .filter(|m| !available.iter().any(|a| a == *m))
            .map(|m| m.to_string())
            .collect();
        let plotted = available
            .iter()
            .filter(|m| !BOOKKEEPING.contains(&m.as_str()))
            .cloned()
            .collect();
        return Ok((plotted, skipped));
    }
    let mut selected: Vec<String> = Vec::new();
    for m in requested {
        if !available.contains(m) {
            let list = if available.is_empty() {
                "(none: the runs have no numeric values)".to_string()
            } else {
                available.join(", ")
            };
            bail!("metric `{m}` is in none of the runs; available metrics: {list}");
        }
        if !selected.contains(m) {
            selected.push(m.clone());
        }
    }
    Ok((selected, Vec::new()))
}

pub(super) fn overview_metrics(available: &[String]) -> Vec<String> {
    let mut panels: Vec<String> = OVERVIEW_METRICS
        .iter()
        .filter(|m| available.iter().any(|a| a == *m))
        .map(|m| m.to_string())
        .collect();
    panels.extend(available.iter().filter(|k| k.starts_with("pass@")).cloned());
    if panels.is_empty() {
        // Unusual logs: an overview of whatever exists beats no overview.
        panels = available.iter().take(4).cloned().collect();
    }
    panels
}

/// A file stem for `metric`: path-safe characters only, distinct from other outputs.
pub(super) fn unique_stem(metric: &str, taken: &mut BTreeSet<String>) -> String {
    let safe: String = metric
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "_-.@".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    let safe = safe.trim_start_matches('.').to_string();
    let mut stem = if safe.is_empty() {
        "metric".to_string()
    } else {
        safe
    };
    if RESERVED_STEMS.contains(&stem.as_str()) {
        stem = format!("metric_{stem}");
    }
    let base = stem.clone();
    let mut n = 2;
    while taken.contains(&stem) {
        stem = format!("{base}_{n}");
        n += 1;
    }
    taken.insert(stem.clone());
    stem
}

#[cfg(test)]
mod tests {
    use crate::report::test_util::{opts, two_runs};
    use crate::report::{report, ImageFormat};

    #[test]
    fn bookkeeping_counters_are_plotted_only_on_request() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("r");
        crate::report::test_util::write(
            &dir.join("metrics.jsonl"),
            "{\"step\": 1, \"reward_mean\": 0, \"epoch\": 0, \"optimizer_steps\": 1}\n\
             {\"step\": 2, \"reward_mean\": 0, \"epoch\": 0, \"optimizer_steps\": 2}\n",
        );
        let out = tmp.path().join("o");
        report(
            std::slice::from_ref(&dir),
            &opts(&out, &[], ImageFormat::Svg),
        )
        .unwrap();
        assert!(out.join("reward_mean.svg").is_file());
        assert!(!out.join("epoch.svg").exists() && !out.join("optimizer_steps.svg").exists());
        let md = std::fs::read_to_string(out.join("summary.md")).unwrap();
        assert!(!md.contains("| epoch"), "{md}");
        // A flat all-zero series gets a readable band: no ±1e-10 or -1.29e-26 tick labels; a
        // 2-step run has no fractional step ticks.
        let svg = std::fs::read_to_string(out.join("reward_mean.svg")).unwrap();
        assert!(
            !svg.contains("e-1") && !svg.contains("e-2"),
            "tiny tick labels"
        );
        assert!(!svg.contains(">1.5<"), "fractional step tick");
        report(
            std::slice::from_ref(&dir),
            &opts(&out, &["epoch"], ImageFormat::Svg),
        )
        .unwrap();
        assert!(out.join("epoch.svg").is_file());
    }

    #[test]
    fn same_named_runs_are_told_apart_by_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let mut dirs = Vec::new();
        for d in ["long-s24-grpo-mb4", "long-s24-grpo-mb4-imentor"] {
            let dir = tmp.path().join("runs").join(d);
            crate::report::test_util::write(&dir.join("run.json"), r#"{"name": "countdown-grpo"}"#);
            crate::report::test_util::write(
                &dir.join("metrics.jsonl"),
                "{\"step\": 1, \"loss\": 1}\n",
            );
            dirs.push(dir);
        }
        let out = tmp.path().join("o");
        report(&dirs, &opts(&out, &[], ImageFormat::Svg)).unwrap();
        let svg = std::fs::read_to_string(out.join("overview.svg")).unwrap();
        assert!(svg.contains("countdown-grpo (long-s24-grpo-mb4)"), "{svg}");
        assert!(svg.contains("countdown-grpo (long-s24-grpo-mb4-imentor)"));
    }

    #[test]
    fn unknown_requested_metric_lists_available_ones() {
        let tmp = tempfile::tempdir().unwrap();
        let runs = two_runs(tmp.path());
        let err = report(
            &runs,
            &opts(&tmp.path().join("o"), &["kl"], ImageFormat::Svg),
        )
        .unwrap_err();
        let msg = format!("{err:#}");
        assert!(
            msg.contains("`kl`")
                && msg.contains("reward_mean, accuracy")
                && msg.contains("pass@1, pass@8"),
            "{msg}"
        );
    }
}
