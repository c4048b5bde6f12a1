//! Helpers shared by the report tests.

use std::path::{Path, PathBuf};

use super::{ImageFormat, ReportOptions};

pub(super) fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

/// Two runs: `alpha` named by run.json, with eval.jsonl; `beta` named by its directory, with
/// a null, a missing key and a duplicated step (resume).
pub(super) fn two_runs(root: &Path) -> Vec<PathBuf> {
    let a = root.join("run_a");
    write(
        &a.join("run.json"),
        r#"{"name": "alpha", "algorithm": "grpo"}"#,
    );
    write(
        &a.join("metrics.jsonl"),
        concat!(
            r#"{"step": 1, "reward_mean": 0.1, "loss": 2.0, "entropy": 1.5, "lr": 1e-6}"#,
            "\n",
            r#"{"step": 2, "reward_mean": 0.5, "loss": 1.0, "entropy": 1.2, "lr": 2e-6}"#,
            "\n",
            r#"{"step": 3, "reward_mean": 0.3, "loss": 1.5, "entropy": 1.1, "lr": 2e-6}"#,
            "\n",
        ),
    );
    write(
        &a.join("eval.jsonl"),
        concat!(
            r#"{"step": 0, "pass@1": 0.2, "pass@8": 0.4}"#,
            "\n",
            r#"{"step": 3, "pass@1": 0.25, "pass@8": 0.5}"#,
            "\n"
        ),
    );
    let b = root.join("beta");
    write(
        &b.join("metrics.jsonl"),
        concat!(
            r#"{"step": 1, "reward_mean": 0.2, "loss": null, "accuracy": 0.5}"#,
            "\n",
            r#"{"step": 2, "reward_mean": 0.9, "loss": 0.5, "phase": "train"}"#,
            "\n",
            "\n",
            r#"{"step": 2, "reward_mean": 0.4, "loss": 0.7}"#,
            "\n",
            r#"{"step": 3, "reward_mean": 0.6, "loss": 0.8, "accuracy": 0.75}"#,
            "\n",
        ),
    );
    vec![a, b]
}

pub(super) fn opts(out: &Path, metrics: &[&str], format: ImageFormat) -> ReportOptions {
    ReportOptions {
        metrics: metrics.iter().map(|s| s.to_string()).collect(),
        out_dir: out.to_path_buf(),
        format,
        smoothing: super::Smoothing::Off,
    }
}
