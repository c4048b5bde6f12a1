//! Smoothing, "best" directions and number formatting for tables and axes.

use anyhow::{bail, Result};

use super::Series;

/// How plotted curves are smoothed; the raw points stay drawn, faint, underneath, and
/// `summary.md` always shows raw values.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Smoothing {
    Off,
    /// Trailing moving average over this many steps (> 1).
    MovingAverage(usize),
    /// TensorBoard's smoothing slider: a debiased exponential moving average with this weight
    /// in (0, 1); 0.6 is TensorBoard's default, 0.9 smooths hard.
    Ema(f64),
}

impl Smoothing {
    /// From the CLI's `--smooth N` (window, 1 = off) and `--ema W` (weight), with a hint on
    /// nonsense values.
    pub fn from_options(window: usize, ema: Option<f64>) -> Result<Smoothing> {
        match (window, ema) {
            (0, _) => bail!(
                "smoothing window is 0; hint: use 1 for raw curves or N > 1 for an N-step moving \
                 average"
            ),
            (1, None) => Ok(Smoothing::Off),
            (w, None) => Ok(Smoothing::MovingAverage(w)),
            (1, Some(0.0)) => Ok(Smoothing::Off),
            (1, Some(w)) if (0.0..1.0).contains(&w) => Ok(Smoothing::Ema(w)),
            (1, Some(w)) => bail!(
                "EMA weight {w} is outside [0, 1); hint: 0.6 is TensorBoard's default, 0.9 \
                 smooths strongly"
            ),
            (_, Some(_)) => bail!(
                "both a moving-average window and an EMA weight were given; hint: pick one of \
                 --smooth N and --ema W"
            ),
        }
    }

    /// Words for titles and the summary, e.g. "moving average over 5 steps".
    pub(super) fn describe(self) -> Option<String> {
        match self {
            Smoothing::Off => None,
            Smoothing::MovingAverage(w) => Some(format!("moving average over {w} steps")),
            Smoothing::Ema(w) => Some(format!("EMA, weight {w}")),
        }
    }

    pub(super) fn apply(self, points: &[(f64, f64)]) -> Series {
        match self {
            Smoothing::Off => points.to_vec(),
            Smoothing::MovingAverage(w) => smooth(points, w),
            Smoothing::Ema(w) => ema(points, w),
        }
    }
}

/// Debiased exponential moving average over the points in order (TensorBoard's
/// `smoothing` scalar-chart option): `s_n = w s_{n-1} + (1 - w) y_n`, divided by `1 - w^n` so the
/// first points are not pulled towards 0.
pub(super) fn ema(points: &[(f64, f64)], weight: f64) -> Series {
    let (mut last, mut debias) = (0.0, 1.0);
    points
        .iter()
        .map(|&(x, y)| {
            last = weight * last + (1.0 - weight) * y;
            debias *= weight;
            (x, last / (1.0 - debias))
        })
        .collect()
}

/// Trailing moving average over the last `window` steps (the points with step in
/// `(x - window, x]`), so a sparse series such as evals every 50 steps is not averaged across
/// distant steps. window 1 = identity for integer steps.
pub(super) fn smooth(points: &[(f64, f64)], window: usize) -> Series {
    let window = window.max(1) as f64;
    let mut out = Vec::with_capacity(points.len());
    let (mut start, mut sum) = (0, 0.0);
    for (i, &(x, y)) in points.iter().enumerate() {
        sum += y;
        while points[start].0 <= x - window {
            sum -= points[start].1;
            start += 1;
        }
        out.push((x, sum / (i + 1 - start) as f64));
    }
    out
}

/// Which extreme is "best" for a metric, judged from its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Direction {
    Higher,
    Lower,
    /// Entropy, lengths, lr, grad norm, ...: neither end is better.
    Neither,
}

