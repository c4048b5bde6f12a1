//! TrackRec on the tiny random fixture (G and V both `tiny_llama`, synthetic prompts): a whole
//! run with S-DPO, a run killed inside G's S-DPO and resumed (same V metrics as uninterrupted),
//! the RL variant, V's score against a direct two-token softmax, and bad input.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;

use candle_core::{DType, Device};
use llmrl::data::Example;
use llmrl::model::decoder::logits_of;
use llmrl::model::{Decoder, Message, Mode};
use llmrl::progress::Silent;
use llmrl::rec::trackrec::{config, run, validator};
use serde_json::Value;

use crate::common::{fixture_dir, load_fixture};

/// Eight training and six test prompts, labels alternating.
fn write_prompts(dir: &Path) {
    let genres = ["comedy", "horror", "drama", "action", "romance", "sci-fi"];
    for (name, n) in [("train.jsonl", 8), ("test.jsonl", 6)] {
        let mut text = String::new();
        for i in 0..n {
            let g = genres[i % genres.len()];
            let row = serde_json::json!({
                "history": format!("User Preference: \"A {g} film\"\nUser Unpreference: \"B\""),
                "candidate": format!("Another {g} film {i}"),
                "label": if i % 2 == 0 { "Yes." } else { "No." },
            });
            text.push_str(&format!("{row}\n"));
        }
        std::fs::write(dir.join(name), text).unwrap();
    }
}

