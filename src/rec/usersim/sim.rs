//! The simulator: the three voters and their ensemble.
//!
//! **Vote** (accuracy, F1): the majority of the votes cast. Every voter votes on an ordinary
//! history, which is the paper's majority of three; a logical voter abstains on the edge cases
//! ([`super::voters`]), and a tie of the two remaining votes goes to the statistical voter, which
//! always votes. **Score** (AUC): the mean of the voting voters' calibrated probabilities: each
//! voter's raw score goes through its own Platt scaling σ(a·s + b), fitted on the valid split's
//! ratings (S's on its logit), so the scores are comparable before they are averaged.
//!
//! **Stacked** (reported beside it): a logistic regression over the three calibrated logits (an
//! abstaining voter contributes 0), fitted on the same valid ratings: it learns how much each
//! voter is worth instead of weighting them equally.
//!
//! Every [`Feedback`] keeps all three votes with their reasons and which rule decided.

use std::collections::{BTreeMap, HashMap};

use anyhow::Result;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::ratings::{RatingSplit, Scale};
use super::stat::{Label, Mf, MfConfig, MfEpoch};
use super::table::ProfileTable;
use super::voters::{voter_a, voter_b, Past, Vote};
use crate::progress::Reporter;

/// σ(a·s + b): one voter's calibration.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Platt {
    pub a: f64,
    pub b: f64,
}

impl Default for Calibration {
    fn default() -> Self {
        Self {
            a: Platt::default(),
            b: Platt::default(),
            s: Platt::default(),
            stack: s_only(),
        }
    }
}

impl Default for Platt {
    fn default() -> Self {
        Self { a: 1.0, b: 0.0 }
    }
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

impl Platt {
    pub fn apply(&self, s: f64) -> f64 {
        sigmoid(self.a * s + self.b)
    }

    /// Maximum likelihood by Newton's method on (a, b), with a tiny ridge so a separable or
    /// constant score stays finite. Fewer than 2 rows, or one class only: the identity.
    pub fn fit(scores: &[f64], labels: &[bool]) -> Self {
        let pos = labels.iter().filter(|&&y| y).count();
        if scores.len() < 2 || pos == 0 || pos == labels.len() {
            return Self::default();
        }
        let (mut a, mut b) = (0.0f64, 0.0f64);
        for _ in 0..50 {
            let (mut ga, mut gb, mut haa, mut hab, mut hbb) = (1e-6 * a, 1e-6 * b, 1e-6, 0.0, 1e-6);
            for (&s, &y) in scores.iter().zip(labels) {
                let p = sigmoid(a * s + b);
                let e = p - f64::from(u8::from(y));
                let w = p * (1.0 - p);
                ga += e * s;
                gb += e;
                haa += w * s * s;
                hab += w * s;
                hbb += w;
            }
            let det = haa * hbb - hab * hab;
            if det.abs() < 1e-12 {
                break;
            }
            let (da, db) = ((hbb * ga - hab * gb) / det, (haa * gb - hab * ga) / det);
            a -= da;
            b -= db;
            if da.abs() + db.abs() < 1e-9 {
                break;
            }
        }
        Self { a, b }
    }
}

/// The three voters' calibrations.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Calibration {
    pub a: Platt,
    pub b: Platt,
    /// Applied to logit(p).
    pub s: Platt,
    /// Stacking weights on the calibrated logits of A, B, S, then the bias (all 0 but S's 1 by
    /// default: S alone).
    #[serde(default = "s_only")]
    pub stack: [f64; 4],
}

fn s_only() -> [f64; 4] {
    [0.0, 0.0, 1.0, 0.0]
}

impl Calibration {
    /// The calibrated logits of A, B (0 when abstaining) and S.
    pub fn features(&self, a: &Vote, b: &Vote, s: &Vote) -> [f64; 3] {
        let l = |p: &Platt, v: &Vote| {
            if v.vote.is_some() {
                p.a * v.score + p.b
            } else {
                0.0
            }
        };
        [
            l(&self.a, a),
            l(&self.b, b),
            self.s.a * logit(s.score) + self.s.b,
        ]
    }

    /// The stacked probability of a like.
    pub fn stacked(&self, a: &Vote, b: &Vote, s: &Vote) -> f64 {
        let x = self.features(a, b, s);
        let w = &self.stack;
        sigmoid(w[0] * x[0] + w[1] * x[1] + w[2] * x[2] + w[3])
    }
}

