//! `llmrl report` on TrackRec run directories: V's test metrics per round, one line per run.
//!
//! A TrackRec run (`llmrl trackrec`) has no `metrics.jsonl` of its own; its record is
//! `eval.jsonl`, one line per evaluation of V (`rec::trackrec::run::EvalLine`): the no-CoT
//! conditions (`eval-zero-shot`, `eval-no-cot`, round null) and `eval-rN`, V_N with G_N's CoTs.
//! The report plots each metric against the round, the AUC with its 95 % bootstrap interval as
//! whiskers and the tuned no-CoT V (TALLRec's baseline) as a dashed level in the run's colour, so
//! "does V gain from G's CoTs, and do both improve over rounds" is one picture; `summary.md`
//! lists every evaluation. Several runs (S-DPO against GRPO at the same budget) share the axes,
//! and where two runs evaluated a round on the same test prompts, `summary.md` compares them
//! prompt by prompt (a paired bootstrap), as it compares a run's rounds with each other.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::eval::binary::auc;

use super::draw::{color, ensure_font, write_figure, Curve, Figure, LegendEntry, Panel};
use super::summary::{check_ours, SUMMARY_MARKER};
use super::{ReportOptions, Series, Smoothing};
use crate::rec::trackrec::run::{EvalLine, RESOLVED};
use crate::rec::trackrec::validator::paired_auc_interval;

/// The metrics a TrackRec run records, in plotting order.
const METRICS: &[&str] = &["auc", "accuracy", "log_loss", "mean_p_yes"];
/// The stage whose V is tuned without a CoT: the level every round is compared with.
const BASELINE_STAGE: &str = "eval-no-cot";

/// Whether `dir` is a TrackRec run directory (it holds the resolved TrackRec recipe).
pub(super) fn is_trackrec_run(dir: &Path) -> bool {
    dir.join(RESOLVED).is_file()
}

/// One TrackRec run, loaded.
struct TrackRecRun {
    name: String,
    dir: PathBuf,
    /// G's algorithm (`sdpo`, `grpo`, ...), from the resolved recipe.
    generator: String,
    /// The evaluations in file order, one per stage.
    evals: Vec<EvalLine>,
    /// metric -> (round, value) over the `eval-rN` lines.
    rounds: BTreeMap<&'static str, Series>,
    /// (round, AUC low, AUC high) of the `eval-rN` lines that have an interval.
    auc_ci: Vec<(f64, f64, f64)>,
    /// metric -> the no-CoT V's value, as a flat line across the figure's rounds.
    baseline: BTreeMap<&'static str, Series>,
    /// Paired comparisons of the evaluations (same test prompts).
    paired: Vec<Paired>,
}

/// AUC(later) − AUC(earlier) on the same test prompts, with its paired bootstrap interval.
struct Paired {
    later: String,
    earlier: String,
    diff: f64,
    ci95: Option<[f64; 2]>,
    count: usize,
}

pub(super) fn report(run_dirs: &[PathBuf], opts: &ReportOptions) -> Result<Vec<PathBuf>> {
    let metrics = select(&opts.metrics)?;
    if !matches!(opts.smoothing, Smoothing::Off) {
        bail!(
            "TrackRec runs have a few rounds, not a curve of steps; hint: drop --smooth/--ema \
             for TrackRec run directories"
        );
    }
    let mut runs = run_dirs
        .iter()
        .map(|d| load(d))
        .collect::<Result<Vec<_>>>()?;
    disambiguate(&mut runs);
    // The baselines span every round any run reached (at least 0..1, so a level is a line).
    let last = runs
        .iter()
        .flat_map(|r| r.rounds.values().flatten().map(|p| p.0))
        .fold(1.0_f64, f64::max);
    for run in &mut runs {
        for metric in METRICS {
            if let Some(v) = run.evals.iter().rev().find(|e| e.stage == BASELINE_STAGE) {
                if let Some(y) = value(v, metric) {
                    run.baseline.insert(metric, vec![(0.0, y), (last, y)]);
                }
            }
        }
    }

    let summary_path = opts.out_dir.join("summary.md");
    std::fs::create_dir_all(&opts.out_dir)
        .with_context(|| format!("creating output directory {}", opts.out_dir.display()))?;
    check_ours(&summary_path)?;
    ensure_font()?;

    let labels: Vec<String> = runs
        .iter()
        .map(|r| format!("{}: V without a CoT", r.name))
        .collect();
    let mut written = Vec::new();
    for metric in &metrics {
        let figure = figure(&runs, &labels, std::slice::from_ref(metric), None);
        written.extend(write_figure(
            &opts.out_dir.join(metric),
            opts.format,
            &figure,
        )?);
    }
    if metrics.len() > 1 {
        let title = Some("TrackRec: V on the test prompts, by round".to_string());
        let figure = figure(&runs, &labels, &metrics, title);
        written.extend(write_figure(
            &opts.out_dir.join("overview"),
            opts.format,
            &figure,
        )?);
    }
    let between = between_runs(&runs)?;
    std::fs::write(&summary_path, summary(&runs, &between))
        .with_context(|| format!("writing {}", summary_path.display()))?;
    written.push(summary_path);
    Ok(written)
}

