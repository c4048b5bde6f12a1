//! Per-problem and aggregate evaluation statistics from n scored samples per problem.
//!
//! - pass@k: the unbiased estimator of Chen et al. 2021 ("Evaluating Large Language Models Trained
//!   on Code", §2.1), 1 − C(n−c, k)/C(n, k), as the numerically stable product
//!   1 − Π_{i=n−c+1}^{n} (1 − k/i) from their Figure 3; reported for k = 1, 2, 4, … ≤ n and n.
//! - mean@n: mean score and mean correctness over the n samples (mean correctness = pass@1).
//! - maj@n: the most frequent extracted `answer` wins (ties go to the answer seen first); the
//!   problem counts as solved if that answer's first sample is correct (as verl's maj@N).
//! - distinct correct answers: distinct `answer` strings among correct samples; for Countdown
//!   these are canonical equations, so it counts genuinely different solutions.
//! - distinct-n (Li et al. 2016), n = 1..4: distinct n-grams / all n-grams over whitespace tokens
//!   of the problem's completions pooled (n-grams do not cross completions); 0 when there are none.
//!
//! Aggregates are unweighted means over problems. Not here: confidence intervals or bootstrap.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::Serialize;

use crate::reward::Score;

/// Unbiased pass@k for `n` samples of which `c` are correct: the probability that at least one of
/// `k` samples drawn without replacement is correct. `c` is clamped to `n` and `k` to `1..=n`;
/// `n = 0` gives 0.
pub fn pass_at_k(n: usize, c: usize, k: usize) -> f64 {
    let c = c.min(n);
    let k = k.clamp(1, n.max(1));
    if n == 0 || c == 0 {
        return 0.0;
    }
    if n - c < k {
        return 1.0;
    }
    // C(n−c, k)/C(n, k) = Π_{i=n−c+1}^{n} (1 − k/i): no factorials, no overflow.
    let miss: f64 = (n - c + 1..=n).map(|i| 1.0 - k as f64 / i as f64).product();
    1.0 - miss
}

/// The k reported for n samples: powers of two up to n, and n itself.
pub fn report_ks(n: usize) -> Vec<usize> {
    let mut ks: Vec<usize> = std::iter::successors(Some(1usize), |k| k.checked_mul(2))
        .take_while(|&k| k <= n)
        .collect();
    if n > 0 && ks.last() != Some(&n) {
        ks.push(n);
    }
    ks
}

/// The n samples of one problem: `scores[i]` belongs to `completions[i]`.
#[derive(Clone, Debug, PartialEq)]
pub struct ProblemResult {
    pub id: String,
    pub scores: Vec<Score>,
    pub completions: Vec<String>,
}

/// Statistics of one problem (one line of a per-problem report).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ProblemStats {
    pub id: String,
    /// Number of samples.
    pub n: usize,
    pub num_correct: usize,
    /// pass@k for k in [`report_ks`]`(n)`.
    pub pass_at_k: BTreeMap<usize, f64>,
    pub mean_score: f64,
    pub mean_correct: f64,
    /// Share of samples the verifier gave format credit (its `format` part, else a score > 0),
    /// as training's `format_rate`.
    pub format_rate: f64,
    /// The majority answer, `None` if no sample had an answer.
    pub maj_answer: Option<String>,
    pub maj_correct: bool,
    pub distinct_correct: usize,
    /// distinct-1 … distinct-4.
    pub distinct_n: [f64; 4],
}

impl ProblemStats {
    pub fn from_result(r: &ProblemResult) -> Self {
        let n = r.scores.len();
        let num_correct = r.scores.iter().filter(|s| s.correct).count();
        let denom = n.max(1) as f64;
        let (maj_answer, maj_correct) = majority(&r.scores);
        let distinct_correct = r
            .scores
            .iter()
            .filter(|s| s.correct)
            .filter_map(|s| s.answer.as_deref())
            .collect::<HashSet<_>>()
            .len();
        ProblemStats {
            id: r.id.clone(),
            n,
            num_correct,
            pass_at_k: report_ks(n)
                .into_iter()
                .map(|k| (k, pass_at_k(n, num_correct, k)))
                .collect(),
            mean_score: r.scores.iter().map(|s| f64::from(s.value)).sum::<f64>() / denom,
            mean_correct: num_correct as f64 / denom,
            format_rate: r.scores.iter().filter(|s| s.formatted()).count() as f64 / denom,
            maj_answer,
            maj_correct,
            distinct_correct,
            distinct_n: [1, 2, 3, 4].map(|g| distinct_n(&r.completions, g)),
        }
    }
}

