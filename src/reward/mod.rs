//! Verifiers: pure, total functions from (example, completion) to a [`Score`].
//!
//! Training and evaluation call the same verifier. A verifier never fails on model output: a
//! malformed completion scores 0 with a `reason`. Problems with the *dataset* (a missing ground
//! truth field) are reported by [`Verifier::validate`], which the loader can call per example
//! before any GPU work; `score` still copes with them (score 0, reason) so it stays total.
//!
//! Variants are chosen by [`VerifierConfig`], an internally tagged enum read from the recipe
//! (`[verifier] name = "countdown"`) and dispatched in exactly one place, [`build`].
//!
//! A [`Judge`] is the batched, possibly model-backed generalization (`judge.rs`): it sees the
//! prompt, the completion and the example's fields for a batch of rows. Every verifier is a
//! judge; [`label::LabelJudge`] is the first that holds a model. [`JudgeConfig`] names them all.
//! Not here: exploration bonuses (i-MENTOR) and reward shaping, which live in `algo`.

pub mod countdown;
pub mod exact;
pub mod external;
pub mod judge;
pub mod label;
pub mod math;
mod score_file;

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::data::Example;

pub use countdown::{canonical_equation, CountdownConfig, CountdownVerifier, FormatRule};
pub use external::{ExternalConfig, ExternalVerifier};
pub use judge::{build_judge, Judge, JudgeConfig, JudgeRow, P_POSITIVE};
pub use label::{LabelConfig, LabelJudge};
pub use math::{MathConfig, MathVerifier};
pub use score_file::{score_file, ScoreSummary};

/// The outcome of verifying one completion.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Score {
    /// The reward: what training optimizes and evaluation averages.
    pub value: f32,
    /// Whether the answer is right (for accuracy, pass@k, maj@n); a format-only score is not.
    pub correct: bool,
    /// Named components, for logging (each verifier documents its own).
    pub parts: Vec<(String, f32)>,
    /// Human-readable why, e.g. "no <answer> tag" or "evaluates to 12, target 13".
    pub reason: String,
    /// The extracted answer, normalized so that equal answers compare equal as strings: used for
    /// majority voting and for counting distinct correct answers. `None` when nothing was found.
    pub answer: Option<String>,
}

impl Score {
    /// A zero score with a reason and no extracted answer.
    pub fn zero(reason: impl Into<String>) -> Self {
        Score {
            value: 0.0,
            correct: false,
            parts: Vec::new(),
            reason: reason.into(),
            answer: None,
        }
    }

    /// Whether the verifier gave format credit: its `format` part when it reports one, else
    /// any positive score (training's `format_rate` and evaluation's count this).
    pub fn formatted(&self) -> bool {
        self.parts
            .iter()
            .find(|(k, _)| k == "format")
            .map_or(self.value > 0.0, |(_, v)| *v > 0.0)
    }
}

/// Scores completions of one task. Implementations are pure functions of their inputs (the
/// external verifier delegates purity to the user's program) and never panic on model output.
pub trait Verifier: Send + Sync {
    fn score(&self, example: &Example, completion: &str) -> Score;

    /// The verifier's name as written in recipes (`countdown`, `math`, `external`, `exact_match`).
    fn name(&self) -> &str;

    /// Checks that an example carries what this verifier needs (ground truth fields of the right
    /// type). Errors here are dataset errors, meant to be raised at load time.
    fn validate(&self, _example: &Example) -> anyhow::Result<()> {
        Ok(())
    }

    /// Scores many rows, in row order. Verifiers are pure, so by default rows run in parallel;
    /// the external verifier spreads them over its worker processes instead.
    fn score_batch(&self, rows: &[(&Example, &str)]) -> Vec<Score> {
        use rayon::prelude::*;
        rows.par_iter().map(|(ex, c)| self.score(ex, c)).collect()
    }

    /// Scores one group, a prompt's completions, in group order. A reward that compares the
    /// members (a rank penalty) overrides this; by default each is scored alone, in parallel.
    fn score_group(&self, example: &Example, group: &[GroupMember<'_>]) -> Vec<Score> {
        use rayon::prelude::*;
        group
            .par_iter()
            .map(|m| self.score(example, m.completion))
            .collect()
    }
}

/// One completion of a group, as a group-level reward sees it.
#[derive(Clone, Copy, Debug)]
pub struct GroupMember<'a> {
    pub completion: &'a str,
    /// Its rank in the group, 0 = best: the beam order for a group of beams, the order by
    /// sequence log-prob (highest first, ties by sample order) for sampled completions.
    pub rank: usize,
}