/// `--metric` among the four a TrackRec run records; none asked for = all four.
fn select(asked: &[String]) -> Result<Vec<&'static str>> {
    if asked.is_empty() {
        return Ok(METRICS.to_vec());
    }
    asked
        .iter()
        .map(|m| {
            METRICS.iter().copied().find(|k| k == m).with_context(|| {
                format!(
                    "TrackRec runs record no metric `{m}`; hint: choose among {}",
                    METRICS.join(", ")
                )
            })
        })
        .collect()
}

fn value(e: &EvalLine, metric: &str) -> Option<f64> {
    let m = &e.metrics;
    match metric {
        "auc" => m.auc,
        "accuracy" => Some(m.accuracy),
        "log_loss" => Some(m.log_loss),
        "mean_p_yes" => Some(m.mean_p_yes),
        _ => None,
    }
    .filter(|v| v.is_finite())
}

fn load(dir: &Path) -> Result<TrackRecRun> {
    let resolved = dir.join(RESOLVED);
    let recipe: toml::Value = std::fs::read_to_string(&resolved)
        .with_context(|| format!("reading {}", resolved.display()))?
        .parse()
        .with_context(|| format!("parsing {}", resolved.display()))?;
    let generator = recipe
        .get("generator")
        .and_then(|g| g.get("algorithm"))
        .and_then(|a| a.get("name"))
        .and_then(|n| n.as_str())
        .unwrap_or("sdpo")
        .to_string();
    let name = std::fs::read_to_string(dir.join("run.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|v| v.get("name")?.as_str().map(str::to_string))
        .unwrap_or_else(|| super::load::dir_name(dir));

    let path = dir.join("eval.jsonl");
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let mut evals: Vec<EvalLine> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let e: EvalLine = serde_json::from_str(line).with_context(|| {
            format!(
                "{}: line {} is not one of V's evaluations; hint: `llmrl trackrec` writes this \
                 file, one JSON object per evaluation stage (a run killed mid-write can leave a \
                 truncated last line: delete it)",
                path.display(),
                i + 1
            )
        })?;
        // A stage evaluated twice (a redone stage) keeps its last line.
        evals.retain(|old| old.stage != e.stage);
        evals.push(e);
    }

    let mut in_rounds: Vec<&EvalLine> = evals.iter().filter(|e| e.round.is_some()).collect();
    in_rounds.sort_by_key(|e| e.round);
    let x = |e: &EvalLine| e.round.unwrap_or(0) as f64;
    let mut rounds = BTreeMap::new();
    for metric in METRICS {
        let points: Series = in_rounds
            .iter()
            .filter_map(|e| Some((x(e), value(e, metric)?)))
            .collect();
        rounds.insert(*metric, points);
    }
    let auc_ci = in_rounds
        .iter()
        .filter_map(|e| {
            let [lo, hi] = e.metrics.auc_ci95?;
            Some((x(e), lo, hi))
        })
        .collect();
    let paired = paired_comparisons(dir, &evals)?;
    Ok(TrackRecRun {
        name,
        dir: dir.to_path_buf(),
        generator,
        evals,
        rounds,
        auc_ci,
        baseline: BTreeMap::new(),
        paired,
    })
}

/// Each round against round 0 and against the round before, and every round against the tuned
/// no-CoT V, from the evaluations' per-prompt scores (`stages/<stage>/scores.jsonl`). A stage
/// without that file (or scored on other prompts) is left out of the comparisons.
fn paired_comparisons(dir: &Path, evals: &[EvalLine]) -> Result<Vec<Paired>> {
    let by_stage = |stage: &str| evals.iter().find(|e| e.stage == stage);
    let round = |r: usize| by_stage(&format!("eval-r{r}"));
    let mut pairs: Vec<(&EvalLine, &EvalLine)> = Vec::new();
    for e in evals.iter().filter(|e| e.round.is_some_and(|r| r >= 1)) {
        let r = e.round.unwrap_or(0);
        pairs.extend(round(0).map(|b| (e, b)));
        if r >= 2 {
            pairs.extend(round(r - 1).map(|b| (e, b)));
        }
    }
    if let Some(no_cot) = by_stage(BASELINE_STAGE) {
        for e in evals.iter().filter(|e| e.round.is_some()) {
            pairs.push((e, no_cot));
        }
    }
    // Each stage's scores read once, however many comparisons it is in.
    let mut read = BTreeMap::new();
    for e in pairs.iter().flat_map(|&(l, e)| [l, e]) {
        if !read.contains_key(e.stage.as_str()) {
            read.insert(e.stage.as_str(), scores(dir, &e.stage)?);
        }
    }
    let mut out = Vec::new();
    for (later, earlier) in pairs {
        let (Some(Some(b)), Some(Some(a))) = (
            read.get(later.stage.as_str()),
            read.get(earlier.stage.as_str()),
        ) else {
            continue;
        };
        out.extend(
            compare(a, b, later.metrics.bootstrap).map(|(diff, ci95, count)| Paired {
                later: later.stage.clone(),
                earlier: earlier.stage.clone(),
                diff,
                ci95,
                count,
            }),
        );
    }
    Ok(out)
}

/// A stage's per-prompt scores: (id, p(Yes), liked), in file order.
type Scores = Vec<(String, f64, bool)>;

/// AUC(b) − AUC(a), its paired bootstrap interval and the prompt count; None unless both
/// scorings cover the same prompts in the same order with both labels present.
fn compare(a: &Scores, b: &Scores, bootstrap: usize) -> Option<(f64, Option<[f64; 2]>, usize)> {
    if a.len() != b.len() || a.iter().zip(b).any(|(x, y)| x.0 != y.0 || x.2 != y.2) {
        return None;
    }
    let pa: Vec<f64> = a.iter().map(|r| r.1).collect();
    let pb: Vec<f64> = b.iter().map(|r| r.1).collect();
    let labels: Vec<bool> = a.iter().map(|r| r.2).collect();
    let (x, y) = (auc(&pa, &labels)?, auc(&pb, &labels)?);
    let ci95 = paired_auc_interval(&pa, &pb, &labels, bootstrap, 0);
    Some((y - x, ci95, labels.len()))
}

/// One stage of two runs compared on the same test prompts (S-DPO's round N against GRPO's).
struct Between {
    stage: String,
    /// Indices into the report's runs: AUC(`later`'s) − AUC(`earlier`'s).
    later: usize,
    earlier: usize,
    diff: f64,
    ci95: Option<[f64; 2]>,
    count: usize,
}

/// Every round evaluated in two runs, each later run against each earlier one (in the order
/// given), where both have per-prompt scores on the same prompts and the scores differ: a stage
/// one run took from the other (`reuse_stages.sh`'s hard links) compares equal and is left out.
fn between_runs(runs: &[TrackRecRun]) -> Result<Vec<Between>> {
    let mut out = Vec::new();
    for (j, b) in runs.iter().enumerate() {
        for (i, a) in runs.iter().enumerate().take(j) {
            for e in b.evals.iter().filter(|e| e.round.is_some()) {
                if !a.evals.iter().any(|x| x.stage == e.stage) {
                    continue;
                }
                let (Some(sa), Some(sb)) = (scores(&a.dir, &e.stage)?, scores(&b.dir, &e.stage)?)
                else {
                    continue;
                };
                if sa == sb {
                    continue;
                }
                if let Some((diff, ci95, count)) = compare(&sa, &sb, e.metrics.bootstrap) {
                    out.push(Between {
                        stage: e.stage.clone(),
                        later: j,
                        earlier: i,
                        diff,
                        ci95,
                        count,
                    });
                }
            }
        }
    }
    Ok(out)
}

/// A stage's per-prompt scores: (id, p(Yes), liked), in file order; None without the file.
fn scores(dir: &Path, stage: &str) -> Result<Option<Scores>> {
    let path = dir.join("stages").join(stage).join("scores.jsonl");
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let mut rows = Vec::new();
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let v: serde_json::Value = serde_json::from_str(line)
            .with_context(|| format!("{}: line {} is not JSON", path.display(), i + 1))?;
        let (Some(id), Some(p), Some(label)) = (
            v.get("id").and_then(|x| x.as_str()),
            v.get("p_yes").and_then(|x| x.as_f64()),
            v.get("label").and_then(|x| x.as_str()),
        ) else {
            bail!(
                "{}: line {} lacks id, p_yes or label; hint: `llmrl trackrec` writes one scored \
                 test prompt per line",
                path.display(),
                i + 1
            );
        };
        rows.push((id.to_string(), p, label == "Yes"));
    }
    Ok(Some(rows))
}

