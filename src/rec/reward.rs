//! Recommendation rewards: a completion names one item by its Semantic ID, scored against the
//! example's target item. The verifier `name = "rec"`:
//!
//! ```toml
//! [verifier]
//! name = "rec"
//! reward = "rank"          # "hit" | "rank" | "prefix"
//! # sid_index = "index.json"  (default: [generation] constraint's)
//! ```
//!
//! It reads the example's `target` (the target item's SID string, `<a_1><b_2><c_3>`) and, when
//! present, `target_item` (the raw item id). With a SID table that holds collisions a SID stands
//! for the set of its items, and a hit is the target item being in the generated SID's set; with
//! no `target_item` (or no table) a hit is the generated SID equal to the target SID.
//!
//! - `hit`: 1 for a hit, else 0.
//! - `rank`: hit plus MiniOneRec's rank penalty, a group-level reward ([`Verifier::score_group`]):
//!   in a group that contains a hit, a miss at rank i (0-based) gets
//!   −(1/log2(i+2)) / Σ_{j<G} 1/log2(j+2) (G the group size), the hit nothing extra; in a group
//!   with no hit every completion scores 0. The rank is the beam order for beam groups and, for
//!   sampled groups, the position by sequence log-prob (highest first; ties by sample order) —
//!   the order a beam search would have returned them in, as far as a sample can say. Scored
//!   alone (no group), `rank` is `hit`.
//! - `prefix`: the share of SID levels matched from the first (coarse to fine, HSRL's credit);
//!   a hit through a collided item counts 1.
//!
//! Model output never errors: a completion that is not one SID (whitespace ignored), or names no
//! item of the table, scores 0 with the reason — also under `rank`, where it gets no penalty
//! (so `rank` is meant for generation under the SID constraint, where every completion is an
//! item). A missing or malformed `target` is a dataset error, raised by `validate` at load time.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::minionerec_csv::parse_sid;
use super::sid::SidTable;
use crate::data::Example;
use crate::reward::{GroupMember, Score, Verifier};

/// Which recommendation reward.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecReward {
    /// 1 for a hit, 0 otherwise.
    #[default]
    Hit,
    /// Hit plus MiniOneRec's normalized rank penalty for misses in a group that has a hit.
    Rank,
    /// Share of SID levels matched from the first.
    Prefix,
}

/// `[verifier] name = "rec"`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RecConfig {
    pub reward: RecReward,
    /// MiniOneRec index JSON of the catalogue (relative to the recipe); the recipe fills in
    /// `[generation] constraint`'s when this is unset. Without a table, SIDs are compared as
    /// strings and `target_item` is not used.
    pub sid_index: Option<PathBuf>,
    /// Field holding the target item's SID string.
    pub target_field: String,
    /// Field holding the target's raw item id (optional in each example).
    pub target_item_field: String,
}

impl Default for RecConfig {
    fn default() -> Self {
        Self {
            reward: RecReward::Hit,
            sid_index: None,
            target_field: "target".into(),
            target_item_field: "target_item".into(),
        }
    }
}

impl RecConfig {
    /// Anchors a relative `sid_index` at `base_dir` (the recipe's directory).
    pub fn resolve_paths(&mut self, base_dir: &std::path::Path) {
        if let Some(p) = &mut self.sid_index {
            if p.is_relative() {
                *p = base_dir.join(&*p);
            }
        }
    }
}

pub struct RecVerifier {
    cfg: RecConfig,
    table: Option<SidTable>,
}

/// What one completion is, against its target.
struct Match {
    hit: bool,
    /// Levels equal to the target's, counted from the first.
    matched: usize,
    levels: usize,
    sid: String,
}

impl RecVerifier {
    pub fn new(cfg: &RecConfig) -> Result<Self> {
        let table = match &cfg.sid_index {
            Some(p) => Some(SidTable::read_index(p).context("verifier.sid_index")?),
            None => None,
        };
        Ok(Self {
            cfg: cfg.clone(),
            table,
        })
    }

