//! V, the validator: the label-probability judge (`reward::label`) over the preference prompt
//! with G's CoT between `<summary>` and `</summary>` (or without a CoT), scoring
//! p(Yes) / (p(Yes) + p(No)) at the answer position — the monotone form, not TrackRec's softmax
//! over the two probabilities, which squashes every score into [0.27, 0.73].
//!
//! Here: building V as a judge from a model and a template ([`validator_judge`]), V as the
//! reward of the RL variant ([`ValidatorReward`]: p(the prompt's true label) of G's completion
//! as the CoT), and V's held-out metrics with bootstrap intervals of the AUC ([`v_metrics`]).

use anyhow::Result;
use candle_core::{DType, Device};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::data::Example;
use crate::eval::binary::{auc, binary_metrics};
use crate::reward::label::{LabelConfig, LabelJudge, LabelReward};
use crate::reward::{GroupMember, Judge, JudgeRow, Score, Verifier, P_POSITIVE};

/// The field of a prompt row that holds G's CoT (V's template reads `{cot}`).
pub const COT_FIELD: &str = "cot";

/// V as a label judge: `model` (a checkpoint's `model/` directory or the pretrained source),
/// `template` (a built-in name or a path), reward = p(the row's true label).
pub fn validator_judge(
    model: &str,
    template: &str,
    chat: bool,
    batch_size: usize,
    device: &Device,
    dtype: DType,
) -> Result<LabelJudge> {
    let cfg = LabelConfig {
        model: model.into(),
        template: Some(template.into()),
        template_text: None,
        chat,
        system: None,
        labels: vec!["Yes".into(), "No".into()],
        positive: Some("Yes".into()),
        label_field: "label".into(),
        reward: LabelReward::TrueLabel,
        batch_size,
    };
    LabelJudge::new(&cfg, device, dtype)
}

/// V's scores of prompt rows (each with its `cot` field when the template reads one).
pub fn score_rows(judge: &LabelJudge, rows: &[Example]) -> Result<Vec<Score>> {
    let batch: Vec<JudgeRow> = rows
        .iter()
        .map(|ex| JudgeRow {
            example: ex,
            prompt: "",
            completion: "",
        })
        .collect();
    judge.score_batch(&batch)
}

/// V's p(Yes) of a score (the judge's `p_positive` part).
pub fn p_yes(s: &Score) -> f64 {
    s.parts
        .iter()
        .find(|(k, _)| k == P_POSITIVE)
        .map_or(f64::from(s.value), |(_, p)| f64::from(*p))
}

/// The RL variant's reward: G's completion is the CoT V reads; the reward is V's probability of
/// the prompt's true label. A group (a prompt's samples) is one batch of forwards.
pub struct ValidatorReward {
    pub judge: LabelJudge,
}

impl ValidatorReward {
    fn rows(example: &Example, cots: &[&str]) -> Vec<Example> {
        cots.iter()
            .map(|c| {
                let mut ex = example.clone();
                ex.fields.insert(COT_FIELD.into(), Value::from(*c));
                ex
            })
            .collect()
    }

    fn scores(&self, example: &Example, cots: &[&str]) -> Vec<Score> {
        // A failing forward is the judge breaking, not the completion; the trainer's reward
        // must stay total, so it scores 0 with the reason.
        score_rows(&self.judge, &Self::rows(example, cots)).unwrap_or_else(|e| {
            cots.iter()
                .map(|_| Score::zero(format!("validator failed: {e:#}")))
                .collect()
        })
    }
}

impl Verifier for ValidatorReward {
    fn score(&self, example: &Example, completion: &str) -> Score {
        self.scores(example, &[completion]).remove(0)
    }

    fn name(&self) -> &str {
        "trackrec_validator"
    }

    fn validate(&self, example: &Example) -> Result<()> {
        let mut ex = example.clone();
        ex.fields.insert(COT_FIELD.into(), "".into());
        Judge::validate(&self.judge, &ex)
    }

    fn score_group(&self, example: &Example, group: &[GroupMember<'_>]) -> Vec<Score> {
        let cots: Vec<&str> = group.iter().map(|m| m.completion).collect();
        self.scores(example, &cots)
    }
}

/// V on held-out prompts: AUC with its 95 % bootstrap interval, accuracy at 0.5, log-loss.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VMetrics {
    pub count: usize,
    pub positives: usize,
    pub auc: Option<f64>,
    /// 2.5 % and 97.5 % percentiles of the AUC over `bootstrap` resamples of the prompts.
    pub auc_ci95: Option<[f64; 2]>,
    pub accuracy: f64,
    pub log_loss: f64,
    pub mean_p_yes: f64,
    pub bootstrap: usize,
}

