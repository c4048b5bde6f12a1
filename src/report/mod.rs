//! `llmrl report`: metric curves of one or several run directories, as images and a Markdown table.
//!
//! TrackRec run directories get their own figures (V's metrics by round; see `trackrec`).
//!
//! Reads each run's `metrics.jsonl` (one JSON object per training step) and, when present,
//! `eval.jsonl` (one object per evaluation) and `run.json` (`{"name", "algorithm"}`), then writes
//! into `out_dir`: one `<metric>.png|svg` per metric (one line per run, x = step), an
//! `overview.png|svg` grid of the main metrics, and `summary.md` with the last and best value of
//! every plotted metric per run. The legend sits in its own strip right of the plot, so it never
//! hides data, and run names appear as text in the SVG.
//!
//! Deliberately not done: interactive plots, log axes, wall-clock x axes, and reading TensorBoard
//! or W&B files; the trainer's JSON lines are the one source. Only the generated files are written
//! (out_dir may be shared); a `summary.md` that this module did not write is never overwritten.
//!
//! Reference: the curves TRL/verl users look at (TensorBoard/W&B scalars: reward, accuracy,
//! response length, entropy, KL, with a smoothing slider); smoothing here is a trailing moving
//! average and only changes the plots, never the table. Text is drawn with DejaVu Sans
//! (`assets/fonts/DejaVuSans.ttf`, Bitstream Vera licence + public-domain DejaVu changes, see
//! `assets/fonts/LICENSE-DejaVu.txt`), embedded so PNGs carry text without system font libraries.
//!
//! Layout: [`report`] and its options here; reading run directories in `load`, choosing and
//! naming metrics in `select`, smoothing and number formatting in `numbers`, `summary.md` in
//! `summary`, and the images in `draw`.

mod draw;
mod load;
mod numbers;
mod select;
mod summary;
#[cfg(test)]
mod test_util;
mod trackrec;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use anyhow::{bail, Context, Result};

use draw::{ensure_font, write_figure, Figure};
use load::load_runs;
pub use numbers::Smoothing;
use select::{available_metrics, overview_metrics, select_metrics, unique_stem};
use summary::{check_ours, summary_markdown};

/// Which image files to write for each figure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ImageFormat {
    Png,
    Svg,
    Both,
}

impl ImageFormat {
    fn extensions(self) -> &'static [&'static str] {
        match self {
            ImageFormat::Png => &["png"],
            ImageFormat::Svg => &["svg"],
            ImageFormat::Both => &["png", "svg"],
        }
    }
}

/// What to plot and where.
#[derive(Debug, Clone)]
pub struct ReportOptions {
    /// Metric keys to plot; empty = every numeric key found, in a standard order.
    pub metrics: Vec<String>,
    /// Directory for the images and `summary.md` (created if missing).
    pub out_dir: PathBuf,
    pub format: ImageFormat,
    /// Smoothing of the plotted curves (never of the table).
    pub smoothing: Smoothing,
}

/// File stems this module writes besides metric images; a metric with such a name gets a prefix.
const RESERVED_STEMS: &[&str] = &["overview", "summary"];

/// (step, value) pairs sorted by step, one per step.
type Series = Vec<(f64, f64)>;

/// One run directory, loaded.
struct Run {
    name: String,
    dir: PathBuf,
    algorithm: Option<String>,
    /// Number of records in metrics.jsonl, and the highest step among them.
    records: usize,
    last_step: Option<f64>,
    series: BTreeMap<String, Series>,
}

