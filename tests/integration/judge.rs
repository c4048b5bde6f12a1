//! Judges on the tiny fixture model and through the binary: the label probability against a
//! direct softmax of the model's logits, `llmrl score --judge` and its AUC, and the errors a
//! judge or an external verifier config can cause.

use std::path::Path;
use std::process::Command;

use candle_core::{DType, Device};
use llmrl::data::Example;
use llmrl::model::decoder::logits_of;
use llmrl::model::{Decoder, Message, Mode};
use llmrl::reward::{Judge, JudgeRow, LabelConfig, LabelJudge};
use serde_json::Value;

use crate::common::{fixture_dir, load_fixture};

fn label_config(extra: &str) -> LabelConfig {
    let model = fixture_dir("tiny_llama");
    toml::from_str(&format!("model = {:?}\n{extra}", model.to_str().unwrap())).unwrap()
}

fn example(question: &str) -> Example {
    let mut fields = serde_json::Map::new();
    fields.insert("question".into(), question.into());
    Example {
        id: question.into(),
        fields,
    }
}

fn part(s: &llmrl::reward::Score, name: &str) -> f32 {
    s.parts.iter().find(|(k, _)| k == name).unwrap().1
}

/// Softmax over two entries of the last row of the logits of `ids`, and those two logits.
fn direct(decoder: &Decoder, ids: &[u32], a: u32, b: u32) -> (f64, f32, f32) {
    let logits = logits_of(decoder, ids, &Device::Cpu).unwrap(); // (T, V)
    let last: Vec<f32> = logits.get(ids.len() - 1).unwrap().to_vec1().unwrap();
    let (la, lb) = (last[a as usize], last[b as usize]);
    let (ea, eb) = ((la as f64).exp(), (lb as f64).exp());
    (ea / (ea + eb), la, lb)
}

#[test]
fn label_probability_is_the_softmax_over_the_two_label_tokens() {
    let cfg = label_config(
        "template_text = \"Question: {question}\\nAnswer: {completion}\\nIs the answer right?\"\n\
         batch_size = 2",
    );
    let judge = LabelJudge::new(&cfg, &Device::Cpu, DType::F32).unwrap();
    let m = load_fixture("tiny_llama");
    let decoder = Decoder::new(&m.config, &m.params, Mode::Infer).unwrap();
    // Ragged rows over two batches, so padding and batching are both exercised.
    let cases = [
        ("What is 2+2?", "4"),
        (
            "Name the capital of France, please.",
            "Paris is the capital",
        ),
        (
            "Hi",
            "a much longer completion that makes this the longest row of all",
        ),
    ];
    let examples: Vec<Example> = cases.iter().map(|(q, _)| example(q)).collect();
    let rows: Vec<JudgeRow> = examples
        .iter()
        .zip(&cases)
        .map(|(ex, (_, c))| JudgeRow {
            example: ex,
            prompt: "",
            completion: c,
        })
        .collect();
    let scores = judge.score_batch(&rows).unwrap();
    for ((q, c), s) in cases.iter().zip(&scores) {
        // The same text by hand: template, then the chat template with the turn opened.
        let user = format!("Question: {q}\nAnswer: {c}\nIs the answer right?");
        let text = m
            .tokenizer
            .apply_chat_template(&[Message::new("user", &user)], true)
            .unwrap();
        let ids = m.tokenizer.encode(&text, false).unwrap();
        let label = |w: &str| {
            let full = m.tokenizer.encode(&format!("{text}{w}"), false).unwrap();
            assert_eq!(full[..ids.len()], ids[..], "no merge after a newline");
            full[ids.len()]
        };
        let (yes, no) = (label("Yes"), label("No"));
        let (p, la, lb) = direct(&decoder, &ids, yes, no);
        assert!((s.value as f64 - p).abs() < 1e-5, "{q}: {} vs {p}", s.value);
        assert!((part(s, "p_positive") as f64 - p).abs() < 1e-5);
        assert!((part(s, "logit_positive") - la).abs() < 1e-4, "{q}");
        assert!((part(s, "logit_negative") - lb).abs() < 1e-4, "{q}");
        assert!(
            s.reason.contains(&format!("tokens {yes} / {no}")),
            "{}",
            s.reason
        );
        assert_eq!(
            s.answer.as_deref(),
            Some(if p >= 0.5 { "Yes" } else { "No" })
        );
        let pv = part(s, "p_vocab_positive");
        assert!(pv > 0.0 && pv < 1.0);
    }
}