/// Metrics of probabilities `p` against `labels`; resamples seeded by `seed`.
pub fn v_metrics(p: &[f64], labels: &[bool], bootstrap: usize, seed: u64) -> VMetrics {
    let m = binary_metrics(p, labels);
    let (count, positives, a, accuracy, log_loss) = match &m {
        Some(m) => (m.count, m.positives, m.auc, m.accuracy, m.log_loss),
        None => (0, 0, None, 0.0, 0.0),
    };
    VMetrics {
        count,
        positives,
        auc: a,
        auc_ci95: auc_interval(p, labels, bootstrap, seed),
        accuracy,
        log_loss,
        mean_p_yes: p.iter().sum::<f64>() / p.len().max(1) as f64,
        bootstrap,
    }
}

/// Percentile bootstrap over rows; resamples with one class only are skipped (their AUC is
/// undefined). `None` without resamples or rows.
pub fn auc_interval(p: &[f64], labels: &[bool], resamples: usize, seed: u64) -> Option<[f64; 2]> {
    let (mut ps, mut ys) = (vec![0.0; p.len()], vec![false; p.len()]);
    bootstrap(p.len(), resamples, seed, |idx| {
        for (k, &i) in idx.iter().enumerate() {
            (ps[k], ys[k]) = (p[i], labels[i]);
        }
        auc(&ps, &ys)
    })
}

/// Paired percentile bootstrap of AUC(b) − AUC(a): two scorings of the same rows (V of one
/// round against another's), resampled together, so the rows' own difficulty cancels. The
/// interval a claim "round N beats round 0" needs; the two AUCs' separate intervals overlap
/// long before the paired one reaches 0.
pub fn paired_auc_interval(
    a: &[f64],
    b: &[f64],
    labels: &[bool],
    resamples: usize,
    seed: u64,
) -> Option<[f64; 2]> {
    assert_eq!(a.len(), b.len(), "two scorings of the same rows");
    let n = a.len();
    let (mut pa, mut pb, mut ys) = (vec![0.0; n], vec![0.0; n], vec![false; n]);
    bootstrap(n, resamples, seed, |idx| {
        for (k, &i) in idx.iter().enumerate() {
            (pa[k], pb[k], ys[k]) = (a[i], b[i], labels[i]);
        }
        Some(auc(&pb, &ys)? - auc(&pa, &ys)?)
    })
}

/// The 2.5 % and 97.5 % percentiles of `stat` over `resamples` resamples (with replacement) of
/// n rows, seeded; resamples where `stat` is undefined are skipped.
fn bootstrap(
    n: usize,
    resamples: usize,
    seed: u64,
    mut stat: impl FnMut(&[usize]) -> Option<f64>,
) -> Option<[f64; 2]> {
    if resamples == 0 || n == 0 {
        return None;
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut idx = vec![0; n];
    let mut values = Vec::with_capacity(resamples);
    for _ in 0..resamples {
        for i in idx.iter_mut() {
            *i = rng.random_range(0..n);
        }
        if let Some(v) = stat(&idx) {
            values.push(v);
        }
    }
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let at =
        |q: f64| values[((q * (values.len() - 1) as f64).round() as usize).min(values.len() - 1)];
    Some([at(0.025), at(0.975)])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bootstrap_interval_brackets_the_auc_and_is_seeded() {
        let p: Vec<f64> = (0..40).map(|i| i as f64 / 40.0).collect();
        let y: Vec<bool> = (0..40).map(|i| (i * 7) % 10 < (i / 4)).collect();
        let m = v_metrics(&p, &y, 200, 3);
        let [lo, hi] = m.auc_ci95.unwrap();
        let a = m.auc.unwrap();
        assert!(lo <= a && a <= hi && lo < hi, "{lo} {a} {hi}");
        assert_eq!(auc_interval(&p, &y, 200, 3), m.auc_ci95);
        // A perfect ranking stays perfect in every resample.
        let y2: Vec<bool> = (0..40).map(|i| i >= 20).collect();
        assert_eq!(auc_interval(&p, &y2, 50, 1), Some([1.0, 1.0]));
        assert_eq!(auc_interval(&p, &y2, 0, 1), None);
    }

    #[test]
    fn paired_interval_of_a_scoring_against_itself_is_zero_and_signs_follow_b() {
        let p: Vec<f64> = (0..40).map(|i| i as f64 / 40.0).collect();
        let y: Vec<bool> = (0..40).map(|i| (i * 7) % 10 < (i / 4)).collect();
        assert_eq!(paired_auc_interval(&p, &p, &y, 100, 5), Some([0.0, 0.0]));
        // b ranks perfectly: every resample's AUC(b) is 1, so the difference is 1 − AUC(a) ≥ 0.
        let b: Vec<f64> = y.iter().map(|&t| if t { 1.0 } else { 0.0 }).collect();
        let [lo, hi] = paired_auc_interval(&p, &b, &y, 200, 5).unwrap();
        let gap = 1.0 - auc(&p, &y).unwrap();
        assert!(0.0 < lo && lo <= gap && gap <= hi, "{lo} {gap} {hi}");
        let [lo2, hi2] = paired_auc_interval(&b, &p, &y, 200, 5).unwrap();
        assert_eq!([lo2, hi2], [-hi, -lo], "the same resamples, swapped");
        assert_eq!(paired_auc_interval(&p, &b, &y, 0, 5), None);
    }
}
