//! The label-probability judge: a causal LM asked a question about the completion, scored by how
//! much more it expects one label word than the other as the next token.
//!
//! ```toml
//! [judge]
//! name = "label"
//! model = "models/SmolLM2-135M-Instruct"    # as [model] source: dir, .gguf or hub id
//! template = "judge.txt"                    # or template_text = "... {completion} ..."
//! chat = true                               # wrap in the model's chat template
//! labels = ["Yes", "No"]                    # the two label words
//! positive = "Yes"                          # default: the first
//! label_field = "label"                     # where a row's true label is, if anywhere
//! reward = "positive"                       # or "true_label": p(the row's true label)
//! batch_size = 8
//! ```
//! The template has the prompt-template syntax of `data/prompt.rs` (`{field}` slots); its slots
//! are the example's fields plus `{completion}`, the text judged (and `{_prompt}`, the policy's
//! prompt). The rendered text is wrapped in the chat template when `chat` (with the assistant
//! turn opened), tokenized, and run through the model once: prefill only, without an autograd
//! graph, rows left-padded into batches so every row's answer position is the last slot.
//!
//! A label's token is the first token of tokenize(prompt + label) past its common prefix with
//! tokenize(prompt): the label *in context*, because byte-level BPE tokenizes a word differently
//! after a space or a newline than alone. When the prompt's last token merges with the label
//! (a template ending in a space: ":", " " + "Yes" → ":", " Yes") the answer position moves back
//! to the end of the common prefix, as the model would have produced it. Two labels with the
//! same first token cannot be told apart: an error naming both and the token, raised when the
//! judge is built (on a probe rendering of the template) so it comes before any scoring.
//!
//! The score is p = p(positive) / (p(positive) + p(negative)) = σ(logit₊ − logit₋), the two
//! labels' share of the next-token distribution. `parts` keep the raw numbers: `p_positive`,
//! `logit_positive`, `logit_negative`, and each label's probability over the full vocabulary
//! (`p_vocab_positive`, `p_vocab_negative`), which says how much of its mass the model put on
//! either label at all. `answer` is the label predicted (p ≥ 0.5); `correct` says whether it
//! matches the row's true label when there is one.
//!
//! True labels are read from `label_field`: a label word (case, surrounding space and a final
//! `.`/`!` ignored, so "Yes." is "yes"), true/false, or 1/0 (number or string); null or missing
//! means unlabelled. Anything else is a dataset error from [`Judge::validate`].

use std::path::Path;

use anyhow::{bail, ensure, Context, Result};
use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::judge::{Judge, JudgeRow, P_POSITIVE};
use super::Score;
use crate::data::{Example, PromptTemplate};
use crate::model::{self, Decoder, Mode, ModelSource, Positions, Tokenizer};
use crate::prompting::Prompter;

/// `[judge] name = "label"`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabelConfig {
    /// The judge model: a local HF directory, a `.gguf` file or a hub id (`org/name`).
    pub model: String,
    /// A prompt template file (`{field}` slots, `{completion}` for the completion)...
    #[serde(default)]
    pub template: Option<String>,
    /// ...or its text inline. Exactly one of the two.
    #[serde(default)]
    pub template_text: Option<String>,
    /// Wrap the rendered text in the model's chat template, assistant turn opened.
    #[serde(default = "yes")]
    pub chat: bool,
    /// System message for the chat template (overrides the template's own).
    #[serde(default)]
    pub system: Option<String>,
    /// The two label words, e.g. `["Yes", "No"]`.
    #[serde(default = "default_labels")]
    pub labels: Vec<String>,
    /// Which label is positive (its probability is the score); default the first.
    #[serde(default)]
    pub positive: Option<String>,
    /// Example field holding the true label (optional in data; needed for `reward = "true_label"`).
    #[serde(default = "default_label_field")]
    pub label_field: String,
    #[serde(default)]
    pub reward: LabelReward,
    /// Rows per forward.
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
}

/// What the judge's score (`Score::value`) is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LabelReward {
    /// p(positive label): "how much the judge says yes".
    #[default]
    Positive,
    /// p(the row's true label): rewards agreeing with the data (every row must carry a label).
    TrueLabel,
}

fn yes() -> bool {
    true
}

