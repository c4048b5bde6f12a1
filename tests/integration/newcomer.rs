//! What a new user meets first (issue "A newcomer's first hour"), through the real binary on the
//! smoke recipe's tiny random Llama: progress lines when stderr is not a terminal, resumes that
//! record their overrides, damaged checkpoints, datasets validated whole, path-like model
//! sources, shipped recipes that run from a clone or say what to run first, and the small
//! silent cases (0 steps, `checkpoint.every = 0`, empty run directories, finish reasons).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::common::fixture_dir;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_llmrl"))
}

fn repo(p: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(p)
}

fn run(args: &[&str]) -> Output {
    bin().args(args).output().expect("binary runs")
}

fn ok(args: &[&str]) -> Output {
    let out = run(args);
    assert!(
        out.status.success(),
        "llmrl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn err_text(out: &Output) -> String {
    assert!(!out.status.success(), "should fail");
    let e = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!e.contains("panicked"), "{e}");
    e
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn smoke(out: &Path, sets: &[&str]) -> Output {
    let recipe = repo("recipes/smoke.toml");
    let mut args = vec![
        "train",
        recipe.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ];
    for s in sets {
        args.extend(["--set", s]);
    }
    ok(&args)
}

fn steps_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir.join("checkpoints"))
        .map(|r| {
            r.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Item 2: `llmrl train` and `llmrl eval` print plain progress lines (job, done/total, figures,
/// elapsed and ETA) when stderr is a pipe, as in a log file or CI.
#[test]
fn progress_is_plain_lines_when_not_a_terminal() {
    let d = tempfile::tempdir().unwrap();
    let r = d.path().join("run");
    let out = smoke(&r, &[]);
    let e = stderr(&out);
    assert!(e.contains("train 1/3 reward"), "{e}");
    assert!(
        e.contains("train 3/3 reward") && e.contains("eta 0:00"),
        "{e}"
    );
    let out = ok(&[
        "eval",
        "--model",
        r.to_str().unwrap(),
        "--recipe",
        repo("recipes/smoke.toml").to_str().unwrap(),
        "--n",
        "2",
        "--max-problems",
        "3",
        "--max-new-tokens",
        "4",
        "--batch",
        "1",
        "--out",
        d.path().join("eval").to_str().unwrap(),
    ]);
    let e = stderr(&out);
    assert!(e.contains("eval 1/3 acc"), "{e}");
    assert!(e.contains("eval 3/3 acc"), "{e}");
    // The summary has the format rate the before/after table reads.
    let s = json(&d.path().join("eval/summary.json"));
    assert!(s["format_rate"].is_f64(), "{s}");
    let out = ok(&[
        "compare",
        &format!("smoke={}", d.path().join("eval").display()),
    ]);
    let t = String::from_utf8_lossy(&out.stdout);
    assert!(
        t.contains("| model | problems × samples | pass@1 | pass@2 |"),
        "{t}"
    );
    assert!(t.contains("| smoke | 3 × 2 |"), "{t}");
}

/// Item 4: `--resume --set` is recorded: run.json gains a `resumes` entry with the step it
/// applies from, recipe.resolved.toml is the recipe in effect, the one before kept.
#[test]
fn resume_overrides_are_recorded() {
    let d = tempfile::tempdir().unwrap();
    let r = d.path().join("run");
    smoke(&r, &["train.max_steps=2"]);
    ok(&[
        "train",
        "--resume",
        r.to_str().unwrap(),
        "--set",
        "train.max_steps=3",
    ]);
    let meta = json(&r.join("run.json"));
    assert_eq!(meta["overrides"], serde_json::json!(["train.max_steps=2"]));
    let resumes = meta["resumes"].as_array().expect("resumes recorded");
    assert_eq!(resumes.len(), 1);
    assert_eq!(resumes[0]["from_step"], 2);
    assert_eq!(
        resumes[0]["overrides"],
        serde_json::json!(["train.max_steps=3"])
    );
    let now = std::fs::read_to_string(r.join("recipe.resolved.toml")).unwrap();
    assert!(now.contains("max_steps = 3"), "{now}");
    let before = std::fs::read_to_string(r.join("recipe.resolved.until_step_2.toml")).unwrap();
    assert!(before.contains("max_steps = 2"), "{before}");
    assert_eq!(
        std::fs::read_to_string(r.join("metrics.jsonl"))
            .unwrap()
            .lines()
            .count(),
        3
    );
    // A finished run resumed without more steps is an error that says how to go on.
    let e = err_text(&run(&["train", "--resume", r.to_str().unwrap()]));
    assert!(
        e.contains("nothing left to train") && e.contains("--set train.max_steps="),
        "{e}"
    );
    assert_eq!(
        json(&r.join("run.json"))["resumes"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

/// Item 5: a damaged newest checkpoint is detected from the manifest written with it; the
/// resume names the file, falls back to the newest intact checkpoint and reproduces the run.
#[test]
fn damaged_checkpoint_falls_back_to_the_newest_intact_one() {
    let d = tempfile::tempdir().unwrap();
    let r = d.path().join("run");
    smoke(&r, &[]);
    assert_eq!(steps_in(&r), ["step_000002", "step_000003"]);
    let m = json(&r.join("checkpoints/step_000003/manifest.json"));
    assert!(
        m["files"]["model/model.safetensors"]["sha256"].is_string(),
        "{m}"
    );
    let original = d.path().join("metrics.orig.jsonl");
    std::fs::copy(r.join("metrics.jsonl"), &original).unwrap();
    let w = r.join("checkpoints/step_000003/model/model.safetensors");
    let bytes = std::fs::read(&w).unwrap();
    std::fs::write(&w, &bytes[..bytes.len() / 2]).unwrap();
    let out = ok(&["train", "--resume", r.to_str().unwrap()]);
    let e = stderr(&out);
    assert!(
        e.contains("step_000003 is damaged: model/model.safetensors has"),
        "{e}"
    );
    assert!(
        e.contains("falling back") && e.contains("step_000002"),
        "{e}"
    );
    assert!(e.contains("resuming") && e.contains("from step 2"), "{e}");
    assert!(
        llmrl::train::metrics_equal_ignoring_timing(&original, &r.join("metrics.jsonl")).unwrap()
    );
    assert_eq!(
        std::fs::read(&w).unwrap().len(),
        bytes.len(),
        "step 3 rewritten"
    );
    assert_eq!(json(&r.join("run.json"))["resumes"][0]["from_step"], 2);
}

/// Item 7: `checkpoint.optimizer_state = "latest"` drops the optimizer state from older
/// checkpoints; a resume from the latest is still exact.
#[test]
fn optimizer_state_latest_keeps_resume_exact() {
    let d = tempfile::tempdir().unwrap();
    let full = d.path().join("full");
    smoke(&full, &["train.max_steps=4"]);
    let cut = d.path().join("cut");
    smoke(
        &cut,
        &["train.max_steps=2", "checkpoint.optimizer_state=latest"],
    );
    assert!(!cut
        .join("checkpoints/step_000001/optimizer.safetensors")
        .exists());
    assert!(cut
        .join("checkpoints/step_000002/optimizer.safetensors")
        .exists());
    let out = ok(&[
        "train",
        "--resume",
        cut.to_str().unwrap(),
        "--set",
        "train.max_steps=4",
    ]);
    assert!(!stderr(&out).contains("warning"), "{}", stderr(&out));
    assert!(llmrl::train::metrics_equal_ignoring_timing(
        &full.join("metrics.jsonl"),
        &cut.join("metrics.jsonl")
    )
    .unwrap());
    assert_eq!(steps_in(&cut), ["step_000003", "step_000004"]);
    assert!(!cut
        .join("checkpoints/step_000003/optimizer.safetensors")
        .exists());
    // Falling back to a checkpoint without optimizer state says the resume is not exact.
    std::fs::remove_dir_all(cut.join("checkpoints/step_000004")).unwrap();
    let out = ok(&["train", "--resume", cut.to_str().unwrap()]);
    assert!(
        stderr(&out).contains("keeps no optimizer state"),
        "{}",
        stderr(&out)
    );
}

/// Item 7: 0 steps is an error before anything is written; `checkpoint.every = 0` writes only
/// the final checkpoint, and none with `save_final = false`; a run that fails before its first
/// step leaves no run directory.
#[test]
fn silent_cases_are_explicit() {
    let d = tempfile::tempdir().unwrap();
    let r = d.path().join("zero");
    let recipe = repo("recipes/smoke.toml");
    let e = err_text(&run(&[
        "train",
        recipe.to_str().unwrap(),
        "--out",
        r.to_str().unwrap(),
        "--set",
        "train.max_steps=0",
    ]));
    assert!(e.contains("max_steps must be ≥ 1"), "{e}");
    assert!(!r.exists());
    let r = d.path().join("final");
    smoke(&r, &["train.max_steps=2", "checkpoint.every=0"]);
    assert_eq!(steps_in(&r), ["step_000002"]);
    let r = d.path().join("none");
    smoke(
        &r,
        &[
            "train.max_steps=2",
            "checkpoint.every=0",
            "checkpoint.save_final=false",
        ],
    );
    assert!(steps_in(&r).is_empty());
    assert!(r.join("metrics.jsonl").is_file());
    // A model directory that exists but cannot load: the failure comes after the run dir is made.
    let m = d.path().join("broken_model");
    std::fs::create_dir(&m).unwrap();
    std::fs::write(m.join("config.json"), "{}").unwrap();
    let r = d.path().join("failed");
    let e = err_text(&run(&[
        "train",
        recipe.to_str().unwrap(),
        "--out",
        r.to_str().unwrap(),
        "--set",
        &format!("model.source={}", m.display()),
    ]));
    assert!(e.contains("removed"), "{e}");
    assert!(!r.exists(), "the failed run left {}", r.display());
}

/// Item 6: every row is validated when the recipe is resolved; the first bad row is named.
#[test]
fn bad_row_is_named_before_training() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(
        d.path().join("cd.jsonl"),
        "{\"nums\": [1, 2, 3], \"target\": 6}\n{\"nums\": [4, 5], \"target\": \"nine\"}\n\
         {\"nums\": [2, 2], \"target\": 4}\n{\"nums\": \"x\", \"target\": 1}\n",
    )
    .unwrap();
    let recipe = d.path().join("r.toml");
    let text = std::fs::read_to_string(repo("recipes/smoke.toml"))
        .unwrap()
        .replace(
            "../tests/fixtures/tiny_llama",
            &fixture_dir("tiny_llama").display().to_string(),
        )
        .replace(
            "source = \"countdown\"\nseed = 0\ncount = 32",
            "source = \"jsonl\"\npath = \"cd.jsonl\"",
        )
        .replace(
            "name = \"external\"\ncommand = [\"python3\", \"smoke_verifier.py\"]\ntimeout_s = 20.0",
            "name = \"countdown\"",
        );
    std::fs::write(&recipe, text).unwrap();
    let r = d.path().join("run");
    let e = err_text(&run(&[
        "train",
        recipe.to_str().unwrap(),
        "--out",
        r.to_str().unwrap(),
    ]));
    assert!(
        e.contains("row cd.jsonl:2 is the first bad row (2 of 4 rows fail this check)"),
        "{e}"
    );
    assert!(!r.exists());
}

/// Item 7: a path-like model source that does not exist is a local "no such" error, never a
/// hub lookup.
#[test]
fn path_like_model_sources_are_local() {
    let d = tempfile::tempdir().unwrap();
    std::fs::create_dir(d.path().join("runs")).unwrap();
    for m in [
        "runs/nonexistent",
        "./x",
        "../x/y",
        "/no/such/model",
        "a/b/c",
        "m.gguf",
    ] {
        let out = bin()
            .args(["inspect", "--model", m])
            .current_dir(d.path())
            .env("HF_HUB_OFFLINE", "0")
            .output()
            .unwrap();
        let e = err_text(&out);
        assert!(e.contains("no such directory or file"), "{m}: {e}");
        assert!(!e.contains("hub"), "{m}: {e}");
    }
}

/// Item 3: a Countdown RL recipe whose SFT warm start is missing names the recipe to run first.
#[test]
fn rl_recipe_without_its_warm_start_names_the_sft_command() {
    let d = tempfile::tempdir().unwrap();
    std::fs::create_dir(d.path().join("recipes")).unwrap();
    for f in ["countdown-grpo.toml", "countdown-sft.toml"] {
        std::fs::copy(
            repo(&format!("recipes/{f}")),
            d.path().join("recipes").join(f),
        )
        .unwrap();
    }
    let out = bin()
        .args(["train", "recipes/countdown-grpo.toml"])
        .current_dir(d.path())
        .output()
        .unwrap();
    let e = err_text(&out);
    assert!(
        e.contains("llmrl train recipes/countdown-sft.toml --out runs/countdown-sft"),
        "{e}"
    );
    assert!(!e.contains("fetch_model"), "{e}");
}

/// Item 3: the GSM8K recipes read `hf://datasets/openai/gsm8k/...`, so they run from a clone;
/// here the hub cache is prepared by hand and read offline.
#[test]
fn gsm8k_recipes_read_the_hub_dataset_from_the_cache() {
    let home = tempfile::tempdir().unwrap();
    let repo_dir = home.path().join("hub/datasets--openai--gsm8k");
    let sha = "0123456789abcdef0123456789abcdef01234567";
    std::fs::create_dir_all(repo_dir.join("refs")).unwrap();
    std::fs::write(repo_dir.join("refs/main"), sha).unwrap();
    let snap = repo_dir.join("snapshots").join(sha).join("main");
    std::fs::create_dir_all(&snap).unwrap();
    for split in ["train", "test"] {
        std::fs::copy(
            repo("tests/fixtures/data/gsm8k_toy.parquet"),
            snap.join(format!("{split}-00000-of-00001.parquet")),
        )
        .unwrap();
    }
    for recipe in ["recipes/gsm8k-grpo.toml", "recipes/gsm8k-rover.toml"] {
        let out = d_eval(home.path(), recipe);
        let s = json(&out.join("summary.json"));
        assert_eq!(s["num_problems"], 2, "{s}");
    }
    // Without the cache and offline, the error says what to set instead.
    let empty = tempfile::tempdir().unwrap();
    let e = err_text(
        &bin()
            .args([
                "train",
                repo("recipes/gsm8k-grpo.toml").to_str().unwrap(),
                "--set",
                &format!("model.source={}", fixture_dir("tiny_llama").display()),
            ])
            .env("HF_HOME", empty.path())
            .env("HF_HUB_OFFLINE", "1")
            .output()
            .unwrap(),
    );
    assert!(
        e.contains("hf://datasets/openai/gsm8k") && e.contains("--set data.path=FILE"),
        "{e}"
    );
}

fn d_eval(hf_home: &Path, recipe: &str) -> PathBuf {
    let out = hf_home.join(recipe.replace('/', "_"));
    let o = bin()
        .args([
            "eval",
            "--model",
            fixture_dir("tiny_llama").to_str().unwrap(),
            "--recipe",
            repo(recipe).to_str().unwrap(),
            "--n",
            "1",
            "--max-new-tokens",
            "2",
            "--out",
            out.to_str().unwrap(),
        ])
        .env("HF_HOME", hf_home)
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .unwrap();
    assert!(o.status.success(), "{recipe}: {}", stderr(&o));
    out
}

/// Item 7: plain `generate` names finish reasons as `--json` does; help texts.
#[test]
fn generate_finish_reasons_and_help() {
    let model = fixture_dir("tiny_qwen2");
    let base = [
        "generate",
        "--model",
        model.to_str().unwrap(),
        "--prompt",
        "Hello",
        "--max-new-tokens",
        "3",
        "--temperature",
        "0.8",
    ];
    let out = ok(&[&base[..], &["--n", "2"]].concat());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("--- sample 0 (length) ---") || text.contains("--- sample 0 (eos) ---"),
        "{text}"
    );
    assert!(!text.contains("Length") && !text.contains("Eos"), "{text}");
    let out = ok(&base);
    assert!(stderr(&out).contains("[finish: "), "{}", stderr(&out));
    let help = String::from_utf8_lossy(&ok(&["train", "--help"]).stdout).into_owned();
    assert!(
        help.contains("--device <D>") && help.contains("cuda:N"),
        "{help}"
    );
    let help = String::from_utf8_lossy(&ok(&["generate", "--help"]).stdout).into_owned();
    assert!(help.contains("The prompt text"), "{help}");
}

/// Items 1 and 8: every shipped Countdown recipe says which format rule it scores with.
#[test]
fn countdown_recipes_record_their_format_rule() {
    let mut n = 0;
    for e in std::fs::read_dir(repo("recipes")).unwrap() {
        let p = e.unwrap().path();
        let text = std::fs::read_to_string(&p).unwrap_or_default();
        if p.extension().is_some_and(|x| x == "toml") && text.contains("name = \"countdown\"") {
            assert!(
                text.contains("format_rule = \""),
                "{} does not say its format_rule",
                p.display()
            );
            n += 1;
        }
    }
    assert!(n >= 7, "{n} Countdown recipes");
}