/// Plot the metrics of `run_dirs` and write the images and `summary.md` into `opts.out_dir`.
/// Returns the files written, in writing order.
pub fn report(run_dirs: &[PathBuf], opts: &ReportOptions) -> Result<Vec<PathBuf>> {
    if run_dirs.is_empty() {
        bail!(
            "no run directories given; hint: pass one or more directories written by \
             `llmrl train`, e.g. runs/<name>"
        );
    }
    // TrackRec runs record V's evaluations per round, not training steps: their own figures.
    let trackrec = run_dirs
        .iter()
        .filter(|d| trackrec::is_trackrec_run(d))
        .count();
    if trackrec == run_dirs.len() {
        return trackrec::report(run_dirs, opts);
    }
    if trackrec > 0 {
        bail!(
            "{trackrec} of the {} directories are TrackRec runs (`llmrl trackrec`), whose \
             metrics are per round, and the others training runs; hint: report them separately",
            run_dirs.len()
        );
    }
    let (runs, notes) = load_runs(run_dirs)?;
    let available = available_metrics(&runs);
    let (selected, skipped) = select_metrics(&opts.metrics, &available)?;

    let summary_path = opts.out_dir.join("summary.md");
    std::fs::create_dir_all(&opts.out_dir)
        .with_context(|| format!("creating output directory {}", opts.out_dir.display()))?;
    // Fail before drawing anything rather than after half the images are written.
    check_ours(&summary_path)?;
    ensure_font()?;

    let mut written = Vec::new();
    let mut stems: BTreeSet<String> = RESERVED_STEMS.iter().map(|s| s.to_string()).collect();
    for metric in &selected {
        let stem = unique_stem(metric, &mut stems);
        let figure = Figure::new(&runs, std::slice::from_ref(metric), opts.smoothing, None);
        written.extend(write_figure(
            &opts.out_dir.join(&stem),
            opts.format,
            &figure,
        )?);
    }
    let overview = overview_metrics(&available);
    if !overview.is_empty() {
        let title = "overview".to_string();
        let figure = Figure::new(&runs, &overview, opts.smoothing, Some(title));
        written.extend(write_figure(
            &opts.out_dir.join("overview"),
            opts.format,
            &figure,
        )?);
    }

    let md = summary_markdown(&runs, &selected, &skipped, &notes, opts.smoothing);
    std::fs::write(&summary_path, md)
        .with_context(|| format!("writing {}", summary_path.display()))?;
    written.push(summary_path);
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::summary::SUMMARY_MARKER;
    use super::test_util::{opts, two_runs, write};
    use super::*;

    /// The row `| metric arrow | run | ...` of summary.md, split into trimmed cells.
    fn row(md: &str, metric: &str, run: &str) -> Vec<String> {
        md.lines()
            .map(|l| {
                l.split('|')
                    .map(|c| c.trim().to_string())
                    .collect::<Vec<_>>()
            })
            .find(|c| c.len() > 3 && c[1].split(' ').next() == Some(metric) && c[2] == run)
            .unwrap_or_else(|| panic!("no row for {metric}/{run} in\n{md}"))
    }

    #[test]
    fn writes_images_and_summary_for_two_runs() {
        let tmp = tempfile::tempdir().unwrap();
        let runs = two_runs(tmp.path());
        let out = tmp.path().join("report");
        let written = report(&runs, &opts(&out, &[], ImageFormat::Both)).unwrap();
        for name in [
            "reward_mean.png",
            "reward_mean.svg",
            "loss.svg",
            "pass@1.png",
            "pass@8.svg",
            "overview.png",
            "overview.svg",
            "summary.md",
        ] {
            assert!(
                out.join(name).is_file(),
                "{name} missing; wrote {written:?}"
            );
            assert!(written.contains(&out.join(name)));
        }
        assert!(!out.join("phase.svg").exists(), "strings are not metrics");
        assert!(!out.join("step.svg").exists());
        let png = std::fs::read(out.join("reward_mean.png")).unwrap();
        assert_eq!(&png[1..4], b"PNG");

        let svg = std::fs::read_to_string(out.join("reward_mean.svg")).unwrap();
        assert!(
            svg.contains("alpha") && svg.contains("beta"),
            "legend names missing"
        );
        let overview = std::fs::read_to_string(out.join("overview.svg")).unwrap();
        for panel in ["reward_mean", "accuracy", "entropy", "pass@1", "pass@8"] {
            assert!(overview.contains(panel), "overview lacks {panel}");
        }

        let md = std::fs::read_to_string(out.join("summary.md")).unwrap();
        assert!(md.starts_with(SUMMARY_MARKER));
        // cells: ["", metric, run, last, at step, best, at step, min, max, points, ""]
        // alpha reward_mean 0.1, 0.5, 0.3: last 0.3 @3, best (max) 0.5 @2.
        assert_eq!(
            row(&md, "reward_mean", "alpha")[3..10],
            ["0.3", "3", "0.5", "2", "0.1", "0.5", "3"]
        );
        // beta: step 2 logged twice, the later 0.4 wins, so the 0.9 never counts as best.
        assert_eq!(
            row(&md, "reward_mean", "beta")[3..10],
            ["0.6", "3", "0.6", "3", "0.2", "0.6", "3"]
        );
        // loss is lower-is-better; beta's null at step 1 is skipped: 0.7 @2, 0.8 @3.
        assert_eq!(
            row(&md, "loss", "beta")[3..10],
            ["0.8", "3", "", "", "0.7", "0.8", "2"]
        );
        // entropy has no better end; lr prints in scientific notation, not as 0.
        assert_eq!(row(&md, "entropy", "alpha")[5], "");
        assert_eq!(row(&md, "lr", "alpha")[3], "2.000e-6");
        // Metrics a run lacks are shown as such.
        assert_eq!(row(&md, "accuracy", "alpha")[3], "—");
        assert_eq!(row(&md, "pass@8", "alpha")[3..6], ["0.5", "3", "0.5"]);
        // Standard metrics no run logged are noted, not plotted.
        assert!(
            md.contains("absent from every run") && md.contains("kl"),
            "{md}"
        );
        assert!(!out.join("kl.svg").exists());
        assert!(md.contains("| grpo |"));
    }

    #[test]
    fn requested_metrics_only_and_rerun_overwrites_own_files() {
        let tmp = tempfile::tempdir().unwrap();
        let runs = two_runs(tmp.path());
        let out = tmp.path().join("shared");
        write(&out.join("notes.txt"), "mine");
        let o = opts(&out, &["accuracy", "loss", "accuracy"], ImageFormat::Svg);
        let first = report(&runs, &o).unwrap();
        let second = report(&runs, &o).unwrap();
        assert_eq!(first, second);
        let names: Vec<String> = first
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            ["accuracy.svg", "loss.svg", "overview.svg", "summary.md"]
        );
        assert_eq!(
            std::fs::read_to_string(out.join("notes.txt")).unwrap(),
            "mine"
        );
        let md = std::fs::read_to_string(out.join("summary.md")).unwrap();
        assert!(!md.contains("absent from every run"));
    }

    #[test]
    fn refuses_to_overwrite_a_foreign_summary() {
        let tmp = tempfile::tempdir().unwrap();
        let runs = two_runs(tmp.path());
        let out = tmp.path().join("out");
        write(&out.join("summary.md"), "# my notes\n");
        let err = report(&runs, &opts(&out, &[], ImageFormat::Svg)).unwrap_err();
        assert!(
            format!("{err:#}").contains("not written by `llmrl report`"),
            "{err:#}"
        );
        assert_eq!(
            std::fs::read_to_string(out.join("summary.md")).unwrap(),
            "# my notes\n"
        );
        assert!(
            !out.join("reward_mean.svg").exists(),
            "nothing is drawn before the check"
        );
    }

    #[test]
    fn smoothed_reports_draw_and_say_how() {
        let tmp = tempfile::tempdir().unwrap();
        let runs = two_runs(tmp.path());
        let mut o = opts(&tmp.path().join("o"), &["reward_mean"], ImageFormat::Svg);
        o.smoothing = Smoothing::MovingAverage(2);
        report(&runs, &o).unwrap();
        let svg = std::fs::read_to_string(tmp.path().join("o/reward_mean.svg")).unwrap();
        assert!(svg.contains("moving average over 2 steps"));
        o.smoothing = Smoothing::Ema(0.6);
        report(&runs, &o).unwrap();
        let svg = std::fs::read_to_string(tmp.path().join("o/reward_mean.svg")).unwrap();
        assert!(svg.contains("EMA, weight 0.6"));
        let md = std::fs::read_to_string(tmp.path().join("o/summary.md")).unwrap();
        assert!(
            md.contains("smoothing, EMA, weight 0.6, only affects"),
            "{md}"
        );
    }
}
