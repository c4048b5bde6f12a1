//! Reading run directories: `metrics.jsonl`, `eval.jsonl` and `run.json`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::{Run, Series};

/// Numeric keys that are coordinates or bookkeeping, not curves.
const NOT_METRICS: &[&str] = &["step", "time", "timestamp", "wall_time"];

pub(super) fn load_runs(run_dirs: &[PathBuf]) -> Result<(Vec<Run>, Vec<String>)> {
    let mut runs = Vec::new();
    let mut evals = Vec::new();
    for dir in run_dirs {
        let (run, eval) = load_run(dir)?;
        runs.push(run);
        evals.push(eval);
    }
    // Eval keys keep their names (pass@1, mean_score) unless some run also logs that key during
    // training; then the eval one becomes `eval_<key>` in every run so names stay consistent.
    let train_keys: BTreeSet<String> = runs.iter().flat_map(|r| r.series.keys().cloned()).collect();
    let mut notes = Vec::new();
    let mut renamed = BTreeSet::new();
    for (run, eval) in runs.iter_mut().zip(evals) {
        for (key, series) in eval {
            let name = if train_keys.contains(&key) {
                renamed.insert(key.clone());
                format!("eval_{key}")
            } else {
                key
            };
            run.series.insert(name, series);
        }
    }
    for key in renamed {
        notes.push(format!(
            "`{key}` is in both metrics.jsonl and eval.jsonl; the eval one is plotted as \
             `eval_{key}`."
        ));
    }
    // Runs with one name (one recipe, different overrides) would give an ambiguous legend: add
    // the directory's own name, or its whole path where even those collide.
    let count = |names: Vec<String>| {
        let mut counts = BTreeMap::<String, usize>::new();
        for n in &names {
            *counts.entry(n.clone()).or_default() += 1;
        }
        counts
    };
    let by_name = count(runs.iter().map(|r| r.name.clone()).collect());
    let with_dir: Vec<String> = runs
        .iter()
        .map(|r| format!("{} ({})", r.name, dir_name(&r.dir)))
        .collect();
    let by_dir = count(with_dir.clone());
    for (run, named) in runs.iter_mut().zip(with_dir) {
        if by_name[&run.name] > 1 {
            run.name = if by_dir[&named] > 1 || dir_name(&run.dir) == run.name {
                format!("{} ({})", run.name, run.dir.display())
            } else {
                named
            };
        }
    }
    Ok((runs, notes))
}

/// Load one run directory: its training series and, separately, its eval series.
fn load_run(path: &Path) -> Result<(Run, BTreeMap<String, Series>)> {
    // Accept the metrics file itself too: `llmrl report runs/x/metrics.jsonl` means runs/x.
    let dir = if path.file_name().is_some_and(|n| n == "metrics.jsonl") && path.is_file() {
        match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        }
    } else {
        path.to_path_buf()
    };
    if !dir.is_dir() {
        bail!(
            "run directory {} does not exist or is not a directory; hint: pass directories written \
             by `llmrl train` (they contain metrics.jsonl)",
            dir.display()
        );
    }
    let metrics_path = dir.join("metrics.jsonl");
    if !metrics_path.is_file() {
        bail!(
            "{} has no metrics.jsonl, so it is not a run directory; a run directory written by \
             `llmrl train` contains metrics.jsonl (one JSON object per step), and optionally \
             eval.jsonl and run.json; hint: pass e.g. runs/<name>, not its parent",
            dir.display()
        );
    }
    let (series, records, last_step) = read_jsonl(&metrics_path)?;
    let eval_path = dir.join("eval.jsonl");
    let eval = if eval_path.is_file() {
        read_jsonl(&eval_path)?.0
    } else {
        BTreeMap::new()
    };

    let (mut name, mut algorithm) = (None, None);
    let meta_path = dir.join("run.json");
    if meta_path.is_file() {
        let text = std::fs::read_to_string(&meta_path)
            .with_context(|| format!("reading {}", meta_path.display()))?;
        let meta: serde_json::Value = serde_json::from_str(&text).with_context(|| {
            format!(
                "parsing {}; hint: it should be a JSON object like {{\"name\": \"...\"}}",
                meta_path.display()
            )
        })?;
        name = meta
            .get("name")
            .and_then(|v| v.as_str())
            .map(str::to_string);
        algorithm = meta
            .get("algorithm")
            .and_then(|v| v.as_str())
            .map(str::to_string);
    }
    let name = match name {
        Some(n) => n,
        None => dir_name(&dir),
    };
    let run = Run {
        name,
        dir,
        algorithm,
        records,
        last_step,
        series,
    };
    Ok((run, eval))
}

/// The directory's own name, resolving `.` and `..` so the legend never says ".".
pub(super) fn dir_name(dir: &Path) -> String {
    let named = dir.file_name().map(|n| n.to_string_lossy().into_owned());
    named
        .or_else(|| {
            let abs = dir.canonicalize().ok()?;
            abs.file_name().map(|n| n.to_string_lossy().into_owned())
        })
        .unwrap_or_else(|| dir.display().to_string())
}