    /// The example's target SID tokens and target item id (if given).
    fn target(&self, ex: &Example) -> Result<(Vec<String>, Option<String>)> {
        let f = &self.cfg.target_field;
        let sid = match ex.fields.get(f) {
            Some(Value::String(s)) => parse_sid(s).map_err(anyhow::Error::msg)?,
            Some(other) => {
                bail!("field `{f}` should be a SID string like `<a_1><b_2>`, got {other}")
            }
            None => bail!(
                "no field `{f}` (the target item's SID); hint: set verifier.target_field, or map \
                 it with [data] fields"
            ),
        };
        let item = match ex.fields.get(&self.cfg.target_item_field) {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(Value::Number(n)) => Some(n.to_string()),
            Some(other) => bail!(
                "field `{}` should be an item id (string or number), got {other}",
                self.cfg.target_item_field
            ),
        };
        Ok((sid, item))
    }

    fn judge(&self, ex: &Example, completion: &str) -> std::result::Result<Match, Score> {
        let (target, item) = self
            .target(ex)
            .map_err(|e| Score::zero(format!("bad target: {e:#}")))?;
        let compact: String = completion.split_whitespace().collect();
        if compact.is_empty() {
            return Err(Score::zero("empty completion: no SID"));
        }
        let sid = parse_sid(&compact).map_err(|e| Score::zero(format!("not a SID: {e}")))?;
        let matched = sid.iter().zip(&target).take_while(|(a, b)| a == b).count();
        let same = sid == target;
        let hit = match &self.table {
            None => same,
            Some(t) => {
                let Some(codes) = t.codes_of_tokens(&sid) else {
                    return Err(Score::zero(format!(
                        "`{compact}` is not a SID of the table ({} levels)",
                        t.levels()
                    )));
                };
                let items = t.items_with(&codes);
                if items.is_empty() {
                    return Err(Score::zero(format!("`{compact}` names no item")));
                }
                match item.as_deref().and_then(|id| t.index_of(id)) {
                    Some(i) => items.contains(&i),
                    None => same,
                }
            }
        };
        Ok(Match {
            hit,
            matched,
            levels: target.len(),
            sid: sid.concat(),
        })
    }
}

impl Verifier for RecVerifier {
    fn name(&self) -> &str {
        "rec"
    }

    fn score(&self, example: &Example, completion: &str) -> Score {
        let m = match self.judge(example, completion) {
            Ok(m) => m,
            Err(zero) => return zero,
        };
        let hit = if m.hit { 1.0 } else { 0.0 };
        // `format`: a valid item (what the trainer's `format_rate` counts).
        let mut parts = vec![("format".to_string(), 1.0), ("hit".to_string(), hit)];
        let value = match self.cfg.reward {
            RecReward::Hit | RecReward::Rank => hit,
            RecReward::Prefix => {
                let share = if m.hit {
                    1.0
                } else {
                    m.matched as f32 / m.levels.max(1) as f32
                };
                parts.push(("prefix".to_string(), share));
                share
            }
        };
        Score {
            value,
            correct: m.hit,
            parts,
            reason: if m.hit {
                "hit".into()
            } else {
                format!("miss: {} of {} levels match", m.matched, m.levels)
            },
            answer: Some(m.sid),
        }
    }

