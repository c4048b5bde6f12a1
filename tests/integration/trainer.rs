//! The trainer as a library: `Trainer::step` driven from outside (as a two-model driver would),
//! SFT as an algorithm, and progress through a `Reporter`.

use std::path::{Path, PathBuf};

use llmrl::progress::Recorder;
use llmrl::recipe::{self, Plan};
use llmrl::run_dir::RunDir;
use llmrl::train::{Trainer, TIMING_KEYS};

fn repo(p: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(p)
}

fn plan(path: &Path, sets: &[&str]) -> anyhow::Result<Plan> {
    let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
    recipe::load_recipe(path, &sets)?.resolve(path)
}

/// Two trainers stepped in turn reproduce, each, the loop's own metrics (the smoke golden).
#[test]
fn an_outer_driver_steps_trainers_like_the_loop_does() {
    let p = plan(&repo("recipes/smoke.toml"), &[]).unwrap();
    let golden: Vec<serde_json::Value> =
        std::fs::read_to_string(repo("tests/fixtures/golden_metrics/smoke.metrics.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
    let mut a = Trainer::new(&p, None).unwrap();
    let mut b = Trainer::new(&p, None).unwrap();
    for step in 1..=2u64 {
        for t in [&mut a, &mut b] {
            let (rollout, m) = t.step().unwrap();
            assert_eq!(t.state.step, step);
            assert_eq!(rollout.samples.len(), 8);
            let want = &golden[step as usize - 1];
            for (k, v) in &m {
                if TIMING_KEYS.contains(&k.as_str()) {
                    continue;
                }
                // The golden test's tolerance (the last bit of a loss may differ in-process).
                let w = want[k].as_f64().unwrap_or(f64::NAN);
                assert!(
                    (w - v).abs() <= 1e-6 + 1e-3 * w.abs(),
                    "step {step} {k}: {v} vs {w}"
                );
            }
        }
    }
}

#[test]
fn sft_is_an_algorithm_and_reports_progress() {
    let d = tempfile::tempdir().unwrap();
    let p = plan(
        &repo("recipes/smoke.toml"),
        &["algorithm={ name = \"sft\" }", "train.max_steps=2"],
    )
    .unwrap();
    let run = RunDir::create(&d.path().join("run")).unwrap();
    let rec = Recorder::default();
    llmrl::train::train(&p, &run, false, &rec).unwrap();
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(run.path("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    for l in &lines {
        // Token-mean NLL of Countdown's reference solutions under a random model: about ln V.
        let loss = l["loss"].as_f64().unwrap();
        assert!(loss > 1.0 && loss.is_finite(), "{l}");
        assert!(l["num_tokens"].as_f64().unwrap() > 0.0, "{l}");
        assert!(l.get("reward_mean").is_none(), "SFT judges nothing: {l}");
    }
    assert_ne!(lines[0]["loss"], lines[1]["loss"]);
    let events = rec.lines();
    assert_eq!(events.first().map(String::as_str), Some("begin train 0/2"));
    assert!(events[1].starts_with("progress 1 "), "{events:?}");
    assert_eq!(events.last().map(String::as_str), Some("end"));
}

#[test]
fn sft_on_a_dataset_without_references_names_the_field() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(
        d.path().join("q.jsonl"),
        "{\"nums\": [1, 2], \"target\": 3}\n",
    )
    .unwrap();
    let text = std::fs::read_to_string(repo("recipes/smoke.toml"))
        .unwrap()
        .replace(
            "../tests/fixtures/tiny_llama",
            &repo("tests/fixtures/tiny_llama").display().to_string(),
        );
    let r = d.path().join("r.toml");
    std::fs::write(&r, text).unwrap();
    let e = plan(
        &r,
        &[
            "algorithm={ name = \"sft\" }",
            "verifier={ name = \"countdown\" }",
            "data={ source = \"jsonl\", path = \"q.jsonl\" }",
        ],
    )
    .err()
    .expect("no reference completion");
    let msg = format!("{e:#}");
    assert!(msg.contains("`completion`") && msg.contains("sft"), "{msg}");
}
