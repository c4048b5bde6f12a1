//! Preference datasets for DPO and S-DPO: rows of `{prompt, chosen, rejected}` (TRL's field
//! names).
//!
//! `prompt` is a string or a chat message list (`[{"role": "user", "content": "..."}]`, TRL's
//! conversational prompt); `chosen` is a string; `rejected` a string or a non-empty list of
//! strings (one chosen against k rejected, for S-DPO). Files are read like any other source
//! (JSON Lines or Parquet, local or `hf://datasets/...`, `fields` renames) and every row is
//! validated at load, before any model work: a bad row is one error naming its file and row
//! (`name.jsonl:LINE`, `name.parquet:ROW`) with a hint. Loading normalizes `rejected` to a list,
//! so a row reads back the same way whichever form the file used.
//!
//! Not here: TRL's implicit-prompt format (the prompt repeated inside `chosen`) and
//! conversational `chosen`/`rejected` message lists; tokenization (the trainer's).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::jsonl::{field_list, JsonlConfig};
use super::Example;
use crate::model::Message;

const FORMAT_HINT: &str = "hint: each row needs `prompt` (a string or a list of {\"role\", \
                           \"content\"} messages), `chosen` (a string) and `rejected` (a string \
                           or a non-empty list of strings); map other names with `fields = { \
                           chosen = \"...\" }` in the recipe's [data] table";

/// `{ source = "preference", path = "...", fields = { chosen = "better" } }`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PreferenceConfig {
    /// Relative paths are resolved against the recipe's directory.
    pub path: PathBuf,
    /// Canonical field name (`prompt`, `chosen`, `rejected`) → field name in the file.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub fields: BTreeMap<String, String>,
}

impl PreferenceConfig {
    /// All rows, each validated ([`Preference::from_example`]) and with `rejected` as a list.
    pub fn load(&self, base_dir: &Path) -> Result<Vec<Example>> {
        let source = JsonlConfig {
            path: self.path.clone(),
            fields: self.fields.clone(),
        };
        let mut rows = source.load(base_dir)?;
        for ex in &mut rows {
            let pref = Preference::from_example(ex)?;
            let rejected = pref.rejected.into_iter().map(Value::String).collect();
            ex.fields.insert("rejected".into(), Value::Array(rejected));
        }
        Ok(rows)
    }
}

/// A preference row's prompt.
#[derive(Clone, Debug, PartialEq)]
pub enum PreferencePrompt {
    /// Plain text (rendered as the user turn when the recipe uses the chat template).
    Text(String),
    /// A conversation; the chat template renders it with the assistant turn opened.
    Messages(Vec<Message>),
}

/// One preference example: one chosen completion against one or more rejected ones.
#[derive(Clone, Debug, PartialEq)]
pub struct Preference {
    pub prompt: PreferencePrompt,
    pub chosen: String,
    /// At least one.
    pub rejected: Vec<String>,
}

impl Preference {
    /// Read a row; an error names the row (`file:line`), what is wrong, and how to fix it.
    pub fn from_example(ex: &Example) -> Result<Self> {
        let field = |name: &str| -> Result<&Value> {
            match ex.fields.get(name) {
                Some(v) => Ok(v),
                None => bail!(
                    "{}: preference row has no `{name}` field (fields: {}); {FORMAT_HINT}",
                    ex.id,
                    field_list(&ex.fields)
                ),
            }
        };
        let wrong = |name: &str, what: &Value| -> anyhow::Error {
            anyhow::anyhow!(
                "{}: `{name}` must be {}, found {}; {FORMAT_HINT}",
                ex.id,
                match name {
                    "prompt" => "a string or a list of {\"role\", \"content\"} messages",
                    "rejected" => "a string or a non-empty list of strings",
                    _ => "a string",
                },
                kind(what)
            )
        };
        let prompt = match field("prompt")? {
            Value::String(s) => PreferencePrompt::Text(s.clone()),
            Value::Array(items) if !items.is_empty() => PreferencePrompt::Messages(
                items
                    .iter()
                    .map(|m| message(m).ok_or_else(|| wrong("prompt", m)))
                    .collect::<Result<_>>()?,
            ),
            other => return Err(wrong("prompt", other)),
        };
        let chosen = match field("chosen")? {
            Value::String(s) => s.clone(),
            other => return Err(wrong("chosen", other)),
        };
        let rejected = match field("rejected")? {
            Value::String(s) => vec![s.clone()],
            Value::Array(items) if !items.is_empty() => items
                .iter()
                .map(|v| match v {
                    Value::String(s) => Ok(s.clone()),
                    other => Err(wrong("rejected", other)),
                })
                .collect::<Result<_>>()?,
            other => return Err(wrong("rejected", other)),
        };
        Ok(Self {
            prompt,
            chosen,
            rejected,
        })
    }
}

/// `{"role": "...", "content": "..."}` with string values (other keys ignored, as TRL does).
fn message(v: &Value) -> Option<Message> {
    let role = v.get("role")?.as_str()?;
    let content = v.get("content")?.as_str()?;
    Some(Message::new(role, content))
}