/// Legend names: the run's name and G's algorithm; the directory too where those collide.
fn disambiguate(runs: &mut [TrackRecRun]) {
    let named: Vec<String> = runs
        .iter()
        .map(|r| format!("{} (G: {})", r.name, r.generator))
        .collect();
    for (i, run) in runs.iter_mut().enumerate() {
        run.name = if named.iter().filter(|n| **n == named[i]).count() > 1 {
            format!("{} {}", named[i], run.dir.display())
        } else {
            named[i].clone()
        };
    }
}

fn figure<'a>(
    runs: &'a [TrackRecRun],
    labels: &'a [String],
    metrics: &'a [&'static str],
    title: Option<String>,
) -> Figure<'a> {
    let panels = metrics
        .iter()
        .map(|&metric| {
            let mut curves = Vec::new();
            for (i, run) in runs.iter().enumerate() {
                if let Some(level) = run.baseline.get(metric) {
                    curves.push(Curve {
                        color: color(i),
                        raw: level,
                        smoothed: None,
                        whiskers: &[],
                        dashed: true,
                    });
                }
                if let Some(points) = run.rounds.get(metric).filter(|p| !p.is_empty()) {
                    curves.push(Curve {
                        color: color(i),
                        raw: points,
                        smoothed: None,
                        whiskers: if metric == "auc" { &run.auc_ci } else { &[] },
                        dashed: false,
                    });
                }
            }
            Panel { metric, curves }
        })
        .collect();
    let mut legend = Vec::new();
    for (i, run) in runs.iter().enumerate() {
        let has = |s: &BTreeMap<&str, Series>| metrics.iter().any(|m| s.contains_key(m));
        legend.push(LegendEntry {
            name: &run.name,
            color: color(i),
            has_data: metrics
                .iter()
                .any(|m| run.rounds.get(m).is_some_and(|p| !p.is_empty())),
            dashed: false,
        });
        if has(&run.baseline) {
            legend.push(LegendEntry {
                name: &labels[i],
                color: color(i),
                has_data: true,
                dashed: true,
            });
        }
    }
    Figure::from_panels(title, "round", panels, legend)
}