fn recipe(dir: &Path, algorithm: &str) -> PathBuf {
    write_prompts(dir);
    let model = fixture_dir("tiny_llama");
    let model = model.to_str().unwrap();
    let text = format!(
        r#"
seed = 3
[trackrec]
rounds = 1
num_cots = 3
train_prompts = 0
test_prompts = 0
bootstrap = 50
generate_batch = 6
[data]
source = "jsonl"
train = "train.jsonl"
test = "test.jsonl"
[generator.model]
source = "{model}"
[generator.generation]
max_new_tokens = 6
temperature = 1.0
[generator.algorithm]
{algorithm}
[generator.train]
prompts_per_step = 2
micro_batch_size = 8
[generator.optimizer]
learning_rate = 1e-2
[generator.checkpoint]
every = 1
keep_last = 5
[validator.model]
source = "{model}"
[validator.algorithm]
name = "sft"
[validator.train]
prompts_per_step = 4
[validator.optimizer]
learning_rate = 1e-2
"#
    );
    let path = dir.join("trackrec.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn start(recipe_path: &Path, out: &Path) -> config::TrackRecPlan {
    start_with(recipe_path, out, &[])
}

fn start_with(recipe_path: &Path, out: &Path, overrides: &[String]) -> config::TrackRecPlan {
    let plan = config::load(recipe_path, overrides)
        .unwrap()
        .resolve(recipe_path)
        .unwrap();
    run::create(&plan, out, serde_json::json!({})).unwrap();
    plan
}

fn eval_lines(root: &Path) -> Vec<Value> {
    std::fs::read_to_string(root.join("eval.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn metrics_lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dst = to.join(e.file_name());
        if e.path().is_dir() {
            copy_dir(&e.path(), &dst);
        } else {
            std::fs::copy(e.path(), &dst).unwrap();
        }
    }
}

/// The uninterrupted run, then its directory as a kill after step 1 of G's S-DPO leaves it
/// (later checkpoints, metrics lines and stages gone, `state.json` without them), resumed: every
/// V metric and G's training metrics come out the same.
#[test]
fn a_run_killed_during_sdpo_resumes_to_the_same_v_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let path = recipe(dir.path(), "name = \"sdpo\"\nbeta = 0.1");
    let whole = dir.path().join("whole");
    let plan = start(&path, &whole);
    run::run(&plan, &whole, &Silent).unwrap();
    let evals = eval_lines(&whole);
    let stages: Vec<&str> = evals.iter().map(|v| v["stage"].as_str().unwrap()).collect();
    assert_eq!(
        stages,
        ["eval-zero-shot", "eval-no-cot", "eval-r0", "eval-r1"]
    );
    for v in &evals {
        assert_eq!(v["count"], 6);
        assert!(v["auc"].as_f64().is_some(), "{v}");
        let [lo, hi] = [&v["auc_ci95"][0], &v["auc_ci95"][1]].map(|x| x.as_f64().unwrap());
        assert!(lo <= v["auc"].as_f64().unwrap() && v["auc"].as_f64().unwrap() <= hi);
    }
    // The round's CoTs and preference lists are readable files; every prompt is accounted for.
    let s: Value = serde_json::from_str(
        &std::fs::read_to_string(whole.join("stages/r1-score/summary.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(s["samples"], 24);
    let lists = s["preference_lists"].as_u64().unwrap();
    assert_eq!(lists + s["dropped_all_tie"].as_u64().unwrap(), 8);
    assert!(lists >= 2, "{s}");
    let g_metrics = whole.join("stages/r1-g/run/metrics.jsonl");
    let g_lines = metrics_lines(&g_metrics);
    assert!(
        g_lines.len() >= 2,
        "S-DPO needs two steps to be killed in between"
    );
    assert!(g_lines[0]["loss"].as_f64().unwrap() > 0.0);

    // The kill: after step 1 of r1-g.
    let killed = dir.path().join("killed");
    copy_dir(&whole, &killed);
    let r1g = killed.join("stages/r1-g/run");
    for e in std::fs::read_dir(r1g.join("checkpoints")).unwrap() {
        let p = e.unwrap().path();
        if p.file_name().unwrap() != "step_1" {
            std::fs::remove_dir_all(p).unwrap();
        }
    }
    let first = std::fs::read_to_string(r1g.join("metrics.jsonl")).unwrap();
    std::fs::write(
        r1g.join("metrics.jsonl"),
        first.lines().next().unwrap().to_string() + "\n",
    )
    .unwrap();
    for later in ["g1-cots", "v1", "eval-r1"] {
        std::fs::remove_dir_all(killed.join("stages").join(later)).unwrap();
    }
    let mut state: Value =
        serde_json::from_str(&std::fs::read_to_string(killed.join("state.json")).unwrap()).unwrap();
    let done: Vec<Value> = state["done"]
        .as_array()
        .unwrap()
        .iter()
        .take_while(|s| *s != "r1-g")
        .cloned()
        .collect();
    state["done"] = Value::Array(done);
    std::fs::write(killed.join("state.json"), state.to_string()).unwrap();

    // Resumed through the binary, as a person would.
    llmrl_ok(["trackrec".as_ref(), "--resume".as_ref(), killed.as_os_str()]);
    let again = eval_lines(&killed);
    let key = |v: &Value| {
        let mut v = v.clone();
        v.as_object_mut().unwrap().remove("stage");
        v
    };
    assert_eq!(again.len(), evals.len());
    for (a, b) in evals.iter().zip(&again) {
        assert_eq!(a["stage"], b["stage"]);
        assert_eq!(key(a), key(b), "{}", a["stage"]);
    }
    assert!(
        llmrl::train::metrics_equal_ignoring_timing(&g_metrics, &r1g.join("metrics.jsonl"))
            .unwrap(),
        "G's S-DPO metrics differ after the resume"
    );
}

/// Runs the binary with `args`, as a person would; a failure shows its stderr.
fn llmrl_ok<'a>(args: impl IntoIterator<Item = &'a OsStr>) {
    let out = Command::new(env!("CARGO_BIN_EXE_llmrl"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// GRPO with V as the judge: the same samples per prompt (num_cots) and one V call each. G
/// learns on 4 prompts, V on 8 (G's 4 among them).
#[test]
fn the_rl_variant_trains_g_with_v_as_the_judge() {
    let dir = tempfile::tempdir().unwrap();
    let path = recipe(dir.path(), "name = \"grpo\"");
    let root = dir.path().join("rl");
    let sets = [
        "trackrec.train_prompts=4".to_string(),
        "trackrec.validator_prompts=8".to_string(),
    ];
    let mut plan = start_with(&path, &root, &sets);
    plan.recipe.trackrec.baseline_no_cot = false;
    run::run(&plan, &root, &Silent).unwrap();
    let lines = metrics_lines(&root.join("stages/r1-g/run/metrics.jsonl"));
    assert_eq!(lines.len(), 2, "4 prompts, 2 per step");
    let ids = |p: &str| -> Vec<String> {
        metrics_lines(&root.join(p))
            .iter()
            .map(|v| v["id"].as_str().unwrap().to_string())
            .collect()
    };
    let (g, v) = (ids("prompts/train.jsonl"), ids("prompts/validator.jsonl"));
    assert_eq!((g.len(), v.len()), (4, 8));
    assert!(g.iter().all(|id| v.contains(id)), "{g:?} within {v:?}");
    assert_eq!(ids("stages/r1-g/data.jsonl"), g);
    for stage in ["g0-cots/train", "v0/data", "g1-cots/train", "v1/data"] {
        assert_eq!(ids(&format!("stages/{stage}.jsonl")), v, "{stage}");
    }
    for l in &lines {
        let r = l["reward_mean"].as_f64().unwrap();
        assert!(r > 0.0 && r < 1.0, "V's probability of the true label: {r}");
    }
    let stages: Vec<String> = eval_lines(&root)
        .iter()
        .map(|v| v["stage"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(stages, ["eval-zero-shot", "eval-r0", "eval-r1"]);

    // The run's curves by round, through the binary, as a person would draw them.
    let report = dir.path().join("report");
    let args: [&OsStr; 6] = [
        "report".as_ref(),
        "--format".as_ref(),
        "svg".as_ref(),
        "--out".as_ref(),
        report.as_os_str(),
        root.as_os_str(),
    ];
    llmrl_ok(args);
    let md = std::fs::read_to_string(report.join("summary.md")).unwrap();
    for stage in ["eval-zero-shot", "eval-r0", "eval-r1"] {
        assert!(md.contains(&format!("| {stage} |")), "{stage} in\n{md}");
    }
    assert!(report.join("auc.svg").is_file() && report.join("overview.svg").is_file());
}

/// V's p(Yes) of a TrackRec row is the softmax over the two label tokens' logits of the same
/// text computed by hand (the label judge's own test covers batching and transformers parity).
#[test]
fn v_score_equals_a_direct_two_token_softmax() {
    let model = fixture_dir("tiny_llama");
    let judge = validator::validator_judge(
        model.to_str().unwrap(),
        "trackrec_validator",
        true,
        2,
        &Device::Cpu,
        DType::F32,
    )
    .unwrap();
    let mut fields = serde_json::Map::new();
    for (k, v) in [
        ("history", "User Preference: \"Heat (1995)\""),
        ("candidate", "Ronin (1998)"),
        ("domain", "movie"),
        ("label", "No"),
        ("cot", "Likes crime thrillers."),
    ] {
        fields.insert(k.into(), v.into());
    }
    let ex = Example {
        id: "r".into(),
        fields,
    };
    let s = &validator::score_rows(&judge, std::slice::from_ref(&ex)).unwrap()[0];
    let m = load_fixture("tiny_llama");
    let tpl = llmrl::data::PromptTemplate::load(
        "trackrec_validator",
        &llmrl::data::prompt::builtin_prompts_dir(),
    )
    .unwrap();
    let user = tpl.render(&ex).unwrap();
    assert!(user.contains("<summary>Likes crime thrillers.</summary>"));
    let text = m
        .tokenizer
        .apply_chat_template(&[Message::new("user", &user)], true)
        .unwrap();
    let ids = m.tokenizer.encode(&text, false).unwrap();
    let label = |w: &str| m.tokenizer.encode(&format!("{text}{w}"), false).unwrap()[ids.len()];
    let dec = Decoder::new(&m.config, &m.params, Mode::Infer).unwrap();
    let logits = logits_of(&dec, &ids, &Device::Cpu).unwrap();
    let last: Vec<f32> = logits.get(ids.len() - 1).unwrap().to_vec1().unwrap();
    let (ly, ln) = (
        last[label("Yes") as usize] as f64,
        last[label("No") as usize] as f64,
    );
    let p = ly.exp() / (ly.exp() + ln.exp());
    assert!(
        (validator::p_yes(s) - p).abs() < 1e-5,
        "{} vs {p}",
        validator::p_yes(s)
    );
    // The reward is V's probability of the true label ("No" here).
    assert!((s.value as f64 - (1.0 - p)).abs() < 1e-5);
}

/// A prompt row without a label, a label that is not Yes/No/1/0, and a G template without the
/// history slot: one message each, before any model loads and before a run directory exists.
#[test]
fn bad_input_is_one_clear_error_before_any_model_loads() {
    let dir = tempfile::tempdir().unwrap();
    let path = recipe(dir.path(), "name = \"sdpo\"");
    let err = |edit: &dyn Fn(&Path)| -> String {
        write_prompts(dir.path());
        edit(dir.path());
        let out_dir = dir.path().join("never");
        let out = Command::new(env!("CARGO_BIN_EXE_llmrl"))
            .args(["trackrec"])
            .arg(&path)
            .arg("--out")
            .arg(&out_dir)
            .output()
            .unwrap();
        assert!(!out.status.success());
        assert!(!out_dir.exists(), "no run directory for a bad recipe");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let append = |line: &str| {
        let line = line.to_string();
        move |d: &Path| {
            let p = d.join("train.jsonl");
            let mut t = std::fs::read_to_string(&p).unwrap();
            t.push_str(&line);
            t.push('\n');
            std::fs::write(&p, t).unwrap();
        }
    };
    let e = err(&append(r#"{"history": "h", "candidate": "c"}"#));
    assert!(
        e.contains("train.jsonl:9") && e.contains("has no label"),
        "{e}"
    );
    let e = err(&append(
        r#"{"history": "h", "candidate": "c", "label": "Maybe."}"#,
    ));
    assert!(
        e.contains("train.jsonl:9") && e.contains("\"Maybe.\""),
        "{e}"
    );
    assert!(!e.contains("loading"), "{e}");
    // A G template that does not show the history.
    std::fs::write(dir.path().join("g.txt"), "Describe a {domain} fan.").unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        text.replace("[trackrec]\n", "[trackrec]\ngenerator_prompt = \"g.txt\"\n"),
    )
    .unwrap();
    let e = err(&|_| {});
    assert!(e.contains("no {history} slot"), "{e}");
    assert_eq!(e.matches("error:").count(), 1, "{e}");
    // V asked to learn from fewer prompts than G's (G's are drawn from V's).
    std::fs::write(
        &path,
        text.replace(
            "train_prompts = 0\n",
            "train_prompts = 6\nvalidator_prompts = 4\n",
        ),
    )
    .unwrap();
    let e = err(&|_| {});
    assert!(e.contains("validator_prompts = 4 must be 0"), "{e}");
}