/// Most frequent answer (ties: first seen) and whether its first sample was correct.
fn majority(scores: &[Score]) -> (Option<String>, bool) {
    // answer → (votes, index of first sample)
    let mut votes: HashMap<&str, (usize, usize)> = HashMap::new();
    for (i, s) in scores.iter().enumerate() {
        if let Some(a) = s.answer.as_deref() {
            votes.entry(a).or_insert((0, i)).0 += 1;
        }
    }
    let best = votes
        .into_values()
        .max_by(|(va, ia), (vb, ib)| va.cmp(vb).then(ib.cmp(ia)));
    match best {
        Some((_, first)) => (scores[first].answer.clone(), scores[first].correct),
        None => (None, false),
    }
}

/// Distinct g-grams over all g-grams of whitespace tokens, pooled over `texts`.
fn distinct_n(texts: &[String], g: usize) -> f64 {
    let mut seen: HashSet<Vec<&str>> = HashSet::new();
    let mut total = 0usize;
    for t in texts {
        let tokens: Vec<&str> = t.split_whitespace().collect();
        for w in tokens.windows(g) {
            total += 1;
            seen.insert(w.to_vec());
        }
    }
    if total == 0 {
        0.0
    } else {
        seen.len() as f64 / total as f64
    }
}

/// Aggregate over problems: unweighted means of the per-problem numbers. This is what the eval
/// command writes as its summary JSON.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct EvalSummary {
    pub num_problems: usize,
    pub num_samples: usize,
    /// Smallest per-problem sample count; pass@k is reported for k in [`report_ks`] of it.
    pub min_samples: usize,
    pub pass_at_k: BTreeMap<usize, f64>,
    /// mean@n of the score (includes any format credit, e.g. Countdown's 0.1).
    pub mean_score: f64,
    /// mean@n of correctness (= pass@1 when every problem has the same n).
    pub mean_correct: f64,
    /// Share of samples with format credit (mean over problems).
    pub format_rate: f64,
    pub maj_at_n: f64,
    /// Distinct correct answers per problem, over all problems.
    pub mean_distinct_correct: f64,
    /// Distinct correct answers per solved problem (at least one correct sample); 0 when none
    /// is solved. Unlike the mean over all problems, it does not rise just because more
    /// problems are solved once.
    pub distinct_correct_per_solved: f64,
    pub distinct_n: [f64; 4],
}