fn kind(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(_) => "a boolean".into(),
        Value::Number(n) => format!("the number {n}"),
        Value::String(_) => "a string".into(),
        Value::Array(a) if a.is_empty() => "an empty list".into(),
        Value::Array(_) => "a list".into(),
        Value::Object(_) => "an object".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn dataset(lines: &[&str]) -> (tempfile::TempDir, PreferenceConfig) {
        let dir = tempfile::tempdir().unwrap();
        let mut f = std::fs::File::create(dir.path().join("prefs.jsonl")).unwrap();
        for l in lines {
            writeln!(f, "{l}").unwrap();
        }
        let cfg = PreferenceConfig {
            path: "prefs.jsonl".into(),
            fields: BTreeMap::new(),
        };
        (dir, cfg)
    }

    fn load_err(lines: &[&str]) -> String {
        let (dir, cfg) = dataset(lines);
        format!("{:#}", cfg.load(dir.path()).unwrap_err())
    }

    #[test]
    fn reads_string_and_list_forms() {
        let (dir, cfg) = dataset(&[
            r#"{"prompt": "2+2?", "chosen": "4", "rejected": "5"}"#,
            r#"{"prompt": [{"role": "user", "content": "hi"}], "chosen": "hello", "rejected": ["go", "no"], "id": 7}"#,
        ]);
        let rows = cfg.load(dir.path()).unwrap();
        assert_eq!(rows.len(), 2);
        let p0 = Preference::from_example(&rows[0]).unwrap();
        assert_eq!(p0.prompt, PreferencePrompt::Text("2+2?".into()));
        assert_eq!(
            (p0.chosen.as_str(), p0.rejected.clone()),
            ("4", vec!["5".to_string()])
        );
        // `rejected` is normalized to a list; other fields stay.
        assert_eq!(rows[0].fields["rejected"], serde_json::json!(["5"]));
        let p1 = Preference::from_example(&rows[1]).unwrap();
        assert_eq!(
            p1.prompt,
            PreferencePrompt::Messages(vec![Message::new("user", "hi")])
        );
        assert_eq!(p1.rejected, vec!["go".to_string(), "no".to_string()]);
        assert_eq!(rows[1].fields["id"], serde_json::json!(7));
    }

    #[test]
    fn a_row_without_chosen_is_one_error_naming_the_row_and_file() {
        let err = load_err(&[
            r#"{"prompt": "a", "chosen": "b", "rejected": "c"}"#,
            "",
            r#"{"prompt": "a", "better": "b", "rejected": "c"}"#,
        ]);
        assert!(err.contains("prefs.jsonl:3"), "{err}");
        assert!(err.contains("no `chosen` field"), "{err}");
        assert!(err.contains("fields: better, prompt, rejected"), "{err}");
        assert!(err.contains("hint") && err.contains("fields = {"), "{err}");
        assert_eq!(err.matches("prefs.jsonl:").count(), 1, "one message: {err}");
    }

    #[test]
    fn empty_rejected_and_non_strings_are_errors() {
        let cases = [
            (
                r#"{"prompt": "a", "chosen": "b", "rejected": []}"#,
                "`rejected` must be",
                "an empty list",
            ),
            (
                r#"{"prompt": "a", "chosen": "b", "rejected": ["x", 3]}"#,
                "`rejected` must be",
                "the number 3",
            ),
            (
                r#"{"prompt": "a", "chosen": null, "rejected": "c"}"#,
                "`chosen` must be a string",
                "null",
            ),
            (
                r#"{"prompt": 5, "chosen": "b", "rejected": "c"}"#,
                "`prompt` must be",
                "the number 5",
            ),
            (
                r#"{"prompt": [{"role": "user"}], "chosen": "b", "rejected": "c"}"#,
                "`prompt` must be",
                "an object",
            ),
            (
                r#"{"chosen": "b", "rejected": "c"}"#,
                "no `prompt` field",
                "chosen, rejected",
            ),
        ];
        for (line, what, found) in cases {
            let err = load_err(&[line]);
            assert!(err.contains("prefs.jsonl:1: "), "{err}");
            assert!(err.contains(what) && err.contains(found), "{line}: {err}");
            assert!(err.contains("hint"), "{err}");
        }
    }

    #[test]
    fn field_mapping_renames_like_other_sources() {
        let (dir, mut cfg) = dataset(&[r#"{"question": "q", "good": "g", "bad": ["b1", "b2"]}"#]);
        cfg.fields = [
            ("prompt", "question"),
            ("chosen", "good"),
            ("rejected", "bad"),
        ]
        .into_iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
        let rows = cfg.load(dir.path()).unwrap();
        let p = Preference::from_example(&rows[0]).unwrap();
        assert_eq!(p.chosen, "g");
        assert_eq!(p.rejected.len(), 2);
    }

    #[test]
    fn recipe_source_preference_loads_through_data_load() {
        #[derive(Deserialize)]
        struct Recipe {
            data: crate::data::DataConfig,
        }
        let (dir, _) = dataset(&[r#"{"prompt": "p", "chosen": "c", "rejected": "r"}"#]);
        let r: Recipe =
            toml::from_str("data = { source = \"preference\", path = \"prefs.jsonl\" }").unwrap();
        let rows = crate::data::load(&r.data, dir.path()).unwrap();
        assert_eq!(rows[0].fields["rejected"], serde_json::json!(["r"]));
        let err =
            toml::from_str::<Recipe>("data = { source = \"preference\", path = \"x\", k = 1 }")
                .err()
                .unwrap()
                .to_string();
        assert!(err.contains("unknown field `k`"), "{err}");
    }
}