fn summary(runs: &[TrackRecRun], between: &[Between]) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "{SUMMARY_MARKER}\n# TrackRec report\n");
    let _ = writeln!(
        md,
        "V's metrics on the test prompts. AUC with its 95 % bootstrap interval; accuracy at \
         p(Yes) = 0.5.\n"
    );
    let _ = writeln!(
        md,
        "| run | stage | condition | AUC [95 % CI] | accuracy | log-loss | mean p(Yes) | \
         prompts (liked) |\n|---|---|---|---|---:|---:|---:|---:|"
    );
    for run in runs {
        if run.evals.is_empty() {
            let _ = writeln!(
                md,
                "| {} | — | no evaluation yet | | | | | |",
                cell(&run.name)
            );
        }
        for e in &run.evals {
            let m = &e.metrics;
            let auc = match (m.auc, m.auc_ci95) {
                (Some(a), Some([lo, hi])) => format!("{a:.3} [{lo:.3}, {hi:.3}]"),
                (Some(a), None) => format!("{a:.3}"),
                (None, _) => "n/a (one class)".into(),
            };
            let _ = writeln!(
                md,
                "| {} | {} | {} | {auc} | {:.3} | {:.3} | {:.3} | {} ({}) |",
                cell(&run.name),
                e.stage,
                cell(&e.condition),
                m.accuracy,
                m.log_loss,
                m.mean_p_yes,
                m.count,
                m.positives
            );
        }
    }
    if runs.iter().any(|r| !r.paired.is_empty()) {
        let _ = writeln!(
            md,
            "\nPaired comparisons on the same test prompts: AUC(later) − AUC(earlier), with the \
             95 % interval of a paired bootstrap (both scorings resampled together).\n\n\
             | run | later | earlier | ΔAUC [95 % CI] | prompts |\n|---|---|---|---|---:|"
        );
        for run in runs {
            for p in &run.paired {
                let cells = [cell(&run.name), p.later.clone(), p.earlier.clone()];
                delta_row(&mut md, &cells, p.diff, p.ci95, p.count);
            }
        }
    }
    if !between.is_empty() {
        let _ = writeln!(
            md,
            "\nBetween runs, the same stage on the same test prompts: AUC(run) − AUC(against), \
             with the 95 % interval of a paired bootstrap.\n\n\
             | stage | run | against | ΔAUC [95 % CI] | prompts |\n|---|---|---|---|---:|"
        );
        for p in between {
            let cells = [
                p.stage.clone(),
                cell(&runs[p.later].name),
                cell(&runs[p.earlier].name),
            ];
            delta_row(&mut md, &cells, p.diff, p.ci95, p.count);
        }
    }
    let _ = writeln!(md, "\n| run | directory |\n|---|---|");
    for run in runs {
        let _ = writeln!(md, "| {} | `{}` |", cell(&run.name), run.dir.display());
    }
    md
}