/// Logistic regression on 3 features plus a bias by Newton's method (tiny ridge); weights then
/// bias. One class only, or a singular system: S alone.
pub fn fit_stack(x: &[[f64; 3]], y: &[bool]) -> [f64; 4] {
    let pos = y.iter().filter(|&&v| v).count();
    if x.len() < 4 || pos == 0 || pos == y.len() {
        return s_only();
    }
    let mut w = [0.0f64; 4];
    for _ in 0..30 {
        let mut g = [0.0f64; 4];
        let mut h = [[0.0f64; 4]; 4];
        for (k, row) in h.iter_mut().enumerate() {
            row[k] = 1e-6;
            g[k] = 1e-6 * w[k];
        }
        for (xi, &yi) in x.iter().zip(y) {
            let f = [xi[0], xi[1], xi[2], 1.0];
            let p = sigmoid((0..4).map(|k| w[k] * f[k]).sum());
            let (e, v) = (p - f64::from(u8::from(yi)), p * (1.0 - p));
            for r in 0..4 {
                g[r] += e * f[r];
                for c in 0..4 {
                    h[r][c] += v * f[r] * f[c];
                }
            }
        }
        let Some(step) = solve4(h, g) else {
            return s_only();
        };
        for k in 0..4 {
            w[k] -= step[k];
        }
        if step.iter().map(|d| d.abs()).sum::<f64>() < 1e-9 {
            break;
        }
    }
    w
}

/// Solves a 4×4 system by Gaussian elimination with partial pivoting.
fn solve4(mut a: [[f64; 4]; 4], mut b: [f64; 4]) -> Option<[f64; 4]> {
    for c in 0..4 {
        let p = (c..4).max_by(|&i, &j| a[i][c].abs().total_cmp(&a[j][c].abs()))?;
        if a[p][c].abs() < 1e-12 {
            return None;
        }
        a.swap(c, p);
        b.swap(c, p);
        for r in c + 1..4 {
            let f = a[r][c] / a[c][c];
            let pivot = a[c];
            for (x, p) in a[r][c..].iter_mut().zip(&pivot[c..]) {
                *x -= f * p;
            }
            b[r] -= f * b[c];
        }
    }
    let mut x = [0.0; 4];
    for r in (0..4).rev() {
        x[r] = (b[r] - (r + 1..4).map(|k| a[r][k] * x[k]).sum::<f64>()) / a[r][r];
    }
    Some(x)
}

/// One simulated response.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Feedback {
    pub user: String,
    pub item: String,
    pub like: bool,
    /// The ensemble's continuous score in (0, 1).
    pub score: f64,
    /// The stacked probability of a like (module docs).
    pub stacked: f64,
    pub a: Vote,
    pub b: Vote,
    pub s: Vote,
    /// Which rule decided: `majority of 3`, `majority of 2`, `tie: S decides`, `S alone`.
    pub decided_by: String,
}

impl Feedback {
    pub fn vote_a(&self) -> &Vote {
        &self.a
    }
    pub fn vote_b(&self) -> &Vote {
        &self.b
    }
    pub fn vote_s(&self) -> &Vote {
        &self.s
    }
}

/// The fitted simulator.
pub struct Simulator {
    pub table: ProfileTable,
    pub stat: Mf,
    pub calib: Calibration,
}

fn logit(p: f64) -> f64 {
    let p = p.clamp(1e-6, 1.0 - 1e-6);
    (p / (1.0 - p)).ln()
}

/// What fitting reports.
#[derive(Clone, Debug, Serialize)]
pub struct FitReport {
    pub stat_epochs: Vec<MfEpoch>,
    pub calibration: Calibration,
    pub calibration_rows: usize,
}

/// `(item, liked)` histories by user, from ratings.
pub fn histories(
    ratings: &[&super::ratings::Rating],
    scale: &Scale,
) -> HashMap<String, Vec<(String, bool)>> {
    let mut m: HashMap<String, Vec<(String, bool)>> = HashMap::new();
    for r in ratings {
        m.entry(r.user.clone())
            .or_default()
            .push((r.item.clone(), scale.liked(r.rating)));
    }
    m
}

