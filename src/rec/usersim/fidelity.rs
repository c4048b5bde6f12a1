//! Fidelity of the simulator on held-out ratings: does each voter, and the ensemble, tell the
//! ratings the user liked from those they did not? AUC from the continuous scores (ties count
//! one half), accuracy and F1 (the liked class positive) from the votes; a voter is measured on
//! the rows it voted on (its coverage is reported).

use serde::Serialize;

use super::sim::Feedback;
use super::voters::Vote;

/// One scorer's figures.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Figures {
    pub name: String,
    /// Rows it voted on.
    pub rows: usize,
    pub coverage: f64,
    pub auc: f64,
    pub accuracy: f64,
    pub f1: f64,
    pub liked_rate_predicted: f64,
}

/// Area under the ROC curve of `scores` for `labels` (Mann–Whitney, ties one half); NaN when a
/// class is missing.
pub fn auc(scores: &[f64], labels: &[bool]) -> f64 {
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|&i, &j| scores[i].total_cmp(&scores[j]));
    let (mut rank_sum, mut i) = (0.0, 0usize);
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && scores[idx[j + 1]] == scores[idx[i]] {
            j += 1;
        }
        let mid = (i + j) as f64 / 2.0 + 1.0; // mean 1-based rank of the tie block
        rank_sum += idx[i..=j].iter().filter(|&&k| labels[k]).count() as f64 * mid;
        i = j + 1;
    }
    let pos = labels.iter().filter(|&&y| y).count() as f64;
    let neg = labels.len() as f64 - pos;
    if pos == 0.0 || neg == 0.0 {
        return f64::NAN;
    }
    (rank_sum - pos * (pos + 1.0) / 2.0) / (pos * neg)
}

/// Accuracy and F1 of votes.
pub fn accuracy_f1(votes: &[bool], labels: &[bool]) -> (f64, f64) {
    let n = votes.len().max(1) as f64;
    let (mut tp, mut fp, mut fn_, mut right) = (0.0, 0.0, 0.0, 0.0);
    for (&v, &y) in votes.iter().zip(labels) {
        right += f64::from(u8::from(v == y));
        match (v, y) {
            (true, true) => tp += 1.0,
            (true, false) => fp += 1.0,
            (false, true) => fn_ += 1.0,
            _ => {}
        }
    }
    let f1 = if tp == 0.0 {
        0.0
    } else {
        2.0 * tp / (2.0 * tp + fp + fn_)
    };
    (right / n, f1)
}

fn figures(name: &str, rows: &[(bool, f64, bool)], total: usize) -> Figures {
    let s: Vec<f64> = rows.iter().map(|r| r.1).collect();
    let v: Vec<bool> = rows.iter().map(|r| r.0).collect();
    let y: Vec<bool> = rows.iter().map(|r| r.2).collect();
    let (accuracy, f1) = accuracy_f1(&v, &y);
    Figures {
        name: name.to_string(),
        rows: rows.len(),
        coverage: rows.len() as f64 / total.max(1) as f64,
        auc: auc(&s, &y),
        accuracy,
        f1,
        liked_rate_predicted: v.iter().filter(|&&x| x).count() as f64 / v.len().max(1) as f64,
    }
}

/// Figures of A, B, S, the ensemble, and the majority-class baseline, from feedback and truth.
pub fn measure(fb: &[Feedback], truth: &[bool]) -> Vec<Figures> {
    let n = fb.len();
    let voter = |pick: fn(&Feedback) -> &Vote| -> Vec<(bool, f64, bool)> {
        fb.iter()
            .zip(truth)
            .filter_map(|(f, &y)| pick(f).vote.map(|v| (v, pick(f).score, y)))
            .collect()
    };
    let ens: Vec<(bool, f64, bool)> = fb
        .iter()
        .zip(truth)
        .map(|(f, &y)| (f.like, f.score, y))
        .collect();
    let stacked: Vec<(bool, f64, bool)> = fb
        .iter()
        .zip(truth)
        .map(|(f, &y)| (f.stacked >= 0.5, f.stacked, y))
        .collect();
    let base_rate = truth.iter().filter(|&&y| y).count() as f64 / n.max(1) as f64;
    let majority: Vec<(bool, f64, bool)> =
        truth.iter().map(|&y| (base_rate >= 0.5, 0.5, y)).collect();
    vec![
        figures("A (keywords)", &voter(Feedback::vote_a), n),
        figures("B (embeddings)", &voter(Feedback::vote_b), n),
        figures("S (statistical)", &voter(Feedback::vote_s), n),
        figures("ensemble (majority vote; mean calibrated score)", &ens, n),
        figures("ensemble (stacked)", &stacked, n),
        figures("majority class", &majority, n),
    ]
}

/// The figures as a Markdown table.
pub fn markdown(figs: &[Figures]) -> String {
    let mut s = String::from(
        "| scorer | rows | coverage | AUC | accuracy | F1 | predicted like rate |\n\
         | --- | ---: | ---: | ---: | ---: | ---: | ---: |\n",
    );
    for f in figs {
        s += &format!(
            "| {} | {} | {:.3} | {:.4} | {:.4} | {:.4} | {:.3} |\n",
            f.name, f.rows, f.coverage, f.auc, f.accuracy, f.f1, f.liked_rate_predicted
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auc_by_hand() {
        // Positives at 0.9 and 0.4, negatives at 0.5 and 0.1: 3 of 4 pairs ordered → 0.75.
        assert_eq!(
            auc(&[0.9, 0.4, 0.5, 0.1], &[true, true, false, false]),
            0.75
        );
        // A tie between a positive and a negative counts one half.
        assert_eq!(auc(&[0.5, 0.5], &[true, false]), 0.5);
        assert!(auc(&[0.1, 0.2], &[true, true]).is_nan());
    }

    #[test]
    fn accuracy_and_f1_by_hand() {
        // tp 1, fp 1, fn 1, tn 1: accuracy 0.5, F1 = 2/(2+1+1) = 0.5.
        let (a, f) = accuracy_f1(&[true, true, false, false], &[true, false, true, false]);
        assert_eq!((a, f), (0.5, 0.5));
    }
}
