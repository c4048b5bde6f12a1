//! How the library reports progress and messages: one [`Reporter`], provided by the caller. Below
//! the CLI nothing prints; the trainer and the evaluation loop call a reporter, and the CLI's
//! (`cli/console.rs`) decides how it looks: progress bars on a terminal, plain periodic lines when
//! stderr is a file or a pipe. Tests and library users who want quiet pass [`Silent`].

use std::sync::Mutex;

/// Receives progress of long jobs (a training run, an evaluation) and one-off messages.
///
/// One job runs at a time: [`begin`](Reporter::begin), any number of
/// [`progress`](Reporter::progress), then [`end`](Reporter::end). Messages may come at any time.
pub trait Reporter: Sync {
    /// A job of `total` units starts (`done` of them already, e.g. when a run resumes).
    fn begin(&self, job: &str, total: u64, done: u64);
    /// `done` units are finished; `figures` are the latest numbers worth showing, in order
    /// (e.g. reward, accuracy, tokens/s).
    fn progress(&self, done: u64, figures: &[(&str, f64)]);
    /// The job ended.
    fn end(&self);
    /// A line for the person running the job ("resuming from step 3").
    fn message(&self, text: &str);
}

/// Says nothing.
pub struct Silent;

impl Reporter for Silent {
    fn begin(&self, _: &str, _: u64, _: u64) {}
    fn progress(&self, _: u64, _: &[(&str, f64)]) {}
    fn end(&self) {}
    fn message(&self, _: &str) {}
}

/// Keeps everything it is told, as text lines: for tests that check what a job reported.
#[derive(Default)]
pub struct Recorder {
    pub lines: Mutex<Vec<String>>,
}

impl Recorder {
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().map(|l| l.clone()).unwrap_or_default()
    }

    fn push(&self, s: String) {
        if let Ok(mut l) = self.lines.lock() {
            l.push(s);
        }
    }
}

impl Reporter for Recorder {
    fn begin(&self, job: &str, total: u64, done: u64) {
        self.push(format!("begin {job} {done}/{total}"));
    }
    fn progress(&self, done: u64, figures: &[(&str, f64)]) {
        self.push(format!("progress {done} {}", format_figures(figures)));
    }
    fn end(&self) {
        self.push("end".into());
    }
    fn message(&self, text: &str) {
        self.push(format!("message {text}"));
    }
}

/// `reward 0.123 acc 0.50`: figures as a person reads them (3 significant decimals, integers
/// plain, missing ones left out).
pub fn format_figures(figures: &[(&str, f64)]) -> String {
    figures
        .iter()
        .filter(|(_, v)| v.is_finite())
        .map(|(k, v)| {
            if v.fract() == 0.0 && v.abs() < 1e9 {
                format!("{k} {v:.0}")
            } else if v.abs() >= 100.0 {
                format!("{k} {v:.1}")
            } else {
                format!("{k} {v:.3}")
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_read_like_a_person_writes_them() {
        let s = format_figures(&[
            ("reward", 0.12345),
            ("len", 31.0),
            ("tok/s", 1234.56),
            ("acc", f64::NAN),
        ]);
        assert_eq!(s, "reward 0.123 len 31 tok/s 1234.6");
    }

    #[test]
    fn recorder_keeps_the_order_of_events() {
        let r = Recorder::default();
        r.begin("train", 3, 1);
        r.progress(2, &[("reward", 0.5)]);
        r.message("hi");
        r.end();
        assert_eq!(
            r.lines(),
            [
                "begin train 1/3",
                "progress 2 reward 0.500",
                "message hi",
                "end"
            ]
        );
    }
}
