//! `llmrl score`: run a verifier over a JSONL file of completions, without a model.
//!
//! Each input line is one example's fields plus the completion; each output line is the input
//! object plus `score`, `correct`, `parts` (an object), `reason` and `answer`. Useful to check a
//! verifier on saved rollouts or on another system's outputs. Input lines are user input: a bad
//! line is an error naming the line; what the completion says is never an error.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::Path;

use anyhow::{bail, Context};
use serde::Serialize;
use serde_json::{Map, Value};

use super::Verifier;
use crate::data::Example;

/// Totals of one [`score_file`] run.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ScoreSummary {
    pub count: usize,
    /// Mean of `Score::value` (0 when there are no lines).
    pub mean_score: f64,
    /// Fraction of lines with `Score::correct` (0 when there are no lines).
    pub accuracy: f64,
}

/// Scores every line of `input` (JSONL; blank lines skipped) and writes the scored lines to
/// `output`. The example's id is its `id` field, else `line N`; its fields are the line's fields
/// other than `completion_field`.
pub fn score_file(
    verifier: &dyn Verifier,
    input: &Path,
    output: &Path,
    completion_field: &str,
) -> anyhow::Result<ScoreSummary> {
    let reader =
        BufReader::new(File::open(input).with_context(|| format!("opening {}", input.display()))?);
    let mut writer = BufWriter::new(
        File::create(output).with_context(|| format!("creating {}", output.display()))?,
    );
    let (mut count, mut total, mut correct) = (0usize, 0f64, 0usize);
    for (i, line) in reader.lines().enumerate() {
        let line_no = i + 1;
        let here = || format!("{}:{line_no}", input.display());
        let line = line.with_context(|| format!("reading {}", here()))?;
        if line.trim().is_empty() {
            continue;
        }
        let mut row: Map<String, Value> = serde_json::from_str(&line)
            .with_context(|| format!("{}: not a JSON object; hint: one object per line", here()))?;
        let completion = match row.remove(completion_field) {
            Some(Value::String(s)) => s,
            Some(other) => bail!("{}: `{completion_field}` is {other}, not a string", here()),
            None => bail!(
                "{}: no `{completion_field}` field; hint: every line needs the completion, under \
                 the completion field name given",
                here()
            ),
        };
        let id = match row.get("id") {
            Some(Value::String(s)) => s.clone(),
            Some(v) => v.to_string(),
            None => format!("line {line_no}"),
        };
        let example = Example { id, fields: row };
        let score = verifier.score(&example, &completion);

        let mut out = example.fields;
        out.insert(completion_field.into(), Value::String(completion));
        out.insert("score".into(), Value::from(score.value));
        out.insert("correct".into(), Value::from(score.correct));
        let parts: Map<String, Value> = score
            .parts
            .iter()
            .map(|(k, v)| (k.clone(), Value::from(*v)))
            .collect();
        out.insert("parts".into(), Value::Object(parts));
        out.insert("reason".into(), Value::from(score.reason.clone()));
        out.insert(
            "answer".into(),
            score.answer.clone().map_or(Value::Null, Value::from),
        );
        writeln!(writer, "{}", Value::Object(out))
            .with_context(|| format!("writing {}", output.display()))?;

        count += 1;
        total += f64::from(score.value);
        correct += usize::from(score.correct);
    }
    writer
        .flush()
        .with_context(|| format!("writing {}", output.display()))?;
    let denom = count.max(1) as f64;
    Ok(ScoreSummary {
        count,
        mean_score: total / denom,
        accuracy: correct as f64 / denom,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reward::{CountdownConfig, CountdownVerifier};

    #[test]
    fn scores_each_line_and_keeps_fields() {
        let dir = tempfile::tempdir().unwrap();
        let (input, output) = (dir.path().join("in.jsonl"), dir.path().join("out.jsonl"));
        std::fs::write(
            &input,
            concat!(
                r#"{"id": 7, "nums": [1, 2], "target": 3, "completion": "<answer>1+2</answer>"}"#,
                "\n\n",
                r#"{"nums": [1, 2], "target": 4, "completion": "<answer>2+1</answer>", "x": 1}"#,
                "\n",
                r#"{"nums": [1, 2], "target": 3, "completion": "no idea"}"#,
                "\n",
            ),
        )
        .unwrap();
        let v = CountdownVerifier::new(&CountdownConfig::default()).unwrap();
        let summary = score_file(&v, &input, &output, "completion").unwrap();
        assert_eq!(summary.count, 3);
        assert!((summary.mean_score - 1.1 / 3.0).abs() < 1e-6);
        assert!((summary.accuracy - 1.0 / 3.0).abs() < 1e-12);

        let rows: Vec<Value> = std::fs::read_to_string(&output)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[0]["id"], 7);
        assert_eq!(rows[0]["score"], 1.0);
        assert_eq!(rows[0]["correct"], true);
        assert_eq!(rows[0]["parts"]["format"], 1.0);
        assert_eq!(rows[0]["answer"], "1+2");
        assert_eq!(rows[1]["x"], 1);
        assert_eq!(rows[1]["completion"], "<answer>2+1</answer>");
        assert_eq!(rows[1]["correct"], false);
        assert_eq!(rows[2]["answer"], Value::Null);
        assert!(rows[2]["reason"].as_str().unwrap().contains("no <answer>"));
    }

    #[test]
    fn bad_lines_are_errors_with_the_line_number() {
        let dir = tempfile::tempdir().unwrap();
        let (input, output) = (dir.path().join("in.jsonl"), dir.path().join("out.jsonl"));
        let v = CountdownVerifier::new(&CountdownConfig::default()).unwrap();
        for (text, want) in [
            ("{\"completion\": \"a\"}\n{oops\n", "in.jsonl:2"),
            ("[1, 2]\n", "in.jsonl:1"),
            ("{\"text\": \"a\"}\n", "no `completion` field"),
            ("{\"completion\": 3}\n", "not a string"),
        ] {
            std::fs::write(&input, text).unwrap();
            let err = format!(
                "{:#}",
                score_file(&v, &input, &output, "completion").unwrap_err()
            );
            assert!(err.contains(want), "{text:?}: {err}");
        }
        let missing = dir.path().join("missing.jsonl");
        assert!(score_file(&v, &missing, &output, "completion").is_err());
    }
}