    fn score_group(&self, example: &Example, group: &[GroupMember<'_>]) -> Vec<Score> {
        let mut scores: Vec<Score> = group
            .iter()
            .map(|m| self.score(example, m.completion))
            .collect();
        if self.cfg.reward == RecReward::Rank && scores.iter().any(|s| s.correct) {
            for (m, s) in group.iter().zip(scores.iter_mut()) {
                // A malformed completion (no answer) keeps its 0, see the module docs.
                if !s.correct && s.answer.is_some() {
                    let p = rank_penalty(m.rank, group.len());
                    s.value += p;
                    s.parts.push(("rank_penalty".into(), p));
                }
            }
        }
        scores
    }

    fn validate(&self, example: &Example) -> Result<()> {
        let (sid, item) = self.target(example)?;
        let Some(t) = &self.table else {
            return Ok(());
        };
        let sid_text = sid.concat();
        let Some(codes) = t.codes_of_tokens(&sid) else {
            bail!(
                "target `{sid_text}` does not fit the SID table ({} levels)",
                t.levels()
            );
        };
        if t.items_with(&codes).is_empty() {
            bail!("target `{sid_text}` is no item of the SID table; hint: the data and the index disagree");
        }
        if let Some(id) = item {
            let Some(i) = t.index_of(&id) else {
                bail!("target item `{id}` is not in the SID table");
            };
            if t.codes(i) != codes.as_slice() {
                bail!(
                    "target item `{id}` has SID {} in the table, but the example's target is `{sid_text}`",
                    t.sid_string(i)
                );
            }
        }
        Ok(())
    }
}

/// MiniOneRec's penalty of a miss at `rank` (0-based) in a group of `size`:
/// −(1/log2(rank+2)) / Σ_{j<size} 1/log2(j+2).
pub fn rank_penalty(rank: usize, size: usize) -> f32 {
    let w = |i: usize| 1.0 / ((i + 2) as f64).log2();
    let norm: f64 = (0..size.max(1)).map(w).sum();
    (-w(rank) / norm) as f32
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ex(target: &str, item: Option<&str>) -> Example {
        let mut fields = serde_json::Map::new();
        fields.insert("target".into(), json!(target));
        if let Some(i) = item {
            fields.insert("target_item".into(), json!(i));
        }
        Example {
            id: "u1".into(),
            fields,
        }
    }

    fn verifier(
        reward: RecReward,
        index: Option<&str>,
    ) -> (RecVerifier, Option<tempfile::TempDir>) {
        let dir = index.map(|text| {
            let d = tempfile::tempdir().unwrap();
            std::fs::write(d.path().join("index.json"), text).unwrap();
            d
        });
        let cfg = RecConfig {
            reward,
            sid_index: dir.as_ref().map(|d| d.path().join("index.json")),
            ..RecConfig::default()
        };
        (RecVerifier::new(&cfg).unwrap(), dir)
    }

    fn members<'a>(texts: &'a [&'a str]) -> Vec<GroupMember<'a>> {
        texts
            .iter()
            .enumerate()
            .map(|(rank, c)| GroupMember {
                completion: c,
                rank,
            })
            .collect()
    }

    #[test]
    fn rank_penalty_on_a_hand_worked_group_of_four() {
        // Σ_{j<4} 1/log2(j+2) = 1 + 0.6309298 + 0.5 + 0.4306766 = 2.5616063.
        // The hit is at rank 1; misses at ranks 0, 2, 3 get −1/2.5616063 = −0.3903800,
        // −0.5/2.5616063 = −0.1951900, −0.4306766/2.5616063 = −0.1681275.
        let (v, _) = verifier(RecReward::Rank, None);
        let e = ex("<a_1><b_2><c_3>", None);
        let group = [
            "<a_1><b_2><c_4>",
            "<a_1><b_2><c_3>",
            "<a_0><b_2><c_3>",
            "<a_9><b_9><c_9>",
        ];
        let got: Vec<f32> = v
            .score_group(&e, &members(&group))
            .iter()
            .map(|s| s.value)
            .collect();
        let want = [-0.390_380_05, 1.0, -0.195_190_02, -0.168_127_54];
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < 1e-6, "{got:?}");
        }
        // The same misses with no hit in the group: all 0.
        let nohit = [
            "<a_1><b_2><c_4>",
            "<a_0><b_2><c_3>",
            "<a_9><b_9><c_9>",
            "<a_2><b_2><c_2>",
        ];
        assert!(v
            .score_group(&e, &members(&nohit))
            .iter()
            .all(|s| s.value == 0.0));
        // A malformed completion keeps 0 in a group with a hit; alone, `rank` is `hit`.
        let mixed = ["<a_1><b_2><c_3>", "oops"];
        let s = v.score_group(&e, &members(&mixed));
        assert_eq!((s[0].value, s[1].value), (1.0, 0.0));
        assert!(s[1].reason.contains("not a SID"), "{}", s[1].reason);
        assert_eq!(v.score(&e, "<a_1><b_2><c_4>").value, 0.0);
        // Over every rank of a group of 16 (MiniOneRec's) the weights sum to −1.
        let total: f32 = (0..16).map(|i| rank_penalty(i, 16)).sum();
        assert!((total + 1.0).abs() < 1e-6, "{total}");
    }