/// The same judge against HF transformers on the same fixture (chat template, in-context label
/// tokens and logits all from transformers; tests/fixtures/make_judge_golden.py).
#[test]
fn label_probability_matches_transformers() {
    let golden: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture_dir("judge_golden.json")).unwrap())
            .unwrap();
    let cfg = label_config(&format!(
        "template_text = {:?}\nbatch_size = 2",
        golden["template"].as_str().unwrap()
    ));
    let judge = LabelJudge::new(&cfg, &Device::Cpu, DType::F32).unwrap();
    let cases = golden["cases"].as_array().unwrap();
    let examples: Vec<Example> = cases
        .iter()
        .map(|c| example(c["question"].as_str().unwrap()))
        .collect();
    let rows: Vec<JudgeRow> = examples
        .iter()
        .zip(cases)
        .map(|(ex, c)| JudgeRow {
            example: ex,
            prompt: "",
            completion: c["completion"].as_str().unwrap(),
        })
        .collect();
    let scores = judge.score_batch(&rows).unwrap();
    for (c, s) in cases.iter().zip(&scores) {
        let want = c["p_positive"].as_f64().unwrap();
        assert!((s.value as f64 - want).abs() < 1e-5, "{c}: {}", s.value);
        let ids = &c["label_ids"];
        assert!(
            s.reason
                .contains(&format!("tokens {} / {}", ids[0], ids[1])),
            "{}",
            s.reason
        );
        let logit = c["logits"][0].as_f64().unwrap() as f32;
        assert!((part(s, "logit_positive") - logit).abs() < 1e-4);
    }
}

#[test]
fn labels_are_tokenized_in_context() {
    // The template ends in a space, which byte-level BPE merges into the label: "? " + "the"
    // reads "?", "Ġthe". The answer position is then after "?" and the labels' tokens are
    // "Ġthe" / "Ġa", not "the" / "a" as the words tokenize alone.
    let cfg = label_config(
        "template_text = \"{question} {completion} Is it right? \"\nchat = false\n\
         labels = [\"the\", \"a\"]",
    );
    let judge = LabelJudge::new(&cfg, &Device::Cpu, DType::F32).unwrap();
    let m = load_fixture("tiny_llama");
    let decoder = Decoder::new(&m.config, &m.params, Mode::Infer).unwrap();
    let tok = &m.tokenizer;
    let ex = example("Is 3 odd");
    let s = &judge
        .score_batch(&[JudgeRow {
            example: &ex,
            prompt: "",
            completion: "yes",
        }])
        .unwrap()[0];
    let text = "Is 3 odd yes Is it right?";
    let ids = tok.encode(text, true).unwrap();
    let in_context = |w: &str| tok.token_id(&format!("Ġ{w}")).unwrap();
    let (the, a) = (in_context("the"), in_context("a"));
    assert_ne!(the, tok.encode("the", false).unwrap()[0]);
    assert_ne!(a, tok.encode("a", false).unwrap()[0]);
    // What the model sees with the space and a label appended continues `ids` with that token.
    assert_eq!(
        tok.encode(&format!("{text} the"), true).unwrap(),
        [ids.clone(), vec![the]].concat()
    );
    let (p, la, lb) = direct(&decoder, &ids, the, a);
    assert!((s.value as f64 - p).abs() < 1e-5, "{} vs {p}", s.value);
    assert!((part(s, "logit_positive") - la).abs() < 1e-4);
    assert!((part(s, "logit_negative") - lb).abs() < 1e-4);
}

fn llmrl(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_llmrl"))
        .args(args)
        .output()
        .expect("binary runs")
}