pub(super) fn direction(metric: &str) -> Direction {
    let m = metric.strip_prefix("eval_").unwrap_or(metric);
    // Policy-gradient losses and KL are not quality measures (GRPO's loss is often negative), so
    // they have no "best"; time and truncation do.
    let lower = ["truncation_rate"];
    let higher = [
        "accuracy",
        "format_rate",
        "tokens_per_s",
        "mean_score",
        "score",
    ];
    if lower.contains(&m) || m.ends_with("_seconds") {
        Direction::Lower
    } else if higher.contains(&m)
        || m.starts_with("reward_mean")
        || m.starts_with("pass@")
        || m.starts_with("maj@")
        || m.starts_with("mean@")
        || m.ends_with("_accuracy")
    {
        Direction::Higher
    } else {
        Direction::Neither
    }
}

/// Compact, exact-enough number for tables: integers as integers, 4 decimals in the usual range,
/// scientific notation outside it (lr = 1e-6 must not print as 0).
pub(super) fn fmt_num(v: f64) -> String {
    if v == v.trunc() && v.abs() < 1e15 {
        format!("{v:.0}")
    } else if (1e-3..1e6).contains(&v.abs()) {
        let s = format!("{v:.4}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        format!("{v:.3e}")
    }
}

/// Tick labels with the decimals the tick spacing needs (0.1 steps print "0.3", not "0.30000"),
/// scientific for tiny or huge axes.
pub(super) fn tick_formatter(lo: f64, hi: f64, labels: usize) -> impl Fn(&f64) -> String {
    let step = tick_step(lo, hi, labels);
    let decimals = (-step.log10().floor()).clamp(0.0, 9.0) as usize;
    let mag = lo.abs().max(hi.abs());
    let scientific = mag != 0.0 && !(1e-3..1e6).contains(&mag);
    move |v: &f64| {
        // Tick values are sums of float steps: 0 may arrive as -1.29e-26.
        let v = &if v.abs() < step * 1e-6 { 0.0 } else { *v };
        if scientific {
            format!("{v:.2e}")
        } else {
            format!("{v:.decimals$}")
        }
    }
}

/// The tick spacing plotters will use for `labels` ticks on [lo, hi]: going from coarse to fine
/// through 10^k x {1, 0.5, 0.2}, the last spacing whose ticks (its multiples inside the range)
/// still number at most `labels` (plotters `compute_f64_key_points`). Predicting it exactly
/// matters: one decimal too few prints 0.45 and 0.5 both as "0.5".
fn tick_step(lo: f64, hi: f64, labels: usize) -> f64 {
    let span = (hi - lo).abs().max(f64::MIN_POSITIVE);
    let (lo, hi) = (lo.min(hi), lo.max(hi));
    let ticks = |s: f64| (hi / s + 1e-9).floor() - (lo / s - 1e-9).ceil() + 1.0;
    let mut unit = 10f64.powf(span.log10().ceil());
    let mut step = unit;
    // 40 decades is far past f64 tick resolution; the bound only guards against a NaN loop.
    for _ in 0..40 {
        for m in [0.5, 0.2, 0.1] {
            if ticks(unit * m) > labels as f64 {
                return step;
            }
            step = unit * m;
        }
        unit /= 10.0;
    }
    step
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::select::{natural_key, unique_stem, STANDARD_METRICS};
    use crate::report::RESERVED_STEMS;
    use std::collections::BTreeSet;

    #[test]
    fn smoothing_is_a_trailing_moving_average() {
        let pts = [(1.0, 1.0), (2.0, 3.0), (3.0, 5.0), (4.0, 7.0)];
        assert_eq!(smooth(&pts, 1), pts);
        assert_eq!(
            smooth(&pts, 2),
            [(1.0, 1.0), (2.0, 2.0), (3.0, 4.0), (4.0, 6.0)]
        );
        assert_eq!(
            smooth(&pts, 10),
            [(1.0, 1.0), (2.0, 2.0), (3.0, 3.0), (4.0, 4.0)]
        );
        // The window counts steps, not points: evals 50 steps apart stay unsmoothed at 10.
        let sparse = [(0.0, 1.0), (50.0, 3.0), (100.0, 8.0)];
        assert_eq!(smooth(&sparse, 10), sparse);
        assert_eq!(smooth(&sparse, 60), [(0.0, 1.0), (50.0, 2.0), (100.0, 5.5)]);
    }

    #[test]
    fn ema_is_debiased_and_options_are_checked() {
        // w = 0.5: s1 = 0.5*2 / 0.5 = 2; s2 = (0.5*1 + 0.5*4) / 0.75 = 10/3.
        let e = ema(&[(1.0, 2.0), (2.0, 4.0)], 0.5);
        assert_eq!(e[0], (1.0, 2.0));
        assert!((e[1].1 - 10.0 / 3.0).abs() < 1e-12);
        // Debiasing keeps a constant series constant (no pull towards 0 at the start).
        assert!(ema(&[(1.0, 3.0); 4], 0.9)
            .iter()
            .all(|p| (p.1 - 3.0).abs() < 1e-12));
        assert_eq!(Smoothing::from_options(1, None).unwrap(), Smoothing::Off);
        assert_eq!(
            Smoothing::from_options(4, None).unwrap(),
            Smoothing::MovingAverage(4)
        );
        assert_eq!(
            Smoothing::from_options(1, Some(0.6)).unwrap(),
            Smoothing::Ema(0.6)
        );
        for bad in [(0, None), (1, Some(1.0)), (1, Some(-0.1)), (3, Some(0.5))] {
            assert!(Smoothing::from_options(bad.0, bad.1).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn near_zero_ticks_print_as_zero() {
        assert_eq!(tick_formatter(-1.0, 1.0, 6)(&-1.29e-26), "0.0");
        assert_eq!(tick_formatter(0.0, 100.0, 6)(&1e-13), "0");
    }

    #[test]
    fn numbers_ordering_and_names() {
        assert_eq!(fmt_num(3.0), "3");
        assert_eq!(fmt_num(0.125), "0.125");
        assert_eq!(fmt_num(2.0 / 3.0), "0.6667");
        assert_eq!(fmt_num(1e-6), "1.000e-6");
        assert_eq!(direction("loss"), Direction::Neither);
        assert_eq!(direction("gen_seconds"), Direction::Lower);
        assert_eq!(direction("pass@8"), Direction::Higher);
        assert_eq!(direction("entropy"), Direction::Neither);
        let mut keys = vec![
            "pass@16".to_string(),
            "zeta".into(),
            "pass@2".into(),
            "loss".into(),
            "reward_mean".into(),
        ];
        keys.sort_by_key(|k| {
            (
                STANDARD_METRICS
                    .iter()
                    .position(|s| s == k)
                    .unwrap_or(usize::MAX),
                natural_key(k),
            )
        });
        assert_eq!(keys, ["reward_mean", "loss", "pass@2", "pass@16", "zeta"]);
        let mut taken: BTreeSet<String> = RESERVED_STEMS.iter().map(|s| s.to_string()).collect();
        assert_eq!(
            unique_stem("rewards/countdown", &mut taken),
            "rewards_countdown"
        );
        assert_eq!(
            unique_stem("rewards:countdown", &mut taken),
            "rewards_countdown_2"
        );
        assert_eq!(unique_stem("overview", &mut taken), "metric_overview");
        assert_eq!(tick_formatter(0.0, 100.0, 6)(&20.0), "20");
        assert_eq!(tick_formatter(0.0, 1.0, 6)(&0.5), "0.5");
        assert_eq!(tick_formatter(0.7, 1.2, 6)(&0.8), "0.8"); // ticks every 0.1
        assert_eq!(tick_formatter(0.7, 1.1, 10)(&0.8), "0.80"); // every 0.05: 0.75 needs 2
        assert_eq!(tick_formatter(1e-6, 2e-6, 6)(&1.5e-6), "1.50e-6");
        // 0.0775..0.5725 holds 10 multiples of 0.05, so plotters ticks every 0.05.
        assert_eq!(tick_step(0.0775, 0.5725, 10), 0.05);
        assert_eq!(tick_formatter(0.0775, 0.5725, 10)(&0.45), "0.45");
        assert_eq!(tick_step(1.0, 200.0, 10), 20.0);
        assert_eq!(tick_step(0.0, 200.0, 10), 50.0); // 0, 20, .., 200 would be 11 ticks
        assert_eq!(tick_step(1.0, 200.0, 6), 50.0);
    }
}
