//! `llmrl score`: run a judge (any verifier, or a model-backed judge) over a JSONL file of
//! completions.
//!
//! Each input line is one example's fields plus the completion; each output line is the input
//! object plus `score`, `correct`, `parts` (an object), `reason` and `answer`, and, for a judge
//! that gives a probability of a positive label, `probability` (and `true_label` where the row
//! has one). Where rows carry true labels the summary adds AUC, accuracy and log-loss of those
//! probabilities (`eval::binary`). Useful to check a verifier on saved rollouts or on another
//! system's outputs, or a judge on labelled data. Input lines are user input: every line is read
//! and checked (JSON, completion, the judge's [`Judge::validate`]) before anything is scored, and
//! a bad line is an error naming the line; what the completion says is never an error.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::Path;

use anyhow::{bail, Context};
use serde::Serialize;
use serde_json::{Map, Value};

use super::{Judge, JudgeRow, Score, P_POSITIVE};
use crate::data::Example;
use crate::eval::binary::{binary_metrics, BinaryMetrics};

/// Totals of one [`score_file`] run.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ScoreSummary {
    pub count: usize,
    /// Mean of `Score::value` (0 when there are no lines).
    pub mean_score: f64,
    /// Fraction of lines with `Score::correct` (0 when there are no lines).
    pub accuracy: f64,
    /// AUC, accuracy at 0.5 and log-loss of the probabilities over the rows with a true label.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub labelled: Option<BinaryMetrics>,
}

/// Rows handed to the judge at a time (it batches its own forwards within them).
const CHUNK: usize = 256;

/// The probability a score gives the positive label: the judge's `p_positive` part, else the
/// score itself.
pub fn probability(score: &Score) -> f64 {
    score
        .parts
        .iter()
        .find(|(k, _)| k == P_POSITIVE)
        .map_or(f64::from(score.value), |(_, p)| f64::from(*p))
}

/// Scores every line of `input` (JSONL; blank lines skipped) and writes the scored lines to
/// `output`. The example's id is its `id` field, else `line N`; its fields are the line's fields
/// other than `completion_field`; the prompt the judge sees is the `_prompt` or `prompt` field.
pub fn score_file(
    judge: &dyn Judge,
    input: &Path,
    output: &Path,
    completion_field: &str,
) -> anyhow::Result<ScoreSummary> {
    let rows = read_rows(judge, input, completion_field)?;
    let mut writer = BufWriter::new(
        File::create(output).with_context(|| format!("creating {}", output.display()))?,
    );
    let (mut total, mut correct) = (0f64, 0usize);
    let (mut probs, mut truths) = (Vec::new(), Vec::new());
    for chunk in rows.chunks(CHUNK) {
        let batch: Vec<JudgeRow> = chunk
            .iter()
            .map(|(ex, completion, prompt)| JudgeRow {
                example: ex,
                prompt,
                completion,
            })
            .collect();
        let scores = judge.score_batch(&batch)?;
        for ((example, completion, _), score) in chunk.iter().zip(&scores) {
            let truth = judge.truth(example);
            let has_p = score.parts.iter().any(|(k, _)| k == P_POSITIVE);
            let mut out = example.fields.clone();
            out.insert(completion_field.into(), Value::from(completion.as_str()));
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
            if has_p {
                out.insert("probability".into(), Value::from(probability(score)));
            }
            if let Some(t) = truth {
                out.insert("true_label".into(), Value::from(t));
                probs.push(probability(score));
                truths.push(t);
            }
            writeln!(writer, "{}", Value::Object(out))
                .with_context(|| format!("writing {}", output.display()))?;
            total += f64::from(score.value);
            correct += usize::from(score.correct);
        }
    }
    writer
        .flush()
        .with_context(|| format!("writing {}", output.display()))?;
    let count = rows.len();
    let denom = count.max(1) as f64;
    Ok(ScoreSummary {
        count,
        mean_score: total / denom,
        accuracy: correct as f64 / denom,
        labelled: binary_metrics(&probs, &truths),
    })
}

/// Every line as (example, completion, prompt), checked, before anything is scored.
fn read_rows(
    judge: &dyn Judge,
    input: &Path,
    completion_field: &str,
) -> anyhow::Result<Vec<(Example, String, String)>> {
    let reader =
        BufReader::new(File::open(input).with_context(|| format!("opening {}", input.display()))?);
    let mut rows = Vec::new();
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
        let prompt = match row.get("_prompt").or_else(|| row.get("prompt")) {
            Some(Value::String(s)) => s.clone(),
            _ => String::new(),
        };
        rows.push((Example { id, fields: row }, completion, prompt, line_no));
    }
    // Every line is JSON with a completion; now what the judge needs of each.
    for (example, _, _, line_no) in &rows {
        judge
            .validate(example)
            .with_context(|| format!("{}:{line_no}", input.display()))?;
    }
    Ok(rows.into_iter().map(|(e, c, p, _)| (e, c, p)).collect())
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

    /// A judge whose probability is the row's `p` field and whose truth is its `y` field.
    struct FieldJudge;

    impl Judge for FieldJudge {
        fn name(&self) -> &str {
            "field"
        }
        fn score_batch(&self, rows: &[JudgeRow<'_>]) -> anyhow::Result<Vec<Score>> {
            Ok(rows
                .iter()
                .map(|r| {
                    let p = r.example.fields["p"].as_f64().unwrap() as f32;
                    let mut s = Score::zero(format!("prompt {}", r.prompt));
                    s.parts.push((P_POSITIVE.into(), p));
                    s
                })
                .collect())
        }
        fn truth(&self, ex: &Example) -> Option<bool> {
            ex.fields.get("y").and_then(Value::as_bool)
        }
    }

    #[test]
    fn labelled_rows_get_auc_accuracy_and_log_loss() {
        let dir = tempfile::tempdir().unwrap();
        let (input, output) = (dir.path().join("in.jsonl"), dir.path().join("out.jsonl"));
        std::fs::write(
            &input,
            concat!(
                "{\"p\": 0.9, \"y\": true, \"completion\": \"a\", \"prompt\": \"Q\"}\n",
                "{\"p\": 0.4, \"y\": true, \"completion\": \"b\"}\n",
                "{\"p\": 0.4, \"y\": false, \"completion\": \"c\"}\n",
                "{\"p\": 0.1, \"y\": false, \"completion\": \"d\"}\n",
                "{\"p\": 0.7, \"completion\": \"unlabelled\"}\n",
            ),
        )
        .unwrap();
        let s = score_file(&FieldJudge, &input, &output, "completion").unwrap();
        assert_eq!(s.count, 5);
        let m = s.labelled.unwrap();
        assert_eq!((m.count, m.positives), (4, 2));
        // Pairs (pos, neg): 0.9 beats both; 0.4 ties 0.4 and beats 0.1: (2 + 1.5) / 4.
        assert_eq!(m.auc, Some(0.875));
        // 0.5 threshold: right on 0.9, wrong on 0.4 (y), right on 0.4 (n) and 0.1.
        assert_eq!(m.accuracy, 0.75);
        let want = -(0.9f64.ln() + 0.4f64.ln() + 0.6f64.ln() + 0.9f64.ln()) / 4.0;
        assert!((m.log_loss - want).abs() < 1e-6, "{}", m.log_loss);
        let rows: Vec<Value> = std::fs::read_to_string(&output)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert!((rows[0]["probability"].as_f64().unwrap() - 0.9).abs() < 1e-6);
        assert_eq!(rows[0]["true_label"], true);
        assert_eq!(rows[0]["reason"], "prompt Q");
        assert!(rows[4].get("true_label").is_none());
    }
}
