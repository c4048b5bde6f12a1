//! Judges: batched rewards that may hold a model.
//!
//! A [`Judge`] scores a batch of rows, each the example (all its fields), the prompt the policy
//! saw and the completion. Every [`Verifier`] is a judge through a blanket impl (its rows are
//! scored independently), so anything a recipe could name before still works unchanged; a judge
//! that runs a model ([`LabelJudge`]) batches its rows into one forward.
//!
//! [`JudgeConfig`] is the file-shaped choice, the verifier names plus `label`, tagged by `name`
//! like [`VerifierConfig`] and dispatched in one place, [`build_judge`]. Building a judge is
//! where its heavy work happens (starting an external program, loading a judge model), so a
//! caller builds it once, right after the recipe is resolved.
//!
//! ```toml
//! [judge]
//! name = "label"
//! model = "models/SmolLM2-135M-Instruct"
//! template_text = "Question: {question}\nAnswer: {completion}\nIs the answer correct?"
//! labels = ["Yes", "No"]
//! ```

use std::path::Path;

use anyhow::Result;
use candle_core::{DType, Device};
use serde::{Deserialize, Serialize};

use super::exact::ExactMatchConfig;
use super::{
    CountdownConfig, ExternalConfig, LabelConfig, LabelJudge, MathConfig, Score, Verifier,
    VerifierConfig,
};
use crate::data::Example;

/// Name of the [`Score::parts`] entry holding a judge's probability of the positive label; a
/// scorer computing AUC reads it (falling back to `Score::value`).
pub const P_POSITIVE: &str = "p_positive";

/// One row to judge.
#[derive(Clone, Copy, Debug)]
pub struct JudgeRow<'a> {
    pub example: &'a Example,
    /// The text the policy was prompted with (template rendered, chat-formatted when the recipe
    /// says so); empty when there is none, as for a file of given completions.
    pub prompt: &'a str,
    pub completion: &'a str,
}

/// Scores completions in batches. Like a verifier, total on model output: what a completion
/// says never makes `score_batch` fail (a malformed one scores 0 with a reason); an error means
/// the judge itself broke (a forward failed on the device).
pub trait Judge: Send + Sync {
    /// The name as written in configs (`label`, `countdown`, ...).
    fn name(&self) -> &str;

    /// Checks that an example carries what this judge reads; a dataset error, meant for load time.
    fn validate(&self, _example: &Example) -> Result<()> {
        Ok(())
    }