impl Simulator {
    /// Fits S on `split.train` (early-stopped on `split.valid`), then each voter's calibration
    /// on `split.valid` with the users' train ratings as their histories.
    pub fn fit(
        table: ProfileTable,
        split: &RatingSplit,
        scale: &Scale,
        mf: &MfConfig,
        reporter: &dyn Reporter,
    ) -> Result<(Self, FitReport)> {
        let label = |r: &super::ratings::Rating| Label {
            user: r.user.clone(),
            item: r.item.clone(),
            liked: scale.liked(r.rating),
        };
        let train: Vec<Label> = split.train.iter().map(label).collect();
        let valid: Vec<Label> = split.valid.iter().map(label).collect();
        let (stat, stat_epochs) = Mf::fit(&train, &valid, mf, reporter)?;
        let mut sim = Simulator {
            table,
            stat,
            calib: Calibration::default(),
        };
        let hist = histories(&split.train.iter().collect::<Vec<_>>(), scale);
        let raw = sim.answer_all(&split.valid, &hist);
        let y: Vec<bool> = split.valid.iter().map(|r| scale.liked(r.rating)).collect();
        let fit_on = |pick: fn(&Feedback) -> &Vote, f: fn(f64) -> f64| {
            let (s, l): (Vec<f64>, Vec<bool>) = raw
                .iter()
                .zip(&y)
                .filter(|(fb, _)| pick(fb).vote.is_some())
                .map(|(fb, &l)| (f(pick(fb).score), l))
                .unzip();
            Platt::fit(&s, &l)
        };
        sim.calib = Calibration {
            a: fit_on(Feedback::vote_a, |s| s),
            b: fit_on(Feedback::vote_b, |s| s),
            s: fit_on(Feedback::vote_s, logit),
            stack: s_only(),
        };
        let x: Vec<[f64; 3]> = raw
            .iter()
            .map(|f| sim.calib.features(&f.a, &f.b, &f.s))
            .collect();
        sim.calib.stack = fit_stack(&x, &y);
        let report = FitReport {
            stat_epochs,
            calibration: sim.calib,
            calibration_rows: split.valid.len(),
        };
        Ok((sim, report))
    }

    /// Feedback for each rating's (user, item), with the user's history from `hist`.
    pub fn answer_all(
        &self,
        rows: &[super::ratings::Rating],
        hist: &HashMap<String, Vec<(String, bool)>>,
    ) -> Vec<Feedback> {
        let none = Vec::new();
        rows.par_iter()
            .map(|r| self.feedback(&r.user, hist.get(&r.user).unwrap_or(&none), &r.item))
            .collect()
    }

    /// The simulated response of `user`, whose history is `hist` (item id, liked; oldest
    /// first), to `item`. History items missing from the keyword table are left out of the
    /// logical voters (the reason counts them); an item missing from it gets no logical vote.
    pub fn feedback(&self, user: &str, hist: &[(String, bool)], item: &str) -> Feedback {
        let past: Vec<Past> = hist
            .iter()
            .filter_map(|(h, liked)| {
                self.table.get(h).map(|i| Past {
                    item: i,
                    liked: *liked,
                })
            })
            .collect();
        let missing = hist.len() - past.len();
        let note = |mut v: Vote| {
            if missing > 0 && v.vote.is_some() {
                v.reason += &format!("; {missing} history items not in the keyword table");
            }
            v
        };
        let (a, b) = match self.table.get(item) {
            Some(c) => (
                note(voter_a(&self.table, &past, c)),
                note(voter_b(&self.table, &past, c)),
            ),
            None => (
                Vote::abstain("item not in the keyword table"),
                Vote::abstain("item not in the keyword table"),
            ),
        };
        let h: Vec<(&str, bool)> = hist.iter().map(|(i, l)| (i.as_str(), *l)).collect();
        let s = self.stat.vote(user, item, &h);
        let (like, score, decided_by) = ensemble(&a, &b, &s, &self.calib);
        let stacked = self.calib.stacked(&a, &b, &s);
        Feedback {
            user: user.to_string(),
            item: item.to_string(),
            like,
            score,
            stacked,
            a,
            b,
            s,
            decided_by,
        }
    }
}