fn default_labels() -> Vec<String> {
    vec!["Yes".into(), "No".into()]
}

fn default_label_field() -> String {
    "label".into()
}

fn default_batch_size() -> usize {
    8
}

impl LabelConfig {
    /// Anchors the model and template paths at `base_dir` where such paths exist there.
    pub fn resolve_paths(&mut self, base_dir: &Path) {
        let rel = base_dir.join(&self.model);
        if rel.exists() {
            self.model = rel.to_string_lossy().into_owned();
        }
        if let Some(t) = &self.template {
            let rel = base_dir.join(t);
            if rel.is_file() {
                self.template = Some(rel.to_string_lossy().into_owned());
            }
        }
    }

    /// The labels as (positive, negative), checked.
    fn ordered_labels(&self) -> Result<[String; 2]> {
        ensure!(
            self.labels.len() == 2,
            "[judge] labels = {:?} must name exactly two label words, e.g. [\"Yes\", \"No\"]",
            self.labels
        );
        ensure!(
            self.labels.iter().all(|l| !l.is_empty()),
            "[judge] labels = {:?}: a label word is empty",
            self.labels
        );
        ensure!(
            normalize(&self.labels[0]) != normalize(&self.labels[1]),
            "[judge] labels = {:?} are the same word",
            self.labels
        );
        let (a, b) = (self.labels[0].clone(), self.labels[1].clone());
        Ok(match self.positive.as_deref() {
            None => [a, b],
            Some(p) if p == a => [a, b],
            Some(p) if p == b => [b, a],
            Some(p) => bail!(
                "[judge] positive = {p:?} is not one of labels = {:?}",
                self.labels
            ),
        })
    }

    /// The prompt template, from the file or the inline text.
    fn load_template(&self) -> Result<PromptTemplate> {
        match (&self.template, &self.template_text) {
            (Some(path), None) => {
                PromptTemplate::load(path, &crate::data::prompt::builtin_prompts_dir())
                    .context("[judge] template")
            }
            (None, Some(text)) => PromptTemplate::parse("[judge] template_text", text, None),
            _ => bail!(
                "[judge] needs exactly one of `template` (a .txt file) and `template_text` \
                 (the text inline), with a {{completion}} slot for the completion judged"
            ),
        }
    }
}

pub struct LabelJudge {
    cfg: LabelConfig,
    /// (positive, negative).
    labels: [String; 2],
    template: PromptTemplate,
    decoder: Decoder,
    tokenizer: Tokenizer,
    device: Device,
}

/// What one row puts through the model.
struct Prepared {
    /// Prompt ids up to the answer position (the common prefix with each label appended).
    ids: Vec<u32>,
    /// Token ids of the (positive, negative) label at the answer position.
    label_ids: [u32; 2],
}

impl LabelJudge {
    /// Checks the config (before any weights are read), loads the judge model on `device`
    /// computing in `dtype`, and checks on a probe rendering that the labels' tokens differ.
    pub fn new(cfg: &LabelConfig, device: &Device, dtype: DType) -> Result<Self> {
        let labels = cfg.ordered_labels()?;
        let template = cfg.load_template()?;
        ensure!(
            (1..=4096).contains(&cfg.batch_size),
            "[judge] batch_size = {} must be between 1 and 4096",
            cfg.batch_size
        );
        let src = ModelSource::parse(&cfg.model).context("[judge] model")?;
        let m = model::load(&src, device, dtype)
            .with_context(|| format!("[judge] loading model {src}"))?;
        let decoder = Decoder::new(&m.config, &m.params, Mode::Infer)?;
        let judge = LabelJudge {
            cfg: cfg.clone(),
            labels,
            template,
            decoder,
            tokenizer: m.tokenizer,
            device: device.clone(),
        };
        // Every slot filled with a placeholder: the labels meet the template's fixed tail here
        // as they will in every row, so a clash is found now rather than row by row.
        let mut probe = Example {
            id: "probe".into(),
            fields: Default::default(),
        };
        for slot in judge.template.slots() {
            probe.fields.insert(slot.into(), Value::from("x"));
        }
        let text = judge.prompt_text(&probe, "", "x").context(
            "[judge] rendering the template (chat = true needs the model's chat template)",
        )?;
        judge
            .prepare(&text)
            .map_err(anyhow::Error::msg)
            .with_context(|| format!("[judge] labels {:?}", judge.cfg.labels))?;
        Ok(judge)
    }