fn failure(args: &[&str]) -> String {
    let out = llmrl(args);
    assert!(!out.status.success(), "llmrl {args:?} should fail");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!err.contains("panicked"), "{err}");
    err
}

fn write_judge(dir: &Path, extra: &str) -> String {
    let model = fixture_dir("tiny_llama");
    let path = dir.join("judge.toml");
    std::fs::write(
        &path,
        format!(
            "name = \"label\"\nmodel = {:?}\n\
             template_text = \"Question: {{question}}\\nAnswer: {{completion}}\\nRight?\"\n{extra}",
            model.to_str().unwrap()
        ),
    )
    .unwrap();
    path.to_string_lossy().into_owned()
}

#[test]
fn score_judge_prints_the_auc_of_the_probabilities_it_writes() {
    let d = tempfile::tempdir().unwrap();
    let judge = write_judge(d.path(), "");
    let input = d.path().join("rows.jsonl");
    // Labels in each documented spelling, and one unlabelled row.
    let rows = [
        r#"{"question": "2+2?", "completion": "4", "label": "Yes"}"#,
        r#"{"question": "2+2?", "completion": "5", "label": "No."}"#,
        r#"{"question": "Capital of France?", "completion": "Paris", "label": 1}"#,
        r#"{"question": "Capital of France?", "completion": "Rome", "label": false}"#,
        r#"{"question": "3*3?", "completion": "9", "label": "yes"}"#,
        r#"{"question": "3*3?", "completion": "6", "label": 0}"#,
        r#"{"question": "Sky colour?", "completion": "blue"}"#,
    ];
    std::fs::write(&input, rows.join("\n") + "\n").unwrap();
    let out_file = d.path().join("scored.jsonl");
    let out = llmrl(&[
        "score",
        "--judge",
        &judge,
        "--input",
        input.to_str().unwrap(),
        "--out",
        out_file.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap();
    let scored: Vec<Value> = std::fs::read_to_string(&out_file)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(scored.len(), 7);
    assert!(scored[6].get("true_label").is_none());
    let labelled: Vec<(f64, bool)> = scored
        .iter()
        .filter_map(|r| Some((r["probability"].as_f64()?, r.get("true_label")?.as_bool()?)))
        .collect();
    assert_eq!(labelled.len(), 6);
    assert_eq!(
        labelled.iter().map(|l| l.1).collect::<Vec<_>>(),
        [true, false, true, false, true, false]
    );
    // By hand: the share of (positive, negative) pairs the positive wins, ties counting half.
    let (mut wins, mut pairs) = (0.0, 0.0);
    for &(p, _) in labelled.iter().filter(|l| l.1) {
        for &(n, _) in labelled.iter().filter(|l| !l.1) {
            pairs += 1.0;
            wins += if p > n {
                1.0
            } else if p == n {
                0.5
            } else {
                0.0
            };
        }
    }
    let m = &summary["labelled"];
    assert_eq!(m["count"], 6);
    assert_eq!(m["positives"], 3);
    let auc = m["auc"].as_f64().unwrap();
    assert!(
        (auc - wins / pairs).abs() < 1e-6,
        "{auc} vs {}",
        wins / pairs
    );
    let right = labelled.iter().filter(|(p, y)| (*p >= 0.5) == *y).count();
    assert!((m["accuracy"].as_f64().unwrap() - right as f64 / 6.0).abs() < 1e-9);
    let ll: f64 = labelled
        .iter()
        .map(|&(p, y)| -(if y { p } else { 1.0 - p }).ln())
        .sum::<f64>()
        / 6.0;
    assert!((m["log_loss"].as_f64().unwrap() - ll).abs() < 1e-5);
}

#[test]
fn labels_that_share_their_first_token_are_one_clear_error() {
    // In the fixture's byte-level BPE " Yes" and " No" both start with "Ġ" after "Right?".
    let d = tempfile::tempdir().unwrap();
    let judge = write_judge(d.path(), "chat = false\nlabels = [\" Yes\", \" No\"]");
    let input = d.path().join("rows.jsonl");
    std::fs::write(&input, "{\"question\": \"q\", \"completion\": \"c\"}\n").unwrap();
    let e = failure(&[
        "score",
        "--judge",
        &judge,
        "--input",
        input.to_str().unwrap(),
    ]);
    assert!(
        e.contains("\" Yes\" and \" No\" share their first token \"Ġ\""),
        "{e}"
    );
    assert!(
        !d.path().join("rows.scored.jsonl").exists(),
        "nothing written"
    );
}

#[test]
fn bad_label_data_is_an_error_naming_the_line() {
    let d = tempfile::tempdir().unwrap();
    let judge = write_judge(d.path(), "");
    let input = d.path().join("rows.jsonl");
    std::fs::write(
        &input,
        "{\"question\": \"q\", \"completion\": \"c\", \"label\": \"Yes\"}\n\
         {\"question\": \"q\", \"completion\": \"c\", \"label\": \"perhaps\"}\n",
    )
    .unwrap();
    let e = failure(&[
        "score",
        "--judge",
        &judge,
        "--input",
        input.to_str().unwrap(),
    ]);
    assert!(e.contains("rows.jsonl:2") && e.contains("perhaps"), "{e}");
    // A typo in the judge config lists the valid keys.
    let judge = write_judge(d.path(), "label_feild = \"y\"");
    let e = failure(&[
        "score",
        "--judge",
        &judge,
        "--input",
        input.to_str().unwrap(),
    ]);
    assert!(
        e.contains("label_feild") && e.contains("label_field"),
        "{e}"
    );
}

/// A recipe whose external verifier names a script that is not there, and whose model's weights
/// are truncated: the verifier's error (with python's own stderr) must come first.
#[test]
fn a_missing_external_verifier_fails_before_weights_load() {
    let d = tempfile::tempdir().unwrap();
    let model = d.path().join("model");
    std::fs::create_dir(&model).unwrap();
    for f in ["config.json", "tokenizer.json", "tokenizer_config.json"] {
        std::fs::copy(fixture_dir("tiny_llama").join(f), model.join(f)).unwrap();
    }
    let st = std::fs::read(fixture_dir("tiny_llama").join("model.safetensors")).unwrap();
    std::fs::write(model.join("model.safetensors"), &st[..st.len() / 2]).unwrap();
    let smoke =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("recipes/smoke.toml"))
            .unwrap();
    let recipe = smoke
        .replace("../tests/fixtures/tiny_llama", "model")
        .replace(
            "\"smoke_verifier.py\"]",
            "\"no_such_verifier.py\"]\nstartup_check_s = 60.0",
        );
    let path = d.path().join("r.toml");
    std::fs::write(&path, recipe).unwrap();
    let run = d.path().join("run");
    let e = failure(&[
        "train",
        path.to_str().unwrap(),
        "--out",
        run.to_str().unwrap(),
    ]);
    assert!(e.contains("exited at start"), "{e}");
    assert!(
        e.contains("no_such_verifier.py") && e.contains("No such file"),
        "{e}"
    );
    assert!(!e.contains("safetensors"), "weights were read first: {e}");
    assert!(!run.exists(), "nothing written");
    // The same through `score --recipe`.
    let input = d.path().join("rows.jsonl");
    std::fs::write(&input, "{\"completion\": \"c\"}\n").unwrap();
    let e = failure(&[
        "score",
        "--recipe",
        path.to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
    ]);
    assert!(e.contains("No such file"), "{e}");
    // A program that is not installed at all.
    let recipe = std::fs::read_to_string(&path).unwrap().replace(
        "[\"python3\", \"no_such_verifier.py\"]",
        "[\"no-such-program-llmrl\"]",
    );
    std::fs::write(&path, recipe).unwrap();
    let e = failure(&[
        "train",
        path.to_str().unwrap(),
        "--out",
        run.to_str().unwrap(),
    ]);
    assert!(
        e.contains("could not start") && e.contains("no-such-program-llmrl"),
        "{e}"
    );
    assert!(!run.exists(), "nothing written");
}