    /// One score per row, in row order.
    fn score_batch(&self, rows: &[JudgeRow<'_>]) -> Result<Vec<Score>>;

    /// The example's true binary label, for judges that know where one is kept (AUC, log-loss).
    fn truth(&self, _example: &Example) -> Option<bool> {
        None
    }
}

impl<V: Verifier + ?Sized> Judge for V {
    fn name(&self) -> &str {
        Verifier::name(self)
    }

    fn validate(&self, example: &Example) -> Result<()> {
        Verifier::validate(self, example)
    }

    fn score_batch(&self, rows: &[JudgeRow<'_>]) -> Result<Vec<Score>> {
        let pairs: Vec<(&Example, &str)> = rows.iter().map(|r| (r.example, r.completion)).collect();
        Ok(Verifier::score_batch(self, &pairs))
    }
}

/// Which judge to use: `name` picks the variant, the other keys are its config; unknown names
/// and keys are rejected with the valid ones listed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "name", rename_all = "snake_case", deny_unknown_fields)]
pub enum JudgeConfig {
    Countdown(CountdownConfig),
    Math(MathConfig),
    External(ExternalConfig),
    ExactMatch(ExactMatchConfig),
    Rec(crate::rec::reward::RecConfig),
    Usersim(crate::rec::usersim::judge::UsersimConfig),
    /// p(label) / (p(label) + p(other)) from a causal LM's next-token logits.
    Label(LabelConfig),
}

impl From<VerifierConfig> for JudgeConfig {
    fn from(v: VerifierConfig) -> Self {
        match v {
            VerifierConfig::Countdown(c) => JudgeConfig::Countdown(c),
            VerifierConfig::Math(c) => JudgeConfig::Math(c),
            VerifierConfig::External(c) => JudgeConfig::External(c),
            VerifierConfig::ExactMatch(c) => JudgeConfig::ExactMatch(c),
            VerifierConfig::Rec(c) => JudgeConfig::Rec(c),
            VerifierConfig::Usersim(c) => JudgeConfig::Usersim(c),
        }
    }
}

impl JudgeConfig {
    /// The verifier this judge is, if it is a pure one.
    pub fn verifier(&self) -> Option<VerifierConfig> {
        Some(match self {
            JudgeConfig::Countdown(c) => VerifierConfig::Countdown(c.clone()),
            JudgeConfig::Math(c) => VerifierConfig::Math(c.clone()),
            JudgeConfig::External(c) => VerifierConfig::External(c.clone()),
            JudgeConfig::ExactMatch(c) => VerifierConfig::ExactMatch(c.clone()),
            JudgeConfig::Rec(c) => VerifierConfig::Rec(c.clone()),
            JudgeConfig::Usersim(c) => VerifierConfig::Usersim(c.clone()),
            JudgeConfig::Label(_) => return None,
        })
    }

    /// Whether building it loads a model (so the caller needs a device).
    pub fn needs_model(&self) -> bool {
        matches!(self, JudgeConfig::Label(_))
    }

    /// Anchors relative paths at `base_dir` (the directory of the file the config came from):
    /// the external program's working directory (default: `base_dir` itself), and a label
    /// judge's model and template where such files exist there.
    pub fn resolve_paths(&mut self, base_dir: &Path) {
        match self {
            JudgeConfig::External(e) => {
                let dir = base_dir.join(e.working_dir.clone().unwrap_or_default());
                e.working_dir = Some(std::fs::canonicalize(&dir).unwrap_or(dir));
            }
            JudgeConfig::Label(l) => l.resolve_paths(base_dir),
            JudgeConfig::Rec(r) => r.resolve_paths(base_dir),
            JudgeConfig::Usersim(u) => u.resolve_paths(base_dir),
            _ => {}
        }
    }
}

/// Builds the judge a config describes, on `device` computing in `dtype` when it holds a model.
/// The only place judge variants are dispatched.
pub fn build_judge(cfg: &JudgeConfig, device: &Device, dtype: DType) -> Result<Box<dyn Judge>> {
    Ok(match cfg {
        JudgeConfig::Label(c) => Box::new(LabelJudge::new(c, device, dtype)?),
        other => {
            let v = other.verifier().expect("every other variant is a verifier");
            Box::new(super::build(&v)?)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row<'a>(ex: &'a Example, completion: &'a str) -> JudgeRow<'a> {
        JudgeRow {
            example: ex,
            prompt: "",
            completion,
        }
    }

    #[test]
    fn every_verifier_is_a_judge_with_the_same_scores() {
        let cfg: JudgeConfig = toml::from_str("name = \"countdown\"").unwrap();
        assert_eq!(
            cfg.verifier(),
            Some(toml::from_str("name = \"countdown\"").unwrap())
        );
        let judge = build_judge(&cfg, &Device::Cpu, DType::F32).unwrap();
        assert_eq!(judge.name(), "countdown");
        let v = super::super::build(&cfg.verifier().unwrap()).unwrap();
        let mut fields = serde_json::Map::new();
        fields.insert("nums".into(), serde_json::json!([1, 2, 3]));
        fields.insert("target".into(), 6.into());
        let ex = Example {
            id: "a".into(),
            fields,
        };
        let completions = ["<answer>1+2+3</answer>", "<answer>1+2</answer>", "no idea"];
        let rows: Vec<JudgeRow> = completions.iter().map(|c| row(&ex, c)).collect();
        let got = judge.score_batch(&rows).unwrap();
        let want: Vec<Score> = completions.iter().map(|c| v.score(&ex, c)).collect();
        assert_eq!(got, want);
        assert!(judge.truth(&ex).is_none());
    }

    #[test]
    fn config_lists_every_judge_on_an_unknown_name() {
        let err = toml::from_str::<JudgeConfig>("name = \"lable\"")
            .unwrap_err()
            .to_string();
        for valid in ["countdown", "math", "external", "exact_match", "label"] {
            assert!(err.contains(valid), "{err}");
        }
    }

    #[test]
    fn label_config_rejects_unknown_keys_listing_valid_ones() {
        let err = toml::from_str::<JudgeConfig>("name = \"label\"\nmodel = \"m\"\nlabel = \"Y\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field `label`"), "{err}");
        assert!(
            err.contains("labels") && err.contains("label_field"),
            "{err}"
        );
    }

    #[test]
    fn verifier_configs_convert_and_round_trip() {
        let v: VerifierConfig = toml::from_str("name = \"math\"").unwrap();
        let j = JudgeConfig::from(v.clone());
        assert_eq!(j.verifier(), Some(v));
        assert!(!j.needs_model());
        let l: JudgeConfig = toml::from_str("name = \"label\"\nmodel = \"m\"").unwrap();
        assert!(l.needs_model() && l.verifier().is_none());
    }

    #[test]
    fn external_working_dir_resolves_against_the_config_dir() {
        let dir = tempfile::tempdir().unwrap();
        let mut j: JudgeConfig =
            toml::from_str("name = \"external\"\ncommand = [\"cat\"]").unwrap();
        j.resolve_paths(dir.path());
        let JudgeConfig::External(e) = &j else {
            panic!("external")
        };
        assert_eq!(
            e.working_dir.as_deref(),
            Some(std::fs::canonicalize(dir.path()).unwrap().as_path())
        );
    }
}
