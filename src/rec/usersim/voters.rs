//! The two logical voters (arXiv 2412.16984, the official `infer_user_interaction`), pure
//! functions of the keyword table, a history and a candidate.
//!
//! The history splits into liked (H⁺) and disliked (H⁻) items. Each side is restricted to the
//! items sharing a category with the candidate when it has any (else the whole side is kept),
//! separately for H⁺ and H⁻, as the official code does.
//!
//! - **A** (keyword overlap): pros = Σ_{h∈H⁺} |pros(c) ∩ pros(h)|, cons = Σ_{h∈H⁻} |cons(c) ∩
//!   cons(h)|; vote = pros > cons (the official comparison of sums); score = pros − cons.
//! - **B** (embedding similarity): vote = max_{h∈H⁺} cos(e⁺(c), e⁺(h)) > max_{h∈H⁻} cos(e⁻(c),
//!   e⁻(h)); score = the difference of the two maxima.
//!
//! # Edge cases (our rule; the official code differs)
//!
//! A logical voter compares the two sides, so it **abstains** (`vote: None`, score 0, with the
//! reason) when a side is empty — no history, no liked item, or no disliked item — and when the
//! candidate has no keywords (A) or no embedded list (B). The ensemble then counts the votes
//! cast, and the statistical voter, which always votes, breaks ties ([`super::sim`]). The
//! official code instead answers *like* when the history holds no liked item (both logical
//! votes 1, so the majority is 1 whatever the statistical model says), *dislike* when it holds
//! no disliked item, and a coin flip with no history: a user who disliked everything would be
//! predicted to like the next item, and the statistical model is effectively skipped. Here the
//! statistical model, which has seen the user's logged ratings, speaks for the missing side.

use serde::{Deserialize, Serialize};

use super::table::ProfileTable;

/// One history entry: a table row and whether the user liked it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Past {
    pub item: usize,
    pub liked: bool,
}

/// One voter's answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Vote {
    /// `None`: abstained (see the module docs).
    pub vote: Option<bool>,
    /// Continuous score, larger = more likely liked (0 when abstaining).
    pub score: f64,
    pub reason: String,
}

impl Vote {
    pub fn abstain(reason: impl Into<String>) -> Self {
        Self {
            vote: None,
            score: 0.0,
            reason: reason.into(),
        }
    }
}

/// The two sides of a history against a candidate, each restricted to shared categories when
/// possible; `Err` is the abstention.
struct Sides {
    liked: Vec<usize>,
    disliked: Vec<usize>,
    /// Whether each side was restricted to shared categories.
    restricted: [bool; 2],
}

fn sides(t: &ProfileTable, hist: &[Past], cand: usize) -> Result<Sides, Vote> {
    let liked: Vec<usize> = hist.iter().filter(|p| p.liked).map(|p| p.item).collect();
    let disliked: Vec<usize> = hist.iter().filter(|p| !p.liked).map(|p| p.item).collect();
    match (liked.is_empty(), disliked.is_empty()) {
        (true, true) => return Err(Vote::abstain("no history")),
        (true, false) => return Err(Vote::abstain("no liked item in the history")),
        (false, true) => return Err(Vote::abstain("no disliked item in the history")),
        _ => {}
    }
    let cat = &t.category[cand];
    let restrict = |side: Vec<usize>| -> (Vec<usize>, bool) {
        let shared: Vec<usize> = side
            .iter()
            .copied()
            .filter(|&h| !t.category[h].is_disjoint(cat))
            .collect();
        if shared.is_empty() {
            (side, false)
        } else {
            (shared, true)
        }
    };
    let (liked, rl) = restrict(liked);
    let (disliked, rd) = restrict(disliked);
    Ok(Sides {
        liked,
        disliked,
        restricted: [rl, rd],
    })
}

fn scope(s: &Sides) -> String {
    let w = |r: bool| if r { "same-category" } else { "all" };
    format!(
        "{} {} liked, {} {} disliked",
        s.liked.len(),
        w(s.restricted[0]),
        s.disliked.len(),
        w(s.restricted[1])
    )
}

/// Logical voter A: keyword overlap.
pub fn voter_a(t: &ProfileTable, hist: &[Past], cand: usize) -> Vote {
    if t.pros[cand].is_empty() && t.cons[cand].is_empty() {
        return Vote::abstain("the candidate has no pros or cons keywords");
    }
    let s = match sides(t, hist, cand) {
        Ok(s) => s,
        Err(v) => return v,
    };
    let overlap = |side: &[usize], mine: &std::collections::HashSet<String>, pick: bool| {
        side.iter()
            .map(|&h| {
                let theirs = if pick { &t.pros[h] } else { &t.cons[h] };
                mine.intersection(theirs).count()
            })
            .sum::<usize>()
    };
    let pros = overlap(&s.liked, &t.pros[cand], true);
    let cons = overlap(&s.disliked, &t.cons[cand], false);
    Vote {
        vote: Some(pros > cons),
        score: pros as f64 - cons as f64,
        reason: format!("pros overlap {pros} vs cons overlap {cons} ({})", scope(&s)),
    }
}

fn dot(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(x, y)| (x * y) as f64).sum()
}