    /// The full text the judge model reads for one row.
    fn prompt_text(&self, ex: &Example, prompt: &str, completion: &str) -> Result<String> {
        let mut ex = ex.clone();
        ex.fields.insert("completion".into(), completion.into());
        if !prompt.is_empty() && !ex.fields.contains_key("_prompt") {
            ex.fields.insert("_prompt".into(), prompt.into());
        }
        let prompter = Prompter {
            template: &self.template,
            chat: self.cfg.chat,
            system: self.cfg.system.as_deref(),
        };
        prompter.text(&self.tokenizer, &ex)
    }

    /// Token ids of `text` up to the answer position and each label's token there; an error
    /// (as text) when the labels cannot be told apart after this prompt.
    fn prepare(&self, text: &str) -> std::result::Result<Prepared, String> {
        // As `Prompter::ids`: a chat template writes its own special tokens.
        let add_special = !self.cfg.chat;
        let encode = |s: &str| {
            self.tokenizer
                .encode(s, add_special)
                .map_err(|e| e.to_string())
        };
        let base = encode(text)?;
        let mut at = [0usize; 2];
        let mut ids = [0u32; 2];
        for (i, label) in self.labels.iter().enumerate() {
            let full = encode(&format!("{text}{label}"))?;
            let k = base.iter().zip(&full).take_while(|(a, b)| a == b).count();
            let Some(&id) = full.get(k) else {
                return Err(format!("label {label:?} adds no token after the prompt"));
            };
            (at[i], ids[i]) = (k, id);
        }
        let [pos, neg] = &self.labels;
        if at[0] != at[1] {
            return Err(format!(
                "labels {pos:?} and {neg:?} start at different tokens of the prompt's end \
                 (one merges with its last token); hint: end the template with a character \
                 neither label merges with, such as a newline"
            ));
        }
        if at[0] == 0 {
            return Err("the judge prompt is empty".into());
        }
        if ids[0] == ids[1] {
            let token = self
                .tokenizer
                .inner()
                .id_to_token(ids[0])
                .unwrap_or_default();
            return Err(format!(
                "labels {pos:?} and {neg:?} share their first token {token:?} (id {}) after \
                 the prompt, so their probabilities cannot be told apart; hint: choose label \
                 words that start differently (e.g. \"Yes\"/\"No\" without a leading space)",
                ids[0]
            ));
        }
        Ok(Prepared {
            ids: base[..at[0]].to_vec(),
            label_ids: ids,
        })
    }

    /// Next-token logits at the last position of each row, (positive, negative) label columns
    /// and the log-sum-exp over the vocabulary; rows ragged, left-padded, one forward.
    fn label_logits(&self, rows: &[&Prepared]) -> Result<Vec<[f32; 3]>> {
        let t = rows.iter().map(|r| r.ids.len()).max().unwrap_or(0);
        let pad = self.tokenizer.pad_id();
        let (mut ids, mut valid) = (Vec::with_capacity(rows.len() * t), Vec::new());
        for r in rows {
            let padn = t - r.ids.len();
            ids.extend(std::iter::repeat_n(pad, padn).chain(r.ids.iter().copied()));
            valid.push((0..t).map(|i| i >= padn).collect::<Vec<_>>());
        }
        let pos = Positions::build(&[], &valid, &self.device)?;
        let x = Tensor::from_vec(ids, (rows.len(), t), &self.device)?; // (B, T)
        let hidden = self.decoder.forward_hidden(&x, &pos, None)?; // (B, T, H)
        let last = hidden.narrow(1, t - 1, 1)?.squeeze(1)?; // (B, H)
        let logits: Vec<Vec<f32>> = self
            .decoder
            .logits(&last)? // (B, V)
            .to_dtype(DType::F32)?
            .to_vec2()?;
        Ok(rows
            .iter()
            .zip(&logits)
            .map(|(r, lg)| {
                let max = lg.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let lse = max + lg.iter().map(|&v| (v - max).exp()).sum::<f32>().ln();
                [
                    lg[r.label_ids[0] as usize],
                    lg[r.label_ids[1] as usize],
                    lse,
                ]
            })
            .collect())
    }

