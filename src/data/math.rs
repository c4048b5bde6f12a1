//! Math word-problem presets: GSM8K and MATH-style files (MATH-500, AIME 2024) as [`Example`]s
//! with canonical `question` and `answer` fields, all original fields kept.
//!
//! Formats (see `/work/shared/data/README.md`):
//! - GSM8K: `{"question", "answer"}` where `answer` is the worked solution ending in `#### 72`.
//!   The gold number (text after the last `####`, commas removed) becomes `answer`; the worked
//!   text moves to `solution`, as in MATH.
//! - MATH-500: `{"problem", "solution", "answer", ...}`; AIME 2024 adds `question` and `id`.
//!   `question` is the row's own `question` if present, else `problem`; `answer` is kept as
//!   written (LaTeX, or zero-padded like `"025"`); normalizing it is the verifier's job.
//!
//! Not here: answer normalization or `\boxed{}` extraction (the math verifier in `reward`).

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::jsonl::field_list;
use super::table::read_rows;
use super::Example;

/// `{ source = "gsm8k", path = ".../gsm8k/test.jsonl" }`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Gsm8kConfig {
    pub path: PathBuf,
}

/// `{ source = "math", path = ".../math500/test.jsonl" }` (also AIME 2024).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MathConfig {
    pub path: PathBuf,
}

/// The GSM8K gold answer: the text after the last `####`, trimmed, commas removed
/// (`"#### 1,000"` → `"1000"`). `None` when there is no `####` or nothing after it.
pub fn gsm8k_gold(answer: &str) -> Option<String> {
    let (_, tail) = answer.rsplit_once("####")?;
    let gold: String = tail.trim().chars().filter(|&c| c != ',').collect();
    (!gold.is_empty()).then_some(gold)
}

const PRESET_HINT: &str = "hint: is this the right file for this preset? Use source = \"jsonl\" \
                           with `fields` for other formats";

impl Gsm8kConfig {
    pub fn load(&self, base_dir: &Path) -> Result<Vec<Example>> {
        read_rows(&self.path, base_dir)?
            .into_iter()
            .map(|mut ex| {
                let question = ex.fields.get("question").and_then(Value::as_str);
                let worked = ex.fields.get("answer").and_then(Value::as_str);
                let (Some(_), Some(worked)) = (question, worked) else {
                    bail!(
                        "{}: GSM8K rows need string fields `question` and `answer`; available \
                         fields: {}; {PRESET_HINT}",
                        ex.id,
                        field_list(&ex.fields)
                    );
                };
                let Some(gold) = gsm8k_gold(worked) else {
                    bail!(
                        "{}: GSM8K answer has no `#### <number>` line; {PRESET_HINT}",
                        ex.id
                    );
                };
                let worked = worked.to_owned();
                ex.fields.entry("solution").or_insert(Value::String(worked));
                ex.fields.insert("answer".into(), Value::String(gold));
                Ok(ex)
            })
            .collect()
    }
}