/// A boxed verifier (what [`build`] returns) is a verifier, hence also a [`Judge`].
impl<V: Verifier + ?Sized> Verifier for Box<V> {
    // Qualified calls: `Judge` (in scope here) has methods of the same names.
    fn score(&self, example: &Example, completion: &str) -> Score {
        Verifier::score(&**self, example, completion)
    }
    fn name(&self) -> &str {
        Verifier::name(&**self)
    }
    fn validate(&self, example: &Example) -> anyhow::Result<()> {
        Verifier::validate(&**self, example)
    }
    fn score_batch(&self, rows: &[(&Example, &str)]) -> Vec<Score> {
        Verifier::score_batch(&**self, rows)
    }
    fn score_group(&self, example: &Example, group: &[GroupMember<'_>]) -> Vec<Score> {
        Verifier::score_group(&**self, example, group)
    }
}

/// Which verifier to use, as written in a recipe: `name` picks the variant and the remaining keys
/// are that variant's config; unknown names and unknown keys are rejected with the valid ones.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "name", rename_all = "snake_case", deny_unknown_fields)]
pub enum VerifierConfig {
    Countdown(CountdownConfig),
    Math(MathConfig),
    External(ExternalConfig),
    ExactMatch(exact::ExactMatchConfig),
    /// Recommendation: the completion's Semantic ID against the target item (`rec::reward`).
    Rec(crate::rec::reward::RecConfig),
    /// Recommendation: the LLM user simulator's response to the recommended item
    /// (`rec::usersim::judge`).
    Usersim(crate::rec::usersim::judge::UsersimConfig),
}

impl VerifierConfig {
    /// Anchors relative paths at `base_dir` (the recipe's directory): the external program's
    /// working directory, the recommendation verifiers' files, whose SID table defaults to
    /// `sid_index` (the recipe's constraint); checks what needs no reading of file contents.
    pub fn resolve_paths(
        &mut self,
        base_dir: &Path,
        sid_index: Option<&Path>,
    ) -> anyhow::Result<()> {
        match self {
            VerifierConfig::External(e) => {
                let dir = base_dir.join(e.working_dir.clone().unwrap_or_default());
                e.working_dir = Some(std::fs::canonicalize(&dir).unwrap_or(dir));
            }
            VerifierConfig::Rec(v) => {
                v.resolve_paths(base_dir);
                if v.sid_index.is_none() {
                    v.sid_index = sid_index.map(Path::to_path_buf);
                }
            }
            VerifierConfig::Usersim(v) => {
                v.resolve_paths(base_dir);
                if v.sid_index.is_none() {
                    v.sid_index = sid_index.map(Path::to_path_buf);
                }
                v.validate()?;
            }
            _ => {}
        }
        Ok(())
    }
}

/// Builds the verifier a config describes. The only place verifier variants are dispatched.
pub fn build(cfg: &VerifierConfig) -> anyhow::Result<Box<dyn Verifier>> {
    Ok(match cfg {
        VerifierConfig::Countdown(c) => Box::new(CountdownVerifier::new(c)?),
        VerifierConfig::Math(c) => Box::new(MathVerifier::new(c)?),
        VerifierConfig::External(c) => Box::new(ExternalVerifier::new(c)?),
        VerifierConfig::ExactMatch(c) => Box::new(exact::ExactMatchVerifier::new(c)?),
        VerifierConfig::Rec(c) => Box::new(crate::rec::reward::RecVerifier::new(c)?),
        VerifierConfig::Usersim(c) => {
            Box::new(crate::rec::usersim::judge::UserSimJudge::from_config(c)?)
        }
    })
}

/// Content of the last `<tag>...</tag>` pair in `text`, or `None` if there is none. An opening
/// tag without a closing tag after it does not count (the model was cut off).
pub(crate) fn last_tag_content<'a>(text: &'a str, tag: &str) -> Option<&'a str> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    // The last closing tag, then the last opening tag before it: "<a>1</a> <a>2</a>" → "2", and a
    // stray "<a>" after the final "</a>" is ignored.
    let end = text.rfind(&close)?;
    let start = text[..end].rfind(&open)? + open.len();
    Some(&text[start..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_tag_content_takes_the_last_complete_pair() {
        assert_eq!(last_tag_content("<a>1</a> <a>2</a>", "a"), Some("2"));
        assert_eq!(last_tag_content("<a>1</a> <a>2", "a"), Some("1"));
        assert_eq!(last_tag_content("<a></a>", "a"), Some(""));
        assert_eq!(last_tag_content("no tags", "a"), None);
        assert_eq!(last_tag_content("</a><a>", "a"), None);
    }

    #[test]
    fn config_parses_each_variant_with_defaults() {
        let c: VerifierConfig = toml::from_str("name = \"countdown\"").unwrap();
        assert_eq!(c, VerifierConfig::Countdown(CountdownConfig::default()));
        let c: VerifierConfig = toml::from_str("name = \"math\"\nformat_score = 0.1").unwrap();
        let VerifierConfig::Math(m) = c else {
            panic!("expected math")
        };
        assert_eq!(m.format_score, 0.1);
        assert_eq!(m.answer_field, "answer");
        let c: VerifierConfig =
            toml::from_str("name = \"external\"\ncommand = [\"python3\", \"v.py\"]").unwrap();
        let VerifierConfig::External(e) = c else {
            panic!("expected external")
        };
        assert_eq!(e.command, vec!["python3", "v.py"]);
        assert_eq!(e.timeout_s, 10.0);
    }

    #[test]
    fn config_rejects_unknown_key_listing_valid_ones() {
        let err = toml::from_str::<VerifierConfig>("name = \"countdown\"\nformat_scor = 0.1")
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field `format_scor`"), "{err}");
        assert!(err.contains("format_score"), "{err}");
        assert!(err.contains("nums_field"), "{err}");
    }

    #[test]
    fn config_rejects_unknown_name_listing_valid_ones() {
        let err = toml::from_str::<VerifierConfig>("name = \"gsm8k\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown variant `gsm8k`"), "{err}");
        for valid in ["countdown", "math", "external"] {
            assert!(err.contains(valid), "{err}");
        }
    }

    #[test]
    fn build_dispatches_by_name() {
        for (cfg, name) in [
            ("name = \"countdown\"", "countdown"),
            ("name = \"math\"", "math"),
            // A program that stays running (the verifier starts it when built).
            ("name = \"external\"\ncommand = [\"cat\"]", "external"),
        ] {
            let cfg: VerifierConfig = toml::from_str(cfg).unwrap();
            assert_eq!(Verifier::name(&build(&cfg).unwrap()), name);
        }
    }
}
