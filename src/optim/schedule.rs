//! Learning-rate schedules.

use anyhow::ensure;
use serde::{Deserialize, Serialize};

/// Learning-rate schedule with linear warmup, as in `transformers.optimization`. Warmup is
/// `warmup_steps` if > 0, else `ceil(warmup_ratio * total_steps)` (HF `get_warmup_steps`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "name", rename_all = "snake_case", deny_unknown_fields)]
pub enum LrSchedule {
    /// `get_constant_schedule_with_warmup`.
    Constant {
        #[serde(default)]
        warmup_steps: u64,
        #[serde(default)]
        warmup_ratio: f64,
    },
    /// `get_linear_schedule_with_warmup`, decaying to `final_lr_ratio * base_lr` (HF: 0).
    Linear {
        #[serde(default)]
        warmup_steps: u64,
        #[serde(default)]
        warmup_ratio: f64,
        #[serde(default)]
        final_lr_ratio: f64,
    },
    /// `get_cosine_with_min_lr_schedule_with_warmup` (half a cosine), ending at
    /// `min_lr_ratio * base_lr` (HF's `min_lr_rate`).
    Cosine {
        #[serde(default)]
        warmup_steps: u64,
        #[serde(default)]
        warmup_ratio: f64,
        #[serde(default)]
        min_lr_ratio: f64,
    },
}

impl Default for LrSchedule {
    fn default() -> Self {
        LrSchedule::Constant {
            warmup_steps: 0,
            warmup_ratio: 0.0,
        }
    }
}

impl LrSchedule {
    /// Checks ranges; call when resolving a recipe.
    pub fn validate(&self) -> anyhow::Result<()> {
        let (steps, ratio, floor) = self.parts();
        ensure!(
            (0.0..=1.0).contains(&ratio),
            "lr_schedule warmup_ratio = {ratio} is out of range; hint: a fraction of training in [0, 1], e.g. 0.05"
        );
        ensure!(
            steps == 0 || ratio == 0.0,
            "lr_schedule sets both warmup_steps = {steps} and warmup_ratio = {ratio}; hint: keep one of them"
        );
        if let Some((field, r)) = floor {
            ensure!(
                (0.0..=1.0).contains(&r),
                "lr_schedule {field} = {r} is out of range; hint: a fraction of the base lr in [0, 1], e.g. 0.1"
            );
        }
        Ok(())
    }