impl MathConfig {
    pub fn load(&self, base_dir: &Path) -> Result<Vec<Example>> {
        read_rows(&self.path, base_dir)?
            .into_iter()
            .map(|mut ex| {
                let question = ex
                    .fields
                    .get("question")
                    .or_else(|| ex.fields.get("problem"))
                    .and_then(Value::as_str)
                    .map(str::to_owned);
                let answer = match ex.fields.get("answer") {
                    Some(Value::String(s)) => Some(s.clone()),
                    Some(Value::Number(n)) => Some(n.to_string()),
                    _ => None,
                };
                let (Some(question), Some(answer)) = (question, answer) else {
                    bail!(
                        "{}: MATH rows need a string `problem` (or `question`) and an `answer`; \
                         available fields: {}; {PRESET_HINT}",
                        ex.id,
                        field_list(&ex.fields)
                    );
                };
                ex.fields.insert("question".into(), Value::String(question));
                ex.fields.insert("answer".into(), Value::String(answer));
                Ok(ex)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn file(content: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::Builder::new()
            .suffix(".jsonl")
            .tempfile()
            .unwrap();
        f.write_all(content.as_bytes()).unwrap();
        f
    }

    #[test]
    fn gsm8k_gold_takes_last_marker_and_drops_commas() {
        assert_eq!(gsm8k_gold("3 + 4 = 7\n#### 7").as_deref(), Some("7"));
        assert_eq!(gsm8k_gold("#### 1,000 ").as_deref(), Some("1000"));
        assert_eq!(gsm8k_gold("a #### 1\n#### -2.5").as_deref(), Some("-2.5"));
        assert_eq!(gsm8k_gold("no marker"), None);
        assert_eq!(gsm8k_gold("#### "), None);
    }

    #[test]
    fn gsm8k_rows_get_gold_answer_and_keep_the_worked_solution() {
        let f = file(r#"{"question": "2+2?", "answer": "2+2=<<2+2=4>>4\n#### 4"}"#);
        let rows = Gsm8kConfig {
            path: f.path().into(),
        }
        .load(Path::new("/"))
        .unwrap();
        assert_eq!(rows[0].text("question").unwrap(), "2+2?");
        assert_eq!(rows[0].text("answer").unwrap(), "4");
        assert_eq!(rows[0].text("solution").unwrap(), "2+2=<<2+2=4>>4\n#### 4");
    }

    #[test]
    fn gsm8k_without_marker_is_an_error_with_hint() {
        let f = file(r#"{"question": "q", "answer": "4"}"#);
        let err = format!(
            "{:#}",
            Gsm8kConfig {
                path: f.path().into()
            }
            .load(Path::new("/"))
            .unwrap_err()
        );
        assert!(
            err.contains(":1: GSM8K answer has no `#### <number>` line"),
            "{err}"
        );
        let f = file(r#"{"problem": "q", "answer": "4"}"#);
        let err = format!(
            "{:#}",
            Gsm8kConfig {
                path: f.path().into()
            }
            .load(Path::new("/"))
            .unwrap_err()
        );
        assert!(err.contains("available fields: answer, problem"), "{err}");
    }

    #[test]
    fn math_rows_map_problem_to_question() {
        let f = file(concat!(
            r#"{"problem": "x?", "solution": "\\boxed{3}", "answer": "3", "level": 2}"#,
            "\n",
            r#"{"id": 60, "problem": "p", "question": "q", "answer": 25}"#,
        ));
        let rows = MathConfig {
            path: f.path().into(),
        }
        .load(Path::new("/"))
        .unwrap();
        assert_eq!(rows[0].text("question").unwrap(), "x?");
        assert_eq!(rows[0].text("answer").unwrap(), "3");
        assert_eq!(rows[0].text("level").unwrap(), "2");
        assert_eq!(rows[1].text("question").unwrap(), "q");
        assert_eq!(rows[1].fields["answer"], Value::String("25".into()));
        let f = file(r#"{"problem": "x?"}"#);
        let err = format!(
            "{:#}",
            MathConfig {
                path: f.path().into()
            }
            .load(Path::new("/"))
            .unwrap_err()
        );
        assert!(err.contains("need a string `problem`"), "{err}");
    }

    /// The real files in /work/shared/data, when present (skipped elsewhere, e.g. CI).
    #[test]
    fn shared_data_files_load_when_present() {
        let root = Path::new("/work/shared/data/math");
        if !root.exists() {
            return;
        }
        let g = Gsm8kConfig {
            path: "gsm8k/test.jsonl".into(),
        }
        .load(root)
        .unwrap();
        assert_eq!(g.len(), 1319);
        assert_eq!(g[0].text("answer").unwrap(), "18");
        let m = MathConfig {
            path: "math500/test.jsonl".into(),
        }
        .load(root)
        .unwrap();
        assert_eq!(m.len(), 500);
        let a = MathConfig {
            path: "aime24/test.jsonl".into(),
        }
        .load(root)
        .unwrap();
        assert_eq!(a.len(), 30);
        assert_eq!(a[0].text("answer").unwrap(), "204");
    }
}