    fn score_of(&self, ex: &Example, label_ids: [u32; 2], lg: [f32; 3]) -> Score {
        let [lp, ln, lse] = lg;
        // σ(l₊ − l₋) = p₊ / (p₊ + p₋): the softmax over the two label tokens alone.
        let p = 1.0 / (1.0 + (ln - lp).exp());
        if !p.is_finite() {
            return Score::zero(format!("label judge: non-finite logits {lp}, {ln}"));
        }
        let [pos, neg] = &self.labels;
        let truth = self.truth(ex);
        let value = match (self.cfg.reward, truth) {
            (LabelReward::Positive, _) => p,
            (LabelReward::TrueLabel, Some(true)) => p,
            (LabelReward::TrueLabel, Some(false)) => 1.0 - p,
            (LabelReward::TrueLabel, None) => {
                return Score::zero(format!(
                    "label judge: example {} has no `{}` to reward against",
                    ex.id, self.cfg.label_field
                ))
            }
        };
        let said_positive = p >= 0.5;
        Score {
            value,
            correct: truth.map_or(said_positive, |t| t == said_positive),
            parts: vec![
                (P_POSITIVE.into(), p),
                ("logit_positive".into(), lp),
                ("logit_negative".into(), ln),
                ("p_vocab_positive".into(), (lp - lse).exp()),
                ("p_vocab_negative".into(), (ln - lse).exp()),
            ],
            reason: format!(
                "p({pos:?}) = {p:.4} against {neg:?} (tokens {} / {})",
                label_ids[0], label_ids[1]
            ),
            answer: Some(if said_positive { pos } else { neg }.clone()),
        }
    }
}

impl Judge for LabelJudge {
    fn name(&self) -> &str {
        "label"
    }

    fn validate(&self, example: &Example) -> Result<()> {
        let mut ex = example.clone();
        ex.fields.insert("completion".into(), "".into());
        ex.fields.entry("_prompt").or_insert("".into());
        self.template.validate(&ex).context("[judge] template")?;
        let field = &self.cfg.label_field;
        match example.fields.get(field) {
            None | Some(Value::Null) if self.cfg.reward == LabelReward::TrueLabel => bail!(
                "example {} has no `{field}` field, which reward = \"true_label\" needs",
                example.id
            ),
            None | Some(Value::Null) => Ok(()),
            Some(v) => parse_truth(v, &self.labels)
                .map(|_| ())
                .map_err(|e| anyhow::anyhow!("example {}: `{field}` = {v}: {e}", example.id)),
        }
    }

