//! Classic rankers and the one evaluation every ranker goes through.
//!
//! A [`Ranker`] scores the whole catalogue for a history; [`evaluate`] turns the scores into a
//! ranking (exactly equal scores tie, see `metrics`), applies the history rule, and computes each
//! row's HR/NDCG@K. Popularity and SASRec (in `sasrec`) are rankers; a generative model's beam
//! list enters the same metrics through [`evaluate_rankings`].

use anyhow::Result;

use super::metrics::{self, HistoryRule, RowMetrics, Summary, TieRule, KS};
use super::sequences::Example;

/// Full-catalogue scores for a batch of histories (item indices `0..n_items`).
pub trait Ranker {
    fn n_items(&self) -> usize;
    /// One score per catalogue item for each history; higher is better.
    fn score(&self, histories: &[&[u32]]) -> Result<Vec<Vec<f32>>>;
}

/// Per-row metrics and their means.
#[derive(Clone, Debug)]
pub struct Evaluation {
    pub rows: Vec<RowMetrics>,
    pub summary: Summary,
}

/// Ranks the catalogue for each example (histories scored `batch` at a time) and scores the
/// rankings against the targets.
pub fn evaluate(
    ranker: &dyn Ranker,
    examples: &[Example],
    rule: HistoryRule,
    batch: usize,
) -> Result<Evaluation> {
    let depth = KS[KS.len() - 1];
    let mut rankings = Vec::with_capacity(examples.len());
    for chunk in examples.chunks(batch.max(1)) {
        let hist: Vec<&[u32]> = chunk.iter().map(|e| e.history.as_slice()).collect();
        for (scores, ex) in ranker.score(&hist)?.iter().zip(chunk) {
            // Deep enough that removing the history (rule Exclude) still leaves `depth` items.
            rankings.push(metrics::rank_scores(scores, depth + ex.history.len()));
        }
    }
    Ok(evaluate_rankings(&rankings, examples, rule))
}

/// Scores given rankings (one per example, best first, entries = tied sets) with the history rule
/// applied to each.
pub fn evaluate_rankings(
    rankings: &[Vec<Vec<u32>>],
    examples: &[Example],
    rule: HistoryRule,
) -> Evaluation {
    let rows: Vec<RowMetrics> = rankings
        .iter()
        .zip(examples)
        .map(|(r, ex)| {
            let r = metrics::apply_history_rule(r, &ex.history, rule);
            metrics::row_metrics(&r, ex.target, TieRule::Expected)
        })
        .collect();
    let summary = Summary::new(&rows);
    Evaluation { rows, summary }
}

/// Most popular first, whatever the history: each item's count as a target of the train split
/// (how often it was the next item in training). Equal counts tie.
#[derive(Clone, Debug)]
pub struct Popularity {
    counts: Vec<f32>,
}

impl Popularity {
    pub fn fit(train: &[Example], n_items: usize) -> Self {
        let mut counts = vec![0f32; n_items];
        for ex in train {
            if let Some(c) = counts.get_mut(ex.target as usize) {
                *c += 1.0;
            }
        }
        Self { counts }
    }
}

impl Ranker for Popularity {
    fn n_items(&self) -> usize {
        self.counts.len()
    }
    fn score(&self, histories: &[&[u32]]) -> Result<Vec<Vec<f32>>> {
        Ok(vec![self.counts.clone(); histories.len()])
    }
}

/// The classic rankers `llmrl rec baseline` runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum BaselineModel {
    Popularity,
    Sasrec,
}

impl BaselineModel {
    pub fn name(self) -> &'static str {
        match self {
            Self::Popularity => "popularity",
            Self::Sasrec => "sasrec",
        }
    }
}

/// Paired-bootstrap intervals of `a − b` for HR@K and NDCG@K at every K, keyed `HR@5` etc.
pub fn paired_differences(
    a: &Evaluation,
    b: &Evaluation,
    resamples: usize,
    seed: u64,
) -> Result<Vec<(String, metrics::Interval)>> {
    let mut out = Vec::new();
    for &k in &KS {
        for (name, ndcg) in [("HR", false), ("NDCG", true)] {
            let (x, y) = (
                metrics::column(&a.rows, ndcg, k),
                metrics::column(&b.rows, ndcg, k),
            );
            out.push((
                format!("{name}@{k}"),
                metrics::paired_bootstrap(&x, &y, resamples, seed)?,
            ));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ex(history: &[u32], target: u32) -> Example {
        Example {
            user: "u".into(),
            history: history.to_vec(),
            target,
            timestamp: 0.0,
        }
    }

    #[test]
    fn popularity_counts_train_targets_and_ties_equal_counts() {
        let train = [ex(&[0], 2), ex(&[0], 2), ex(&[1], 3), ex(&[2], 1)];
        let pop = Popularity::fit(&train, 4);
        assert_eq!(pop.score(&[&[]]).unwrap()[0], [0.0, 1.0, 2.0, 1.0]);
        // Ranking: [2], {1, 3}, [0]. Target 3 sits in the tie at places 1..2.
        let e = evaluate(&pop, &[ex(&[0], 3)], HistoryRule::Allow, 8).unwrap();
        assert_eq!(e.rows[0].hr[0], 0.0);
        assert_eq!(e.rows[0].hr[1], 1.0);
        let g = |r: f64| 1.0 / (r + 2.0).log2();
        assert!((e.rows[0].ndcg[1] - (g(1.0) + g(2.0)) / 2.0).abs() < 1e-12);
        // Excluding the history (item 2 here) lifts the tie to places 0..1.
        let e = evaluate(&pop, &[ex(&[2], 3)], HistoryRule::Exclude, 8).unwrap();
        assert_eq!(e.rows[0].hr[0], 0.5);
    }

    #[test]
    fn differences_cover_every_k() {
        let a = Evaluation {
            rows: vec![RowMetrics {
                hr: [1.0; 5],
                ndcg: [1.0; 5],
            }],
            summary: Summary::new(&[]),
        };
        let b = Evaluation {
            rows: vec![RowMetrics::default()],
            summary: Summary::new(&[]),
        };
        let d = paired_differences(&a, &b, 10, 0).unwrap();
        assert_eq!(d.len(), 10);
        assert_eq!(d[0].0, "HR@1");
        assert_eq!(d[3].1.mean, 1.0);
    }
}
