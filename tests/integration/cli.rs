//! The real binary: smoke recipe, kill-and-resume, error messages and exit codes.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::common::fixture_dir;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_llmrl"))
}

fn repo(p: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(p)
}

fn run_ok(args: &[&str]) -> String {
    let out = bin().args(args).output().expect("binary runs");
    assert!(
        out.status.success(),
        "llmrl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn run_err(args: &[&str]) -> String {
    let out = bin().args(args).output().expect("binary runs");
    assert!(!out.status.success(), "llmrl {args:?} should fail");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!err.contains("panicked"), "{err}");
    err
}

fn metrics(run: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn tensors(path: &Path) -> Vec<(String, Vec<f32>)> {
    let t = candle_core::safetensors::load(path, &candle_core::Device::Cpu).unwrap();
    let mut v: Vec<_> = t
        .into_iter()
        .map(|(k, t)| (k, t.flatten_all().unwrap().to_vec1::<f32>().unwrap()))
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

#[test]
fn smoke_recipe_trains_every_parameter() {
    let d = tempfile::tempdir().unwrap();
    let run = d.path().join("run");
    run_ok(&[
        "train",
        repo("recipes/smoke.toml").to_str().unwrap(),
        "--out",
        run.to_str().unwrap(),
    ]);
    let m = metrics(&run);
    assert_eq!(m.len(), 3);
    for line in &m {
        assert!(line["loss"].as_f64().is_some_and(f64::is_finite), "{line}");
        assert!(line["grad_norm"].as_f64().unwrap() > 0.0);
        for k in [
            "reward_mean",
            "accuracy",
            "entropy",
            "response_length_mean",
            "lr",
            "tokens_per_s",
        ] {
            assert!(line.get(k).is_some(), "metric {k} missing");
        }
    }
    assert!(run.join("rollouts/step_000001.jsonl").is_file());
    assert!(run.join("recipe.resolved.toml").is_file() && run.join("run.json").is_file());
    let before = tensors(&fixture_dir("tiny_llama").join("model.safetensors"));
    let after = tensors(&run.join("checkpoints/step_000003/model/model.safetensors"));
    assert_eq!(before.len(), after.len());
    let unchanged: Vec<&String> = before
        .iter()
        .zip(&after)
        .filter(|(b, a)| b.1 == a.1)
        .map(|(b, _)| &b.0)
        .collect();
    assert!(
        unchanged.is_empty(),
        "parameters that did not change: {unchanged:?}"
    );
    // The saved checkpoint is a loadable model directory.
    let out = run_ok(&[
        "inspect",
        "--model",
        run.join("checkpoints/step_000003/model").to_str().unwrap(),
        "--json",
    ]);
    assert!(out.contains("\"family\":\"llama\""));
}

#[test]
fn killed_run_resumes_to_identical_metrics() {
    kill_and_resume(&[
        "--set",
        "train.max_steps=5",
        "--set",
        "algorithm.epsilon=0.1",
    ]);
}

#[test]
fn killed_rover_imentor_run_resumes_to_identical_metrics() {
    // ROVER with 2 mini-batches (Q' active) plus the i-MENTOR predictor and its optimizer state.
    kill_and_resume(&[
        "--set",
        "train.max_steps=5",
        "--set",
        "algorithm={ name = \"rover\", num_minibatches = 2 }",
        "--set",
        "exploration={ name = \"imentor\" }",
    ]);
}

#[test]
fn killed_int8_rollout_run_resumes_to_identical_metrics() {
    // Rollouts from int8 weights, π_old recomputed exactly, token-truncated correction.
    kill_and_resume(&[
        "--set",
        "train.max_steps=5",
        "--set",
        "generation.rollout_precision=\"int8\"",
    ]);
}

/// Int8 rollouts log the mismatch they correct, and train every parameter like exact ones.
#[test]
fn int8_rollouts_log_the_mismatch() {
    let d = tempfile::tempdir().unwrap();
    let run = d.path().join("run");
    run_ok(&[
        "train",
        repo("recipes/smoke.toml").to_str().unwrap(),
        "--set",
        "generation.rollout_precision=\"int8\"",
        "--set",
        "train.rollout_correction=\"token_mask\"",
        "--out",
        run.to_str().unwrap(),
    ]);
    for line in metrics(&run) {
        let f = |k: &str| {
            line[k]
                .as_f64()
                .unwrap_or_else(|| panic!("{k} missing: {line}"))
        };
        assert!(f("loss").is_finite() && f("grad_norm") > 0.0, "{line}");
        let diff = f("rollout_logp_diff_mean");
        assert!(diff > 0.0 && diff < 0.5, "{line}");
        assert!(f("rollout_logp_diff_max") >= diff);
        let mean = f("rollout_is_ratio_mean");
        assert!(f("rollout_is_ratio_min") <= mean && mean <= f("rollout_is_ratio_max"));
        assert!((0.0..=1.0).contains(&f("rollout_is_capped_fraction")));
        assert!(f("recompute_seconds") >= 0.0);
    }
}

fn kill_and_resume(sets: &[&str]) {
    let d = tempfile::tempdir().unwrap();
    let recipe = repo("recipes/smoke.toml");
    let full = d.path().join("full");
    let mut args = vec![
        "train",
        recipe.to_str().unwrap(),
        "--out",
        full.to_str().unwrap(),
    ];
    args.extend_from_slice(sets);
    run_ok(&args);

    let cut = d.path().join("cut");
    let mut args = vec![
        "train",
        recipe.to_str().unwrap(),
        "--out",
        cut.to_str().unwrap(),
    ];
    args.extend_from_slice(sets);
    let mut child = bin()
        .args(&args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // SIGKILL once two steps are logged: mid-way through step 3 (or between steps).
    let t0 = std::time::Instant::now();
    loop {
        let n = std::fs::read_to_string(cut.join("metrics.jsonl"))
            .map(|s| s.lines().count())
            .unwrap_or(0);
        if n >= 2 || t0.elapsed().as_secs() > 120 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    // A kill can still tear the line being written (a write that crosses a page boundary is
    // interruptible); resuming drops it, so count only whole lines here.
    let logged = std::fs::read_to_string(cut.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .filter(|l| serde_json::from_str::<serde_json::Value>(l).is_ok())
        .count();
    assert!(
        logged < 5,
        "the run finished before it was killed ({logged} steps)"
    );
    run_ok(&["train", "--resume", cut.to_str().unwrap()]);
    assert!(
        llmrl::train::metrics_equal_ignoring_timing(
            &full.join("metrics.jsonl"),
            &cut.join("metrics.jsonl")
        )
        .unwrap(),
        "resumed metrics differ:\n{}\nvs\n{}",
        std::fs::read_to_string(full.join("metrics.jsonl")).unwrap(),
        std::fs::read_to_string(cut.join("metrics.jsonl")).unwrap()
    );
    let a = tensors(&full.join("checkpoints/step_000005/model/model.safetensors"));
    let b = tensors(&cut.join("checkpoints/step_000005/model/model.safetensors"));
    assert!(a == b, "final weights differ after resume");
}

#[test]
fn user_errors_are_one_clear_message() {
    let d = tempfile::tempdir().unwrap();
    let e = run_err(&["inspect", "--model", "/no/such/model"]);
    assert!(e.contains("not found"), "{e}");
    // A directory without config.json.
    let e = run_err(&["inspect", "--model", d.path().to_str().unwrap()]);
    assert!(e.contains("config.json"), "{e}");
    // Without a tokenizer.
    let m = d.path().join("m");
    std::fs::create_dir(&m).unwrap();
    std::fs::copy(
        fixture_dir("tiny_llama").join("config.json"),
        m.join("config.json"),
    )
    .unwrap();
    let e = run_err(&["inspect", "--model", m.to_str().unwrap()]);
    assert!(e.contains("tokenizer.json"), "{e}");
    // Unsupported model_type.
    std::fs::copy(
        fixture_dir("tiny_llama").join("tokenizer.json"),
        m.join("tokenizer.json"),
    )
    .unwrap();
    let cfg = std::fs::read_to_string(m.join("config.json"))
        .unwrap()
        .replace("\"llama\"", "\"gpt_neox\"");
    std::fs::write(m.join("config.json"), cfg).unwrap();
    let e = run_err(&["inspect", "--model", m.to_str().unwrap()]);
    assert!(e.contains("unsupported model_type `gpt_neox`"), "{e}");
    // A truncated safetensors file.
    std::fs::copy(
        fixture_dir("tiny_llama").join("config.json"),
        m.join("config.json"),
    )
    .unwrap();
    let st = std::fs::read(fixture_dir("tiny_llama").join("model.safetensors")).unwrap();
    std::fs::write(m.join("model.safetensors"), &st[..st.len() / 2]).unwrap();
    let e = run_err(&["inspect", "--model", m.to_str().unwrap()]);
    assert!(e.contains("safetensors"), "{e}");
    // A truncated GGUF.
    let g = d.path().join("bad.gguf");
    std::fs::write(&g, b"GGUF\x03\x00\x00\x00").unwrap();
    let e = run_err(&["inspect", "--model", g.to_str().unwrap()]);
    assert!(e.contains("GGUF"), "{e}");
    // A recipe with a typo.
    let r = d.path().join("r.toml");
    std::fs::write(
        &r,
        std::fs::read_to_string(repo("recipes/smoke.toml"))
            .unwrap()
            .replace("max_steps", "max_step"),
    )
    .unwrap();
    let e = run_err(&["train", r.to_str().unwrap()]);
    assert!(e.contains("unknown field `max_step`"), "{e}");
    // A run directory is never overwritten.
    let e = run_err(&[
        "train",
        repo("recipes/smoke.toml").to_str().unwrap(),
        "--out",
        d.path().to_str().unwrap(),
    ]);
    assert!(e.contains("not empty"), "{e}");
}

#[test]
fn generate_json_reports_each_sample() {
    let out = run_ok(&[
        "generate",
        "--model",
        fixture_dir("tiny_qwen2").to_str().unwrap(),
        "--prompt",
        "Hello",
        "--chat",
        "--n",
        "3",
        "--temperature",
        "0.8",
        "--max-new-tokens",
        "5",
        "--seed",
        "1",
        "--json",
    ]);
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    for l in &lines {
        assert_eq!(
            l["token_ids"].as_array().unwrap().len(),
            l["logprobs"].as_array().unwrap().len()
        );
        assert!(l["text"].is_string() && l["finish_reason"].is_string());
    }
}

#[test]
fn score_command_writes_scores() {
    let d = tempfile::tempdir().unwrap();
    let input = d.path().join("c.jsonl");
    std::fs::write(
        &input,
        "{\"nums\":[1,2,3],\"target\":6,\"completion\":\"<answer>1+2+3</answer>\"}\n{\"nums\":[1,2,3],\"target\":6,\"completion\":\"no idea\"}\n",
    )
    .unwrap();
    let out = run_ok(&[
        "score",
        "--verifier",
        "countdown",
        "--input",
        input.to_str().unwrap(),
    ]);
    assert!(out.contains("\"accuracy\": 0.5"), "{out}");
    assert!(d.path().join("c.scored.jsonl").is_file());
}
