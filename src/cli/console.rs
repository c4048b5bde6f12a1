//! The CLI's [`Reporter`]: indicatif progress bars when stderr is a terminal, plain periodic lines
//! (job, step, figures, ETA) when it is a file or a pipe, so logs of long runs stay readable.
//! Part of the CLI layer: the only place besides `cli.rs` and `main.rs` that prints.

use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::progress::{format_figures, Reporter};

/// The reporter for this process's stderr.
pub fn reporter() -> Box<dyn Reporter> {
    if std::io::stderr().is_terminal() {
        Box::new(Bars::default())
    } else {
        Box::new(Lines::new(Duration::from_secs(10)))
    }
}

/// Progress bars on a terminal.
#[derive(Default)]
pub struct Bars {
    bar: Mutex<Option<indicatif::ProgressBar>>,
}

impl Reporter for Bars {
    fn begin(&self, job: &str, total: u64, done: u64) {
        let pb = indicatif::ProgressBar::new(total);
        pb.set_style(
            indicatif::ProgressStyle::with_template(
                "{prefix} {bar:30} {pos}/{len} [{elapsed_precise}<{eta_precise}] {msg}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        pb.set_prefix(job.to_string());
        pb.set_position(done);
        // A resumed run's earlier steps are not part of the rate.
        pb.reset_eta();
        if let Ok(mut b) = self.bar.lock() {
            *b = Some(pb);
        }
    }

    fn progress(&self, done: u64, figures: &[(&str, f64)]) {
        if let Ok(b) = self.bar.lock() {
            if let Some(pb) = b.as_ref() {
                pb.set_message(format_figures(figures));
                pb.set_position(done);
            }
        }
    }

    fn end(&self) {
        if let Ok(mut b) = self.bar.lock() {
            if let Some(pb) = b.take() {
                pb.finish();
            }
        }
    }

    fn message(&self, text: &str) {
        match self.bar.lock().ok().as_ref().and_then(|b| b.as_ref()) {
            Some(pb) => pb.println(text),
            None => eprintln!("{text}"),
        }
    }
}

/// Plain lines, at most one per `interval` (and always the first and the last of a job).
pub struct Lines {
    interval: Duration,
    job: Mutex<Option<Job>>,
}

struct Job {
    name: String,
    total: u64,
    first: u64,
    start: Instant,
    last_line: Option<Instant>,
}

impl Lines {
    pub fn new(interval: Duration) -> Self {
        Self {
            interval,
            job: Mutex::new(None),
        }
    }
}

impl Reporter for Lines {
    fn begin(&self, job: &str, total: u64, done: u64) {
        if let Ok(mut j) = self.job.lock() {
            *j = Some(Job {
                name: job.to_string(),
                total,
                first: done,
                start: Instant::now(),
                last_line: None,
            });
        }
    }

    fn progress(&self, done: u64, figures: &[(&str, f64)]) {
        let Ok(mut j) = self.job.lock() else { return };
        let Some(job) = j.as_mut() else { return };
        let now = Instant::now();
        let due = job
            .last_line
            .is_none_or(|t| now.duration_since(t) >= self.interval);
        if !due && done < job.total {
            return;
        }
        job.last_line = Some(now);
        let elapsed = now.duration_since(job.start).as_secs_f64();
        let rate = (done.saturating_sub(job.first)) as f64 / elapsed.max(1e-9);
        let eta = if rate > 0.0 {
            format!(" eta {}", hms(job.total.saturating_sub(done) as f64 / rate))
        } else {
            String::new()
        };
        eprintln!(
            "{} {done}/{} {} [{}{eta}]",
            job.name,
            job.total,
            format_figures(figures),
            hms(elapsed)
        );
    }

    fn end(&self) {
        if let Ok(mut j) = self.job.lock() {
            *j = None;
        }
    }

    fn message(&self, text: &str) {
        eprintln!("{text}");
    }
}

/// 3725 s → `1:02:05`, 65 s → `1:05`.
fn hms(secs: f64) -> String {
    let s = secs.max(0.0).round() as u64;
    let (h, m, s) = (s / 3600, s / 60 % 60, s % 60);
    if h > 0 {
        format!("{h}:{m:02}:{s:02}")
    } else {
        format!("{m}:{s:02}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_clock_time() {
        assert_eq!(hms(65.0), "1:05");
        assert_eq!(hms(3725.0), "1:02:05");
        assert_eq!(hms(-1.0), "0:00");
    }
}