/// The ensemble's vote, score and rule (module docs). S always votes.
pub fn ensemble(a: &Vote, b: &Vote, s: &Vote, c: &Calibration) -> (bool, f64, String) {
    let s_vote = s.vote.unwrap_or(s.score >= 0.5);
    let cast: Vec<bool> = [a.vote, b.vote, Some(s_vote)]
        .into_iter()
        .flatten()
        .collect();
    let likes = cast.iter().filter(|&&v| v).count();
    let n = cast.len();
    let (like, rule) = match n {
        1 => (s_vote, "S alone".to_string()),
        _ if 2 * likes == n => (s_vote, "tie: S decides".to_string()),
        _ => (2 * likes > n, format!("majority of {n}")),
    };
    let mut probs = vec![c.s.apply(logit(s.score))];
    if a.vote.is_some() {
        probs.push(c.a.apply(a.score));
    }
    if b.vote.is_some() {
        probs.push(c.b.apply(b.score));
    }
    let score = probs.iter().sum::<f64>() / probs.len() as f64;
    (like, score, rule)
}

/// Per-user summary of a split, for reports: how many users fall into each edge case.
pub fn edge_counts(hist: &HashMap<String, Vec<(String, bool)>>) -> BTreeMap<&'static str, usize> {
    let mut m = BTreeMap::new();
    for h in hist.values() {
        let l = h.iter().filter(|x| x.1).count();
        let k = match (l, h.len() - l) {
            (0, 0) => "no history",
            (0, _) => "no liked",
            (_, 0) => "no disliked",
            _ => "both",
        };
        *m.entry(k).or_insert(0) += 1;
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(vote: Option<bool>, score: f64) -> Vote {
        Vote {
            vote,
            score,
            reason: String::new(),
        }
    }

    #[test]
    fn the_ensemble_is_the_majority_of_the_votes_cast_and_s_breaks_ties() {
        let c = Calibration::default();
        let s_no = v(Some(false), 0.3);
        let (like, _, rule) = ensemble(&v(Some(true), 2.0), &v(Some(true), 0.1), &s_no, &c);
        assert_eq!((like, rule.as_str()), (true, "majority of 3"));
        let (like, _, rule) = ensemble(&v(Some(true), 2.0), &v(None, 0.0), &s_no, &c);
        assert_eq!((like, rule.as_str()), (false, "tie: S decides"));
        let (like, score, rule) = ensemble(&v(None, 0.0), &v(None, 0.0), &s_no, &c);
        assert_eq!((like, rule.as_str()), (false, "S alone"));
        // Alone, the identity calibration gives S's own probability back.
        assert!((score - 0.3).abs() < 1e-9);
    }

    #[test]
    fn the_ensemble_score_is_the_mean_calibrated_probability() {
        let c = Calibration::default(); // identity on A, B and logit(S)
        let (_, score, _) = ensemble(
            &v(Some(true), 0.0),
            &v(Some(false), 0.0),
            &v(Some(true), 0.8),
            &c,
        );
        // (σ(0) + σ(0) + 0.8) / 3.
        assert!((score - (0.5 + 0.5 + 0.8) / 3.0).abs() < 1e-9, "{score}");
    }

    #[test]
    fn platt_recovers_a_logistic_relation() {
        // Labels drawn exactly in proportion: at s = −1 one of four liked, at s = 1 three of four.
        let s = [-1.0, -1.0, -1.0, -1.0, 1.0, 1.0, 1.0, 1.0];
        let y = [true, false, false, false, true, true, true, false];
        let p = Platt::fit(&s, &y);
        assert!(
            (p.apply(1.0) - 0.75).abs() < 1e-3 && (p.apply(-1.0) - 0.25).abs() < 1e-3,
            "{p:?}"
        );
        // One class only: the identity.
        assert_eq!(Platt::fit(&[0.0, 1.0], &[true, true]), Platt::default());
    }

    #[test]
    fn stacking_learns_to_ignore_a_useless_voter() {
        // S's calibrated logit is ±1 and predicts as a Platt fit would (3 of 4); A's is noise
        // uncorrelated with the label; B abstains (0).
        let mut x = Vec::new();
        let mut y = Vec::new();
        for (k, s) in [-1.0, -1.0, -1.0, -1.0, 1.0, 1.0, 1.0, 1.0]
            .iter()
            .enumerate()
        {
            for a in [-1.0, 1.0] {
                x.push([a, 0.0, *s]);
                y.push([true, false, false, false, true, true, true, false][k]);
            }
        }
        let w = fit_stack(&x, &y);
        assert!(w[0].abs() < 1e-3, "{w:?}");
        assert!((w[2] - 3f64.ln()).abs() < 1e-3, "{w:?}"); // logit(0.75) per unit of S
        assert_eq!(fit_stack(&x[..2], &y[..2]), s_only());
    }
}
