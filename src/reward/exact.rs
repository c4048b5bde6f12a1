//! Exact-match verifier: the completion (trimmed) equals one of the example's accepted answers.
//!
//! For tasks whose answers are short strings known in advance: classification labels, item ids
//! (Semantic-ID sequences in recommendation), or the leaves of a toy tree MDP. Correct → 1,
//! anything else → 0; `answer` is the trimmed completion, so distinct correct answers are counted.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Score, Verifier};
use crate::data::Example;

/// `[verifier] name = "exact_match"`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExactMatchConfig {
    /// Example field holding the accepted answer: a string or an array of strings.
    pub answers_field: String,
    /// Compare after trimming surrounding whitespace.
    pub trim: bool,
}

impl Default for ExactMatchConfig {
    fn default() -> Self {
        Self {
            answers_field: "answers".into(),
            trim: true,
        }
    }
}

pub struct ExactMatchVerifier {
    cfg: ExactMatchConfig,
}

impl ExactMatchVerifier {
    pub fn new(cfg: &ExactMatchConfig) -> anyhow::Result<Self> {
        Ok(Self { cfg: cfg.clone() })
    }

    fn accepted(&self, ex: &Example) -> Option<Vec<String>> {
        match ex.fields.get(&self.cfg.answers_field)? {
            Value::String(s) => Some(vec![s.clone()]),
            Value::Array(a) => a.iter().map(|v| v.as_str().map(str::to_string)).collect(),
            _ => None,
        }
    }
}

impl Verifier for ExactMatchVerifier {
    fn score(&self, ex: &Example, completion: &str) -> Score {
        let Some(accepted) = self.accepted(ex) else {
            return Score::zero(format!(
                "example has no string/array field `{}`",
                self.cfg.answers_field
            ));
        };
        let got = if self.cfg.trim {
            completion.trim()
        } else {
            completion
        };
        let correct = accepted.iter().any(|a| {
            if self.cfg.trim {
                a.trim() == got
            } else {
                a == got
            }
        });
        Score {
            value: if correct { 1.0 } else { 0.0 },
            correct,
            parts: vec![("correct".into(), if correct { 1.0 } else { 0.0 })],
            reason: if correct {
                "exact match".into()
            } else {
                format!("{got:?} is not an accepted answer")
            },
            answer: Some(got.to_string()),
        }
    }

    fn name(&self) -> &str {
        "exact_match"
    }

    fn validate(&self, ex: &Example) -> anyhow::Result<()> {
        self.accepted(ex).map(|_| ()).ok_or_else(|| {
            anyhow::anyhow!(
                "example {} has no field `{}` holding a string or an array of strings; \
                 set [verifier] answers_field to the field with the accepted answers",
                ex.id,
                self.cfg.answers_field
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ex(v: Value) -> Example {
        let mut e = Example::default();
        e.fields.insert("answers".into(), v);
        e
    }

    #[test]
    fn matches_any_accepted_answer() {
        let v = ExactMatchVerifier::new(&ExactMatchConfig::default()).unwrap();
        let e = ex(serde_json::json!(["aab", "bca"]));
        assert!(v.score(&e, " bca\n").correct);
        assert_eq!(v.score(&e, "bca").answer.as_deref(), Some("bca"));
        assert_eq!(v.score(&e, "bcb").value, 0.0);
        assert!(v.score(&ex(serde_json::json!("x")), "x").correct);
        // A malformed example scores 0 (and fails validation), never panics.
        assert_eq!(v.score(&ex(serde_json::json!(3)), "3").value, 0.0);
        assert!(v.validate(&ex(serde_json::json!(3))).is_err());
    }
}
