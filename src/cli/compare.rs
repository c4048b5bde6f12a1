//! `llmrl compare LABEL=EVAL_DIR...`: the `summary.json` files of several `llmrl eval` runs as
//! one before/after table (pass@1, pass@k, format rate, mean reward), printed as Markdown and
//! optionally written to a file. Part of the CLI layer: it reads and prints, nothing more.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;
use serde_json::Value;

#[derive(Args, Debug)]
pub struct CompareArgs {
    /// Evaluation directories of `llmrl eval --out DIR`, each optionally labelled: `SFT=runs/x/eval`.
    #[arg(required = true, value_name = "[LABEL=]EVAL_DIR")]
    pub evals: Vec<String>,
    /// Also write the table (Markdown) to this file.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

pub fn run(a: CompareArgs) -> Result<()> {
    let rows: Vec<(String, Value)> = a
        .evals
        .iter()
        .map(|spec| {
            let (label, dir) = match spec.split_once('=') {
                Some((l, d)) => (l.to_string(), PathBuf::from(d)),
                None => (spec.clone(), PathBuf::from(spec)),
            };
            Ok((label, read_summary(&dir)?))
        })
        .collect::<Result<_>>()?;
    let table = table(&rows);
    print!("{table}");
    if let Some(out) = &a.out {
        if out.exists() {
            bail!("{} exists; refusing to overwrite it", out.display());
        }
        std::fs::write(out, &table).with_context(|| format!("writing {}", out.display()))?;
    }
    Ok(())
}

fn read_summary(dir: &Path) -> Result<Value> {
    let p = dir.join("summary.json");
    let text = std::fs::read_to_string(&p).with_context(|| {
        format!(
            "reading {}; hint: give directories written by `llmrl eval --out DIR`",
            p.display()
        )
    })?;
    serde_json::from_str(&text).with_context(|| format!("{} is not JSON", p.display()))
}

/// The Markdown table: one row per evaluation; pass@k for k = 1 and the largest k all share.
pub fn table(rows: &[(String, Value)]) -> String {
    let ks = |v: &Value| -> Vec<usize> {
        v["pass_at_k"]
            .as_object()
            .map(|m| m.keys().filter_map(|k| k.parse().ok()).collect())
            .unwrap_or_default()
    };
    let k_max = rows
        .iter()
        .map(|(_, v)| ks(v).into_iter().max().unwrap_or(1))
        .min()
        .unwrap_or(1);
    let mut cols = vec!["pass@1".to_string()];
    if k_max > 1 {
        cols.push(format!("pass@{k_max}"));
    }
    let mut out = format!(
        "| model | problems × samples | {} | format rate | mean reward |\n|---|---|{}---|---|\n",
        cols.join(" | "),
        "---|".repeat(cols.len())
    );
    for (label, v) in rows {
        let num = |x: &Value| x.as_f64().map_or("–".into(), |f| format!("{f:.3}"));
        let mut cells = vec![num(&v["pass_at_k"]["1"])];
        if k_max > 1 {
            cells.push(num(&v["pass_at_k"][k_max.to_string()]));
        }
        out.push_str(&format!(
            "| {label} | {} × {} | {} | {} | {} |\n",
            v["num_problems"],
            v["n"].as_u64().or(v["min_samples"].as_u64()).unwrap_or(0),
            cells.join(" | "),
            num(&v["format_rate"]),
            num(&v["mean_score"]),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_lines_up_evaluations() {
        let a = serde_json::json!({"num_problems": 32, "n": 4, "pass_at_k": {"1": 0.0, "2": 0.0, "4": 0.0},
            "format_rate": 0.0, "mean_score": 0.0});
        let b = serde_json::json!({"num_problems": 32, "n": 4, "pass_at_k": {"1": 0.25, "2": 0.4, "4": 0.5},
            "format_rate": 0.96875, "mean_score": 0.32});
        let t = table(&[("zero-shot".into(), a), ("SFT".into(), b)]);
        assert_eq!(
            t,
            "| model | problems × samples | pass@1 | pass@4 | format rate | mean reward |\n\
             |---|---|---|---|---|---|\n\
             | zero-shot | 32 × 4 | 0.000 | 0.000 | 0.000 | 0.000 |\n\
             | SFT | 32 × 4 | 0.250 | 0.500 | 0.969 | 0.320 |\n"
        );
        // A summary from before format_rate existed shows a dash.
        let old = serde_json::json!({"num_problems": 2, "n": 1, "pass_at_k": {"1": 0.5}, "mean_score": 0.5});
        assert!(table(&[("old".into(), old)]).contains("| old | 2 × 1 | 0.500 | – | 0.500 |"));
    }
}