    fn score_batch(&self, rows: &[JudgeRow<'_>]) -> Result<Vec<Score>> {
        let mut scores: Vec<Option<Score>> = vec![None; rows.len()];
        let mut ready: Vec<(usize, Prepared)> = Vec::with_capacity(rows.len());
        for (i, r) in rows.iter().enumerate() {
            // What a completion says never fails the judge: a row that cannot be rendered or
            // whose labels clash after it scores 0 with the reason.
            let prepared = self
                .prompt_text(r.example, r.prompt, r.completion)
                .map_err(|e| format!("{e:#}"))
                .and_then(|text| self.prepare(&text));
            match prepared {
                Ok(p) => ready.push((i, p)),
                Err(e) => scores[i] = Some(Score::zero(format!("label judge: {e}"))),
            }
        }
        // Similar lengths share a batch: less padding.
        ready.sort_by_key(|(_, p)| p.ids.len());
        for chunk in ready.chunks(self.cfg.batch_size) {
            let prepared: Vec<&Prepared> = chunk.iter().map(|(_, p)| p).collect();
            let logits = self.label_logits(&prepared)?;
            for ((i, p), lg) in chunk.iter().zip(logits) {
                scores[*i] = Some(self.score_of(rows[*i].example, p.label_ids, lg));
            }
        }
        Ok(scores
            .into_iter()
            .map(|s| s.expect("every row scored or given a reason"))
            .collect())
    }

    fn truth(&self, example: &Example) -> Option<bool> {
        let v = example.fields.get(&self.cfg.label_field)?;
        parse_truth(v, &self.labels).ok().flatten()
    }
}

/// Case, surrounding space and one final `.` or `!` do not matter in a label.
fn normalize(s: &str) -> String {
    let s = s.trim();
    let s = s.strip_suffix(['.', '!']).unwrap_or(s);
    s.trim().to_lowercase()
}

/// A true-label value: `Some(true)` for the positive label, `None` for null (unlabelled).
pub fn parse_truth(v: &Value, labels: &[String; 2]) -> std::result::Result<Option<bool>, String> {
    let [pos, neg] = labels;
    let bad = || {
        format!(
            "not a label; use {pos:?} / {neg:?} (any case, a final `.` allowed), true / false, \
             or 1 / 0"
        )
    };
    match v {
        Value::Null => Ok(None),
        Value::Bool(b) => Ok(Some(*b)),
        Value::Number(n) => match n.as_f64() {
            Some(1.0) => Ok(Some(true)),
            Some(0.0) => Ok(Some(false)),
            _ => Err(bad()),
        },
        Value::String(s) => {
            let s = normalize(s);
            if s == normalize(pos) || s == "true" || s == "1" {
                Ok(Some(true))
            } else if s == normalize(neg) || s == "false" || s == "0" {
                Ok(Some(false))
            } else {
                Err(bad())
            }
        }
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels() -> [String; 2] {
        ["Yes".into(), "No".into()]
    }

    #[test]
    fn true_labels_parse_in_every_documented_spelling() {
        for (v, want) in [
            (serde_json::json!("Yes"), Some(true)),
            (serde_json::json!("yes."), Some(true)),
            (serde_json::json!(" No! "), Some(false)),
            (serde_json::json!(true), Some(true)),
            (serde_json::json!(false), Some(false)),
            (serde_json::json!(1), Some(true)),
            (serde_json::json!(0.0), Some(false)),
            (serde_json::json!("1"), Some(true)),
            (serde_json::json!("false"), Some(false)),
            (Value::Null, None),
        ] {
            assert_eq!(parse_truth(&v, &labels()), Ok(want), "{v}");
        }
        for v in [
            serde_json::json!("maybe"),
            serde_json::json!(2),
            serde_json::json!([1]),
        ] {
            let e = parse_truth(&v, &labels()).unwrap_err();
            assert!(e.contains("\"Yes\" / \"No\""), "{e}");
        }
    }

    fn cfg(toml_text: &str) -> LabelConfig {
        toml::from_str(&format!("model = \"m\"\n{toml_text}")).unwrap()
    }

    #[test]
    fn labels_are_ordered_by_positive_and_checked() {
        let c = cfg("");
        assert_eq!(c.ordered_labels().unwrap(), labels());
        assert_eq!(c.label_field, "label");
        assert_eq!(c.reward, LabelReward::Positive);
        let c = cfg("positive = \"No\"");
        assert_eq!(
            c.ordered_labels().unwrap(),
            ["No".to_string(), "Yes".into()]
        );
        for (bad, want) in [
            ("positive = \"Maybe\"", "not one of labels"),
            ("labels = [\"Yes\"]", "exactly two"),
            ("labels = [\"Yes\", \"yes.\"]", "same word"),
            ("labels = [\"Yes\", \"\"]", "empty"),
        ] {
            let e = cfg(bad).ordered_labels().unwrap_err().to_string();
            assert!(e.contains(want), "{bad}: {e}");
        }
    }

    #[test]
    fn exactly_one_template_source() {
        let e = cfg("").load_template().unwrap_err().to_string();
        assert!(e.contains("exactly one of `template`"), "{e}");
        let e = cfg("template = \"a.txt\"\ntemplate_text = \"b\"")
            .load_template()
            .unwrap_err()
            .to_string();
        assert!(e.contains("exactly one"), "{e}");
        let t = cfg("template_text = \"Q: {question} A: {completion}\"")
            .load_template()
            .unwrap();
        assert_eq!(t.slots(), ["completion", "question"]);
    }

    #[test]
    fn config_errors_come_before_the_model_loads() {
        // The model does not exist: the label error must be what is reported.
        let c = cfg("labels = [\"Yes\"]\ntemplate_text = \"{completion}\"");
        let e = format!(
            "{:#}",
            LabelJudge::new(&c, &Device::Cpu, DType::F32).err().unwrap()
        );
        assert!(e.contains("exactly two"), "{e}");
    }
}