    #[test]
    fn prefix_credit_counts_levels_from_the_first() {
        let (v, _) = verifier(RecReward::Prefix, None);
        let e = ex("<a_1><b_2><c_3>", None);
        let val = |c: &str| v.score(&e, c).value;
        assert_eq!(val("<a_1><b_2><c_3>"), 1.0);
        assert!((val("<a_1><b_2><c_9>") - 2.0 / 3.0).abs() < 1e-6);
        assert!((val("<a_1><b_0><c_3>") - 1.0 / 3.0).abs() < 1e-6);
        // Only a prefix counts: the last level alone matching is worth nothing.
        assert_eq!(val("<a_0><b_2><c_3>"), 0.0);
        // Whitespace between tokens (a decoder's spacing) is ignored.
        assert_eq!(val(" <a_1> <b_2><c_3>\n"), 1.0);
        let s = v.score(&e, "<a_1><c_2>");
        assert_eq!(s.value, 0.0);
        assert!(
            s.answer.is_none() && s.reason.contains("not a SID"),
            "{s:?}"
        );
        assert_eq!(v.score(&e, "").reason, "empty completion: no SID");
    }

    #[test]
    fn hit_with_collisions_is_membership_in_the_item_set() {
        // Items 10 and 11 share <a_1><b_1>; 12 is alone.
        let index =
            r#"{"10": ["<a_1>", "<b_1>"], "11": ["<a_1>", "<b_1>"], "12": ["<a_0>", "<b_1>"]}"#;
        let (v, _d) = verifier(RecReward::Hit, Some(index));
        let e = ex("<a_1><b_1>", Some("11"));
        v.validate(&e).unwrap();
        assert_eq!(v.score(&e, "<a_1><b_1>").value, 1.0);
        assert_eq!(v.score(&e, "<a_0><b_1>").value, 0.0);
        // A well-formed SID that names no item is invalid: 0 with the reason.
        let s = v.score(&e, "<a_0><b_0>");
        assert!(
            s.value == 0.0 && s.reason.contains("names no item"),
            "{s:?}"
        );
        // Numeric item ids work as strings.
        let mut n = ex("<a_0><b_1>", None);
        n.fields.insert("target_item".into(), json!(12));
        v.validate(&n).unwrap();
        assert_eq!(v.score(&n, "<a_0><b_1>").value, 1.0);
        // Dataset errors are caught by validate, naming the problem.
        let bad = v
            .validate(&ex("<a_0><b_1>", Some("10")))
            .unwrap_err()
            .to_string();
        assert!(bad.contains("has SID <a_1><b_1>"), "{bad}");
        assert!(v.validate(&ex("<a_1><b_1>", Some("99"))).is_err());
        assert!(v.validate(&ex("<a_1><b_0>", None)).is_err());
        let mut missing = ex("<a_1><b_1>", None);
        missing.fields.remove("target");
        let msg = format!("{:#}", v.validate(&missing).unwrap_err());
        assert!(msg.contains("no field `target`"), "{msg}");
        // score stays total on a bad example.
        assert_eq!(v.score(&missing, "<a_1><b_1>").value, 0.0);
    }

    #[test]
    fn config_parses_as_a_verifier() {
        let c: crate::reward::VerifierConfig =
            toml::from_str("name = \"rec\"\nreward = \"prefix\"").unwrap();
        let crate::reward::VerifierConfig::Rec(r) = c else {
            panic!("rec")
        };
        assert_eq!(r.reward, RecReward::Prefix);
        assert!(toml::from_str::<crate::reward::VerifierConfig>(
            "name = \"rec\"\nreward = \"ndcg\""
        )
        .is_err());
    }
}