/// Parse a JSON-lines metrics file into per-key series (numbers only; null, strings and nested
/// values are skipped). A step logged twice (a run resumed from an earlier checkpoint) keeps its
/// last value, so curves do not zigzag. Returns the series, the record count and the top step.
fn read_jsonl(path: &Path) -> Result<(BTreeMap<String, Series>, usize, Option<f64>)> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut series: BTreeMap<String, Series> = BTreeMap::new();
    let mut records = 0;
    let mut last_step: Option<f64> = None;
    for (i, line) in text.lines().enumerate() {
        let lineno = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        let value: serde_json::Value = serde_json::from_str(line).with_context(|| {
            format!(
                "{}: line {lineno} is not valid JSON; hint: each line must be one JSON object \
                 (a run killed mid-write can leave a truncated last line: delete it)",
                path.display()
            )
        })?;
        let Some(obj) = value.as_object() else {
            bail!(
                "{}: line {lineno} is not a JSON object; hint: each line must look like \
                 {{\"step\": 1, ...}}",
                path.display()
            );
        };
        let Some(step) = obj.get("step").and_then(|v| v.as_f64()) else {
            bail!(
                "{}: line {lineno} has no numeric \"step\"; hint: every line needs the training \
                 step it belongs to",
                path.display()
            );
        };
        records += 1;
        last_step = Some(last_step.map_or(step, |s| s.max(step)));
        for (key, v) in obj {
            if NOT_METRICS.contains(&key.as_str()) {
                continue;
            }
            if let Some(x) = v.as_f64().filter(|x| x.is_finite()) {
                series.entry(key.clone()).or_default().push((step, x));
            }
        }
    }
    for points in series.values_mut() {
        // Stable sort keeps file order among equal steps; then keep the last of each run of equals.
        points.sort_by(|a, b| a.0.total_cmp(&b.0));
        let mut dedup: Series = Vec::with_capacity(points.len());
        for &p in points.iter() {
            match dedup.last_mut() {
                Some(last) if last.0 == p.0 => *last = p,
                _ => dedup.push(p),
            }
        }
        *points = dedup;
    }
    Ok((series, records, last_step))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::test_util::{opts, two_runs, write};
    use crate::report::{report, ImageFormat};

    #[test]
    fn directory_without_metrics_is_named_in_the_error() {
        let tmp = tempfile::tempdir().unwrap();
        let empty = tmp.path().join("not_a_run");
        std::fs::create_dir_all(&empty).unwrap();
        let err = report(
            std::slice::from_ref(&empty),
            &opts(&tmp.path().join("o"), &[], ImageFormat::Svg),
        )
        .unwrap_err();
        let msg = format!("{err:#}");
        assert!(
            msg.contains("not_a_run")
                && msg.contains("metrics.jsonl")
                && msg.contains("run directory"),
            "{msg}"
        );
        let missing = tmp.path().join("nowhere");
        let msg = format!(
            "{:#}",
            report(&[missing], &opts(tmp.path(), &[], ImageFormat::Svg)).unwrap_err()
        );
        assert!(
            msg.contains("nowhere") && msg.contains("does not exist"),
            "{msg}"
        );
    }

    #[test]
    fn the_metrics_file_itself_stands_for_its_run() {
        let tmp = tempfile::tempdir().unwrap();
        let runs = two_runs(tmp.path());
        let (loaded, _) = load_runs(&[runs[1].join("metrics.jsonl")]).unwrap();
        assert_eq!(loaded[0].name, "beta");
        assert_eq!(loaded[0].records, 4);
        assert_eq!(loaded[0].last_step, Some(3.0));
    }

    #[test]
    fn malformed_lines_report_their_line_number() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("r");
        let o = opts(&tmp.path().join("o"), &[], ImageFormat::Svg);
        for (text, needle) in [
            (
                "{\"step\": 1, \"loss\": 1}\n\n{\"step\": 2, \"loss\": \n",
                "line 3 is not valid JSON",
            ),
            ("{\"step\": 1}\n[1, 2]\n", "line 2 is not a JSON object"),
            (
                "{\"step\": 1}\n{\"loss\": 0.5}\n",
                "line 2 has no numeric \"step\"",
            ),
        ] {
            write(&dir.join("metrics.jsonl"), text);
            let msg = format!("{:#}", report(std::slice::from_ref(&dir), &o).unwrap_err());
            assert!(
                msg.contains(needle) && msg.contains("metrics.jsonl"),
                "{msg}"
            );
        }
    }

    #[test]
    fn eval_keys_clashing_with_training_keys_are_prefixed() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("r");
        write(
            &dir.join("metrics.jsonl"),
            "{\"step\": 1, \"accuracy\": 0.5}\n",
        );
        write(
            &dir.join("eval.jsonl"),
            "{\"step\": 1, \"accuracy\": 0.25}\n",
        );
        let (runs, notes) = load_runs(std::slice::from_ref(&dir)).unwrap();
        assert_eq!(runs[0].series["accuracy"], [(1.0, 0.5)]);
        assert_eq!(runs[0].series["eval_accuracy"], [(1.0, 0.25)]);
        assert_eq!(runs[0].name, "r");
        assert_eq!(notes.len(), 1);
    }
}