fn is_zero(a: &[f32]) -> bool {
    a.iter().all(|&x| x == 0.0)
}

/// Logical voter B: embedding similarity (rows are unit or zero, so a dot is the cosine).
pub fn voter_b(t: &ProfileTable, hist: &[Past], cand: usize) -> Vote {
    let (cp, cc) = (t.pros_row(cand), t.cons_row(cand));
    if is_zero(cp) && is_zero(cc) {
        return Vote::abstain("the candidate has no embedded pros or cons");
    }
    let s = match sides(t, hist, cand) {
        Ok(s) => s,
        Err(v) => return v,
    };
    let best = |side: &[usize], pros: bool| {
        side.iter()
            .map(|&h| {
                if pros {
                    dot(cp, t.pros_row(h))
                } else {
                    dot(cc, t.cons_row(h))
                }
            })
            .fold(f64::NEG_INFINITY, f64::max)
    };
    let (p, c) = (best(&s.liked, true), best(&s.disliked, false));
    Vote {
        vote: Some(p > c),
        score: p - c,
        reason: format!(
            "max pros cosine {p:.3} vs max cons cosine {c:.3} ({})",
            scope(&s)
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rec::usersim::profile::ItemProfile;

    /// Items 0..4: categories, pros and cons by hand; 2-d embeddings.
    pub(crate) fn table() -> ProfileTable {
        let p = |id: &str, cat: &[&str], pros: &[&str], cons: &[&str]| ItemProfile {
            item: id.into(),
            category: cat.iter().map(|s| s.to_string()).collect(),
            pros: pros.iter().map(|s| s.to_string()).collect(),
            cons: cons.iter().map(|s| s.to_string()).collect(),
            ..ItemProfile::default()
        };
        let profiles = vec![
            p("c", &["comedy"], &["funny", "warm"], &["silly"]),
            p("l1", &["comedy"], &["funny", "warm"], &["long"]),
            p("l2", &["drama"], &["funny"], &["slow"]),
            p("d1", &["comedy"], &["loud"], &["silly", "crude"]),
            p("e", &["horror"], &[], &[]),
        ];
        // Unit 2-d rows; item 4 (no keywords) is zero.
        let pros = vec![1.0, 0.0, 0.6, 0.8, 1.0, 0.0, 0.0, 1.0, 0.0, 0.0];
        let cons = vec![1.0, 0.0, 0.0, 1.0, 0.0, 1.0, 0.8, 0.6, 0.0, 0.0];
        ProfileTable::new(profiles, pros, cons, 2).unwrap()
    }

    fn past(item: usize, liked: bool) -> Past {
        Past { item, liked }
    }

    #[test]
    fn a_counts_overlaps_within_the_shared_category() {
        let t = table();
        // Liked l1 (comedy) and l2 (drama); disliked d1 (comedy). Candidate c is comedy, so
        // the liked side keeps only l1: |{funny, warm} ∩ {funny, warm}| = 2; the disliked side
        // d1: |{silly} ∩ {silly, crude}| = 1. 2 > 1: like, score 1.
        let v = voter_a(&t, &[past(1, true), past(2, true), past(3, false)], 0);
        assert_eq!((v.vote, v.score), (Some(true), 1.0));
        assert!(v.reason.contains("1 same-category liked"), "{}", v.reason);
    }

    #[test]
    fn a_side_without_a_shared_category_keeps_all_its_items() {
        let t = table();
        // Only l2 (drama) is liked: no comedy on that side, so all liked items count:
        // |{funny, warm} ∩ {funny}| = 1 vs 1: not a like (the official strict >).
        let v = voter_a(&t, &[past(2, true), past(3, false)], 0);
        assert_eq!((v.vote, v.score), (Some(false), 0.0));
        assert!(v.reason.contains("1 all liked"), "{}", v.reason);
    }

    #[test]
    fn b_compares_the_closest_liked_pros_with_the_closest_disliked_cons() {
        let t = table();
        // pros(c)·pros(l1) = 0.6, pros(c)·pros(l2) = 1.0 but l2 is drama (restricted out);
        // cons(c)·cons(d1) = 0.8. 0.6 < 0.8: no like, score −0.2.
        let v = voter_b(&t, &[past(1, true), past(2, true), past(3, false)], 0);
        assert_eq!(v.vote, Some(false));
        assert!((v.score + 0.2).abs() < 1e-6, "{}", v.score);
    }

    #[test]
    fn logical_voters_abstain_on_every_edge_case() {
        let t = table();
        for (hist, why) in [
            (vec![], "no history"),
            (vec![past(3, false)], "no liked item"),
            (vec![past(1, true)], "no disliked item"),
        ] {
            for v in [voter_a(&t, &hist, 0), voter_b(&t, &hist, 0)] {
                assert_eq!((v.vote, v.score), (None, 0.0));
                assert!(v.reason.contains(why), "{} vs {why}", v.reason);
            }
        }
        // A candidate without keywords or embeddings: no logical evidence either.
        let full = [past(1, true), past(3, false)];
        assert_eq!(voter_a(&t, &full, 4).vote, None);
        assert_eq!(voter_b(&t, &full, 4).vote, None);
    }
}