    /// (warmup_steps, warmup_ratio, final-ratio field and value).
    fn parts(&self) -> (u64, f64, Option<(&'static str, f64)>) {
        match *self {
            LrSchedule::Constant {
                warmup_steps,
                warmup_ratio,
            } => (warmup_steps, warmup_ratio, None),
            LrSchedule::Linear {
                warmup_steps,
                warmup_ratio,
                final_lr_ratio,
            } => (
                warmup_steps,
                warmup_ratio,
                Some(("final_lr_ratio", final_lr_ratio)),
            ),
            LrSchedule::Cosine {
                warmup_steps,
                warmup_ratio,
                min_lr_ratio,
            } => (
                warmup_steps,
                warmup_ratio,
                Some(("min_lr_ratio", min_lr_ratio)),
            ),
        }
    }

    /// Warmup length for a run of `total_steps` optimizer steps.
    pub fn warmup_steps(&self, total_steps: u64) -> u64 {
        let (steps, ratio, _) = self.parts();
        if steps > 0 {
            steps
        } else {
            (ratio * total_steps as f64).ceil() as u64
        }
    }

    /// Learning rate for the update that follows `step` completed optimizer steps (0 for the
    /// first update) out of `total_steps`.
    pub fn lr(&self, base_lr: f64, step: u64, total_steps: u64) -> f64 {
        let warmup = self.warmup_steps(total_steps);
        if step < warmup {
            return base_lr * step as f64 / warmup.max(1) as f64;
        }
        let progress = || (step - warmup) as f64 / total_steps.saturating_sub(warmup).max(1) as f64;
        let factor = match *self {
            LrSchedule::Constant { .. } => 1.0,
            LrSchedule::Linear { final_lr_ratio, .. } => {
                let decay = (1.0 - progress()).max(0.0);
                final_lr_ratio + (1.0 - final_lr_ratio) * decay
            }
            LrSchedule::Cosine { min_lr_ratio, .. } => {
                let cos = 0.5 * (1.0 + (std::f64::consts::PI * progress().min(1.0)).cos());
                min_lr_ratio + (1.0 - min_lr_ratio) * cos
            }
        };
        base_lr * factor
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::optim::AdamWConfig;

    #[test]
    fn schedules_at_warmup_midpoint_and_end() {
        let b = 1e-3;
        let close = |a: f64, e: f64| assert!((a - e).abs() < 1e-12, "{a} vs {e}");
        let s = LrSchedule::Constant {
            warmup_steps: 10,
            warmup_ratio: 0.0,
        };
        close(s.lr(b, 0, 100), 0.0); // HF: the first update of a warmup uses lr 0
        close(s.lr(b, 5, 100), 0.5 * b);
        close(s.lr(b, 10, 100), b);
        close(s.lr(b, 100, 100), b);
        let s = LrSchedule::Linear {
            warmup_steps: 10,
            warmup_ratio: 0.0,
            final_lr_ratio: 0.0,
        };
        close(s.lr(b, 10, 110), b);
        close(s.lr(b, 60, 110), 0.5 * b);
        close(s.lr(b, 110, 110), 0.0);
        close(s.lr(b, 200, 110), 0.0);
        let s = LrSchedule::Linear {
            warmup_steps: 10,
            warmup_ratio: 0.0,
            final_lr_ratio: 0.1,
        };
        close(s.lr(b, 60, 110), 0.55 * b);
        close(s.lr(b, 110, 110), 0.1 * b);
        let s = LrSchedule::Cosine {
            warmup_steps: 0,
            warmup_ratio: 0.1,
            min_lr_ratio: 0.1,
        };
        assert_eq!(s.warmup_steps(100), 10);
        close(s.lr(b, 0, 100), 0.0);
        close(s.lr(b, 10, 100), b);
        close(s.lr(b, 55, 100), 0.55 * b); // cos(pi/2) = 0: halfway between 1 and 0.1
        close(s.lr(b, 100, 100), 0.1 * b);
        close(s.lr(b, 150, 100), 0.1 * b);
        // No warmup: full lr from the first step; ratio warmup rounds up like HF.
        close(LrSchedule::default().lr(b, 0, 10), b);
        assert_eq!(
            LrSchedule::Constant {
                warmup_steps: 0,
                warmup_ratio: 0.05
            }
            .warmup_steps(30),
            2
        );
    }

    #[test]
    fn configs_from_toml() {
        let s: LrSchedule =
            toml::from_str("name = \"cosine\"\nwarmup_ratio = 0.05\nmin_lr_ratio = 0.1").unwrap();
        assert_eq!(
            s,
            LrSchedule::Cosine {
                warmup_steps: 0,
                warmup_ratio: 0.05,
                min_lr_ratio: 0.1
            }
        );
        s.validate().unwrap();
        let e = toml::from_str::<LrSchedule>("name = \"cosine\"\nmin_lr = 0.1")
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown field `min_lr`"), "{e}");
        let e = toml::from_str::<LrSchedule>("name = \"step\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown variant `step`"), "{e}");
        let both = LrSchedule::Linear {
            warmup_steps: 5,
            warmup_ratio: 0.1,
            final_lr_ratio: 0.0,
        };
        assert!(both.validate().unwrap_err().to_string().contains("hint"));
        let c: AdamWConfig = toml::from_str("weight_decay = 0.01").unwrap();
        assert_eq!(
            c,
            AdamWConfig {
                weight_decay: 0.01,
                ..Default::default()
            }
        );
        assert!(toml::from_str::<AdamWConfig>("beta_1 = 0.9").is_err());
    }
}
