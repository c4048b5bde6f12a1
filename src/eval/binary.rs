//! Binary-classification statistics of predicted probabilities against true labels: ROC AUC,
//! accuracy at a threshold and log-loss, as `llmrl score --judge` reports them.
//!
//! - AUC is the Mann–Whitney U statistic over the pooled ranks, U / (n₊ n₋), with tied scores
//!   given their average rank: the probability that a random positive outscores a random
//!   negative, a tie counting one half (sklearn's `roc_auc_score` gives the same number).
//!   Undefined (`None`) when either class is empty.
//! - Accuracy predicts positive when p ≥ threshold (0.5 in the CLI).
//! - Log-loss is the mean of −[y ln p + (1 − y) ln(1 − p)] with p clipped to [1e-15, 1 − 1e-15],
//!   so one confident mistake costs ln(1e15) ≈ 34.5 instead of infinity.
//!
//! Pure functions of slices; the caller pairs each probability with its label. Non-finite
//! probabilities are the caller's business (a judge's probabilities are finite by construction).

use serde::Serialize;

/// Where log-loss clips probabilities.
pub const LOG_LOSS_EPS: f64 = 1e-15;

/// The three numbers `llmrl score --judge` prints over the labelled rows.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct BinaryMetrics {
    /// Labelled rows.
    pub count: usize,
    pub positives: usize,
    /// `None` when all labels are the same.
    pub auc: Option<f64>,
    pub accuracy: f64,
    pub log_loss: f64,
}

/// All three metrics; `None` when there are no rows.
pub fn binary_metrics(probs: &[f64], labels: &[bool]) -> Option<BinaryMetrics> {
    assert_eq!(probs.len(), labels.len(), "one label per probability");
    if probs.is_empty() {
        return None;
    }
    Some(BinaryMetrics {
        count: probs.len(),
        positives: labels.iter().filter(|&&y| y).count(),
        auc: auc(probs, labels),
        accuracy: accuracy(probs, labels, 0.5),
        log_loss: log_loss(probs, labels),
    })
}

/// ROC AUC with ties as the Mann–Whitney average rank; `None` if a class is empty.
pub fn auc(scores: &[f64], labels: &[bool]) -> Option<f64> {
    assert_eq!(scores.len(), labels.len(), "one label per score");
    let n_pos = labels.iter().filter(|&&y| y).count();
    let n_neg = labels.len() - n_pos;
    if n_pos == 0 || n_neg == 0 {
        return None;
    }
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    // Ranks 1..=n; a run of equal scores at ranks i+1..=j all get (i+1+j)/2.
    let mut rank_sum_pos = 0.0;
    let mut i = 0;
    while i < order.len() {
        let mut j = i + 1;
        while j < order.len() && scores[order[j]] == scores[order[i]] {
            j += 1;
        }
        let avg_rank = (i + 1 + j) as f64 / 2.0;
        let pos_in_run = order[i..j].iter().filter(|&&k| labels[k]).count();
        rank_sum_pos += avg_rank * pos_in_run as f64;
        i = j;
    }
    let u = rank_sum_pos - (n_pos * (n_pos + 1)) as f64 / 2.0;
    Some(u / (n_pos * n_neg) as f64)
}

/// Fraction of rows where (p ≥ threshold) equals the label; 0 for no rows.
pub fn accuracy(probs: &[f64], labels: &[bool], threshold: f64) -> f64 {
    assert_eq!(probs.len(), labels.len(), "one label per probability");
    if probs.is_empty() {
        return 0.0;
    }
    let right = probs
        .iter()
        .zip(labels)
        .filter(|(&p, &y)| (p >= threshold) == y)
        .count();
    right as f64 / probs.len() as f64
}

/// Mean binary cross-entropy (natural log) with p clipped to [ε, 1 − ε]; 0 for no rows.
pub fn log_loss(probs: &[f64], labels: &[bool]) -> f64 {
    assert_eq!(probs.len(), labels.len(), "one label per probability");
    if probs.is_empty() {
        return 0.0;
    }
    let total: f64 = probs
        .iter()
        .zip(labels)
        .map(|(&p, &y)| {
            let p = p.clamp(LOG_LOSS_EPS, 1.0 - LOG_LOSS_EPS);
            -(if y { p.ln() } else { (1.0 - p).ln() })
        })
        .sum();
    total / probs.len() as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auc_counts_pairs_with_ties_as_halves() {
        // Positives 0.9, 0.4, 0.4; negatives 0.4, 0.1. Pairs (pos > neg): 0.9 beats both (2),
        // each 0.4 ties 0.4 (½) and beats 0.1 (1): 2 + 1.5 + 1.5 = 5 of 6.
        let s = [0.9, 0.4, 0.4, 0.4, 0.1];
        let y = [true, true, true, false, false];
        assert!((auc(&s, &y).unwrap() - 5.0 / 6.0).abs() < 1e-12);
        // Order of rows does not matter.
        let s2 = [0.4, 0.1, 0.9, 0.4, 0.4];
        let y2 = [false, false, true, true, true];
        assert!((auc(&s2, &y2).unwrap() - 5.0 / 6.0).abs() < 1e-12);
    }

    #[test]
    fn auc_extremes_and_undefined() {
        assert_eq!(auc(&[0.8, 0.2], &[true, false]), Some(1.0));
        assert_eq!(auc(&[0.2, 0.8], &[true, false]), Some(0.0));
        // All tied: a coin flip.
        assert_eq!(auc(&[0.5, 0.5, 0.5], &[true, false, false]), Some(0.5));
        assert_eq!(auc(&[0.5, 0.7], &[true, true]), None);
        assert_eq!(auc(&[], &[]), None);
    }

    #[test]
    fn accuracy_thresholds_at_half_inclusive() {
        let p = [0.5, 0.49, 0.9, 0.1];
        let y = [true, true, false, false];
        // 0.5 → positive (right), 0.49 → negative (wrong), 0.9 wrong, 0.1 right.
        assert_eq!(accuracy(&p, &y, 0.5), 0.5);
        assert_eq!(accuracy(&[], &[], 0.5), 0.0);
    }

    #[test]
    fn log_loss_by_hand_and_clipped() {
        let p = [0.8, 0.25];
        let y = [true, false];
        let want = -(0.8f64.ln() + 0.75f64.ln()) / 2.0;
        assert!((log_loss(&p, &y) - want).abs() < 1e-12);
        // A certain mistake is clipped, not infinite.
        let l = log_loss(&[0.0], &[true]);
        assert!((l - (1e15f64).ln()).abs() < 1e-9, "{l}");
    }

    #[test]
    fn metrics_bundle() {
        let m = binary_metrics(&[0.9, 0.2, 0.6], &[true, false, false]).unwrap();
        assert_eq!((m.count, m.positives), (3, 1));
        assert_eq!(m.auc, Some(1.0));
        assert!((m.accuracy - 2.0 / 3.0).abs() < 1e-12);
        assert!(binary_metrics(&[], &[]).is_none());
    }
}