/// A comparison's row: its text cells, then ΔAUC with its interval and the prompt count.
fn delta_row(md: &mut String, cells: &[String], diff: f64, ci95: Option<[f64; 2]>, count: usize) {
    let ci = ci95.map_or(String::new(), |[lo, hi]| format!(" [{lo:+.3}, {hi:+.3}]"));
    let _ = writeln!(md, "| {} | {diff:+.3}{ci} | {count} |", cells.join(" | "));
}

fn cell(s: &str) -> String {
    s.replace('|', "\\|")
}

#[cfg(test)]
mod tests {
    use super::super::test_util::{opts, write};
    use super::super::ImageFormat;
    use super::*;

    fn line(stage: &str, round: Option<usize>, auc: f64, ci: [f64; 2], acc: f64) -> String {
        let round = round.map_or("null".to_string(), |r| r.to_string());
        format!(
            r#"{{"accuracy":{acc},"auc":{auc},"auc_ci95":[{},{}],"bootstrap":1000,"condition":"c {stage}","count":188,"log_loss":0.69,"mean_p_yes":0.5,"positives":93,"round":{round},"stage":"{stage}"}}"#,
            ci[0], ci[1]
        )
    }

    fn trackrec_run(root: &Path, dir: &str, generator: &str, lines: &[String]) -> PathBuf {
        let d = root.join(dir);
        write(
            &d.join(RESOLVED),
            &format!("[generator.algorithm]\nname = \"{generator}\"\n"),
        );
        write(&d.join("run.json"), r#"{"name": "trackrec-ml100k"}"#);
        write(&d.join("eval.jsonl"), &(lines.join("\n") + "\n"));
        d
    }

    #[test]
    fn rounds_baseline_and_intervals_reach_the_figures_and_the_table() {
        let tmp = tempfile::tempdir().unwrap();
        let sdpo = trackrec_run(
            tmp.path(),
            "sdpo",
            "sdpo",
            &[
                line("eval-zero-shot", None, 0.436, [0.35, 0.52], 0.457),
                line("eval-no-cot", None, 0.675, [0.59, 0.75], 0.638),
                line("eval-r0", Some(0), 0.558, [0.48, 0.64], 0.484),
                // A redone stage: the later line wins.
                line("eval-r1", Some(1), 0.5, [0.4, 0.6], 0.5),
                line("eval-r1", Some(1), 0.604, [0.53, 0.69], 0.527),
            ],
        );
        let grpo = trackrec_run(
            tmp.path(),
            "grpo",
            "grpo",
            &[line("eval-r0", Some(0), 0.557, [0.476, 0.639], 0.516)],
        );
        let out = tmp.path().join("report");
        let written =
            super::super::report(&[sdpo, grpo], &opts(&out, &[], ImageFormat::Svg)).unwrap();
        for name in [
            "auc.svg",
            "accuracy.svg",
            "log_loss.svg",
            "mean_p_yes.svg",
            "overview.svg",
            "summary.md",
        ] {
            assert!(written.contains(&out.join(name)), "{name}: {written:?}");
        }
        let svg = std::fs::read_to_string(out.join("auc.svg")).unwrap();
        assert!(svg.contains("trackrec-ml100k (G: sdpo)"), "legend");
        assert!(svg.contains("trackrec-ml100k (G: grpo)"), "legend");
        assert!(svg.contains("V without a CoT") && svg.contains("round"));

        let md = std::fs::read_to_string(out.join("summary.md")).unwrap();
        assert!(md.starts_with(SUMMARY_MARKER));
        assert!(
            md.contains(
                "| eval-r1 | c eval-r1 | 0.604 [0.530, 0.690] | 0.527 | 0.690 | 0.500 | 188 (93) |"
            ),
            "{md}"
        );
        assert!(
            !md.contains("| 0.500 [0.400, 0.600] |"),
            "the redone line is gone"
        );
        assert_eq!(md.matches("| trackrec-ml100k (G: sdpo) |").count(), 5);
    }

    #[test]
    fn the_loaded_run_has_rounds_in_order_and_a_flat_baseline() {
        let tmp = tempfile::tempdir().unwrap();
        let d = trackrec_run(
            tmp.path(),
            "r",
            "grpo",
            &[
                line("eval-r1", Some(1), 0.6, [0.5, 0.7], 0.5),
                line("eval-no-cot", None, 0.675, [0.59, 0.75], 0.638),
                line("eval-r0", Some(0), 0.55, [0.45, 0.65], 0.5),
            ],
        );
        let run = load(&d).unwrap();
        assert_eq!(run.generator, "grpo");
        assert_eq!(run.rounds["auc"], vec![(0.0, 0.55), (1.0, 0.6)]);
        assert_eq!(run.auc_ci, vec![(0.0, 0.45, 0.65), (1.0, 0.5, 0.7)]);
        let out = tmp.path().join("out");
        // One metric asked for: its figure only, no overview.
        super::super::report(&[d], &opts(&out, &["auc"], ImageFormat::Svg)).unwrap();
        assert!(out.join("auc.svg").is_file() && !out.join("overview.svg").exists());
    }

    #[test]
    fn rounds_are_compared_paired_on_the_same_prompts() {
        let tmp = tempfile::tempdir().unwrap();
        let d = trackrec_run(
            tmp.path(),
            "r",
            "sdpo",
            &[
                line("eval-no-cot", None, 0.875, [0.5, 1.0], 0.5),
                line("eval-r0", Some(0), 0.25, [0.0, 0.5], 0.5),
                line("eval-r1", Some(1), 1.0, [1.0, 1.0], 1.0),
                line("eval-r2", Some(2), 1.0, [1.0, 1.0], 1.0),
            ],
        );
        // Four prompts, liked / not / liked / not. By hand: AUC r0 = 1/4 (only 0.6 > 0.5 of
        // the four liked-vs-not pairs), r1 = 1, no CoT = (1 + 1 + 1 + 0.5) / 4 = 0.875.
        let scores = |stage: &str, ids: [&str; 4], p: [f64; 4]| {
            let rows: Vec<String> = (0..4)
                .map(|i| {
                    let label = if i % 2 == 0 { "Yes" } else { "No" };
                    format!(
                        r#"{{"id":"{}","p_yes":{},"label":"{label}"}}"#,
                        ids[i], p[i]
                    )
                })
                .collect();
            write(
                &d.join("stages").join(stage).join("scores.jsonl"),
                &(rows.join("\n") + "\n"),
            );
        };
        let ids = ["a", "b", "c", "d"];
        scores("eval-no-cot", ids, [0.6, 0.4, 0.5, 0.5]);
        scores("eval-r0", ids, [0.6, 0.5, 0.4, 0.7]);
        scores("eval-r1", ids, [0.9, 0.1, 0.8, 0.2]);
        // Scored on other prompts: no comparison.
        scores("eval-r2", ["a", "b", "c", "e"], [0.9, 0.1, 0.8, 0.2]);
        let out = tmp.path().join("out");
        super::super::report(&[d], &opts(&out, &["auc"], ImageFormat::Svg)).unwrap();
        let md = std::fs::read_to_string(out.join("summary.md")).unwrap();
        for row in [
            "| eval-r1 | eval-r0 | +0.750 [",
            "| eval-r0 | eval-no-cot | -0.625 [",
            "| eval-r1 | eval-no-cot | +0.125 [",
        ] {
            assert!(md.contains(row), "{row} in\n{md}");
        }
        assert!(!md.contains("| eval-r2 | eval-r"), "{md}");
    }

    fn scores(d: &Path, stage: &str, p: [f64; 4]) {
        let rows: Vec<String> = (0..4)
            .map(|i| {
                let label = if i % 2 == 0 { "Yes" } else { "No" };
                format!(r#"{{"id":"p{i}","p_yes":{},"label":"{label}"}}"#, p[i])
            })
            .collect();
        write(
            &d.join("stages").join(stage).join("scores.jsonl"),
            &(rows.join("\n") + "\n"),
        );
    }

    #[test]
    fn two_runs_are_compared_on_the_rounds_they_do_not_share() {
        let tmp = tempfile::tempdir().unwrap();
        let evals = [
            line("eval-r0", Some(0), 0.25, [0.0, 0.5], 0.5),
            line("eval-r1", Some(1), 0.5, [0.0, 1.0], 0.5),
        ];
        let sdpo = trackrec_run(tmp.path(), "sdpo", "sdpo", &evals);
        let grpo = trackrec_run(tmp.path(), "grpo", "grpo", &evals);
        // Round 0 shared (the same scores): no comparison. Round 1 by hand, prompts liked / not /
        // liked / not: S-DPO's AUC = (1 + 0 + 1 + 1) / 4 = 0.75 (0.6 > 0.5, 0.6 < 0.7,
        // 0.8 > 0.5, 0.8 > 0.7), GRPO's = 1, so GRPO − S-DPO = +0.25.
        for d in [&sdpo, &grpo] {
            scores(d, "eval-r0", [0.6, 0.5, 0.4, 0.7]);
        }
        scores(&sdpo, "eval-r1", [0.6, 0.5, 0.8, 0.7]);
        scores(&grpo, "eval-r1", [0.9, 0.1, 0.8, 0.2]);
        let out = tmp.path().join("out");
        super::super::report(&[sdpo, grpo], &opts(&out, &["auc"], ImageFormat::Svg)).unwrap();
        let md = std::fs::read_to_string(out.join("summary.md")).unwrap();
        let row = "| eval-r1 | trackrec-ml100k (G: grpo) | trackrec-ml100k (G: sdpo) | +0.250 [";
        assert!(md.contains(row), "{row} in\n{md}");
        assert!(
            !md.contains("| eval-r0 | trackrec-ml100k (G: grpo)"),
            "{md}"
        );
    }

    #[test]
    fn bad_input_is_explained() {
        let tmp = tempfile::tempdir().unwrap();
        let d = trackrec_run(tmp.path(), "r", "sdpo", &["{\"stage\": 3".to_string()]);
        let err = format!("{:#}", load(&d).err().unwrap());
        assert!(err.contains("line 1") && err.contains("hint"), "{err}");

        let ok = trackrec_run(tmp.path(), "ok", "sdpo", &[]);
        let out = tmp.path().join("out");
        let err = super::super::report(
            std::slice::from_ref(&ok),
            &opts(&out, &["reward"], ImageFormat::Svg),
        )
        .unwrap_err();
        assert!(format!("{err:#}").contains("choose among auc"), "{err:#}");

        let train = tmp.path().join("train");
        write(&train.join("metrics.jsonl"), "{\"step\": 1, \"loss\": 1}\n");
        let err =
            super::super::report(&[ok, train], &opts(&out, &[], ImageFormat::Svg)).unwrap_err();
        assert!(format!("{err:#}").contains("separately"), "{err:#}");
    }
}