pub fn summarize(problems: &[ProblemStats]) -> EvalSummary {
    let denom = problems.len().max(1) as f64;
    let mean = |f: &dyn Fn(&ProblemStats) -> f64| problems.iter().map(f).sum::<f64>() / denom;
    let min_samples = problems.iter().map(|p| p.n).min().unwrap_or(0);
    EvalSummary {
        num_problems: problems.len(),
        num_samples: problems.iter().map(|p| p.n).sum(),
        min_samples,
        // Recomputed from (n, c) so problems with more samples than the minimum still count.
        pass_at_k: report_ks(min_samples)
            .into_iter()
            .map(|k| (k, mean(&|p| pass_at_k(p.n, p.num_correct, k))))
            .collect(),
        mean_score: mean(&|p| p.mean_score),
        mean_correct: mean(&|p| p.mean_correct),
        format_rate: mean(&|p| p.format_rate),
        maj_at_n: mean(&|p| f64::from(u8::from(p.maj_correct))),
        mean_distinct_correct: mean(&|p| p.distinct_correct as f64),
        distinct_correct_per_solved: {
            let solved: Vec<_> = problems.iter().filter(|p| p.num_correct > 0).collect();
            // fold from +0.0: an empty f64 `sum()` is -0.0, which printed as "-0.0" in summaries.
            solved
                .iter()
                .fold(0.0, |acc, p| acc + p.distinct_correct as f64)
                / solved.len().max(1) as f64
        },
        distinct_n: [0, 1, 2, 3].map(|g| mean(&|p| p.distinct_n[g])),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    fn score(value: f32, correct: bool, answer: Option<&str>) -> Score {
        Score {
            value,
            correct,
            parts: vec![],
            reason: String::new(),
            answer: answer.map(str::to_string),
        }
    }

    #[test]
    fn pass_at_k_matches_hand_computed_values() {
        assert!(close(pass_at_k(5, 2, 1), 0.4));
        // 1 − C(3,2)/C(5,2) = 1 − 3/10
        assert!(close(pass_at_k(5, 2, 2), 0.7));
        // 1 − C(7,5)/C(10,5) = 1 − 21/252
        assert!(close(pass_at_k(10, 3, 5), 1.0 - 21.0 / 252.0));
        assert_eq!(pass_at_k(5, 0, 3), 0.0);
        // n − c < k: every draw of k contains a correct one.
        assert_eq!(pass_at_k(5, 4, 2), 1.0);
        assert_eq!(pass_at_k(5, 5, 1), 1.0);
        assert_eq!(pass_at_k(0, 0, 1), 0.0);
        // pass@1 is the fraction correct, even for large n.
        assert!(close(pass_at_k(100_000, 37, 1), 37.0 / 100_000.0));
        // Large n: finite, in [0, 1].
        let p = pass_at_k(1_000_000, 10, 1000);
        assert!(p.is_finite() && (0.0..=1.0).contains(&p));
    }

    #[test]
    fn report_ks_are_powers_of_two_and_n() {
        assert_eq!(report_ks(0), Vec::<usize>::new());
        assert_eq!(report_ks(1), vec![1]);
        assert_eq!(report_ks(5), vec![1, 2, 4, 5]);
        assert_eq!(report_ks(8), vec![1, 2, 4, 8]);
    }

    fn example_problem() -> ProblemResult {
        ProblemResult {
            id: "p".into(),
            scores: vec![
                score(1.0, true, Some("x")),
                score(0.1, false, Some("y")),
                score(0.1, false, Some("y")),
                score(1.0, true, Some("z")),
                score(0.0, false, None),
            ],
            completions: ["a b a", "a b", "", "  ", "c"].map(String::from).to_vec(),
        }
    }

    #[test]
    fn problem_stats_hand_computed() {
        let s = ProblemStats::from_result(&example_problem());
        assert_eq!((s.n, s.num_correct), (5, 2));
        let ks: Vec<usize> = s.pass_at_k.keys().copied().collect();
        assert_eq!(ks, vec![1, 2, 4, 5]);
        assert!(close(s.pass_at_k[&1], 0.4));
        assert!(close(s.pass_at_k[&2], 0.7));
        assert_eq!(s.pass_at_k[&4], 1.0);
        // f32 scores widened to f64, as `from_result` sums them: (1 + 0.1 + 0.1 + 1 + 0) / 5.
        let want: f64 = [1.0f32, 0.1, 0.1, 1.0, 0.0]
            .map(f64::from)
            .iter()
            .sum::<f64>()
            / 5.0;
        assert!(close(s.mean_score, want));
        assert!(close(s.mean_correct, 0.4));
        // "y" has two votes: the majority is wrong.
        assert_eq!((s.maj_answer.as_deref(), s.maj_correct), (Some("y"), false));
        assert_eq!(s.distinct_correct, 2);
        // tokens: [a b a], [a b], [], [], [c]
        // 1-grams a b a a b c: {a, b, c} = 3/6; 2-grams ab ba ab: 2/3; 3-grams aba: 1/1; none.
        assert_eq!(s.distinct_n, [0.5, 2.0 / 3.0, 1.0, 0.0]);
    }

    #[test]
    fn majority_ties_go_to_the_first_seen_answer() {
        let scores = vec![
            score(0.0, false, None),
            score(1.0, true, Some("b")),
            score(0.0, false, Some("a")),
            score(0.0, false, Some("a")),
            score(1.0, true, Some("b")),
        ];
        assert_eq!(majority(&scores), (Some("b".into()), true));
        assert_eq!(majority(&[score(0.0, false, None)]), (None, false));
        assert_eq!(majority(&[]), (None, false));
    }

    #[test]
    fn summary_averages_over_problems() {
        let a = ProblemStats::from_result(&example_problem());
        let b = ProblemStats::from_result(&ProblemResult {
            id: "q".into(),
            scores: vec![
                score(1.0, true, Some("w")),
                score(1.0, true, Some("w")),
                score(1.0, true, Some("w")),
                score(1.0, true, Some("w")),
            ],
            completions: ["u v", "u v", "u v", "u v"].map(String::from).to_vec(),
        });
        let s = summarize(&[a.clone(), b]);
        assert_eq!((s.num_problems, s.num_samples, s.min_samples), (2, 9, 4));
        let ks: Vec<usize> = s.pass_at_k.keys().copied().collect();
        assert_eq!(ks, vec![1, 2, 4]);
        assert!(close(s.pass_at_k[&1], (0.4 + 1.0) / 2.0));
        assert!(close(s.pass_at_k[&2], (0.7 + 1.0) / 2.0));
        assert!(close(s.mean_correct, 0.7));
        assert!(close(s.mean_score, (a.mean_score + 1.0) / 2.0));
        assert!(close(s.maj_at_n, 0.5));
        assert!(close(s.mean_distinct_correct, 1.5));
        assert!(
            close(s.distinct_correct_per_solved, 1.5),
            "both problems are solved"
        );
        // b: 1-grams u v ×4 = 2/8; 2-grams (u v) ×4 = 1/4; no 3- or 4-grams.
        assert!(close(s.distinct_n[0], (0.5 + 0.25) / 2.0));
        assert!(close(s.distinct_n[1], (2.0 / 3.0 + 0.25) / 2.0));
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(json["pass_at_k"]["4"], serde_json::json!(s.pass_at_k[&4]));

        let empty = summarize(&[]);
        assert_eq!((empty.num_problems, empty.mean_score), (0, 0.0));
        assert!(empty.pass_at_k.is_empty());
        // Nothing solved prints 0.0, not -0.0 (issue 14).
        let none = serde_json::to_string(&empty).unwrap();
        assert!(
            none.contains("\"distinct_correct_per_solved\":0.0"),
            "{none}"
        );
    }
}
