//! Data parallel (`[train] world_size = N`, N workers as threads): the same training as one
//! worker on the union batch, resume across world sizes, i-MENTOR over every rank's
//! trajectories, and the batch-size check.
//!
//! What is exact, and the tolerance elsewhere. A rank runs the forward/backward of the
//! mini-batch's sequences it owns, cut into its own micro-batches, and the ranks' gradient sums
//! are added in rank order. With one sequence per micro-batch and two per mini-batch, that is
//! one worker's sum to the last bit (g0 + g1 either way; x + 0 = x for a rank with nothing),
//! so on reference completions (SFT: nothing is sampled) N workers' weights equal one worker's
//! exactly, whatever N, and a checkpoint resumes at another world size exactly ([`EXACT`]).
//!
//! Sampled rollouts add one source of rounding. Every rank samples the same tokens (seeds are
//! functions of the global prompt index, and the sampler's draws do not depend on the batch),
//! so the rewards, advantages and i-MENTOR's bonuses are equal exactly. But the sampler's
//! log-probs, GRPO's π_old, come from a prefill whose matmul (candle → gemm) picks its
//! blocking from the matrix sizes: a prompt prefilled among the 2 prompts of a rank's shard
//! and among the step's 4 gets log-probs that differ by float rounding (~1e-7 relative). The
//! ratio, and so the gradient, then differ by rounding from the second step on, and AdamW's
//! per-element normalization can turn the rounding of a near-zero gradient element into a
//! visible step: those tests allow |Δw| ≤ [`SAMPLED_TOL`] after 3 steps at learning rate 1e-3
//! (measured here: 3.9e-7 at two workers, 7.2e-6 at four; the weights move by ~1e-3 a step).
//! The same holds with more sequences per micro-batch (which of them share a micro-batch, and
//! the order of the sum, then differ too). Logged metrics are f64 sums over micro-batches,
//! added per rank and then across ranks: compared to 1e-12 relative where the weights are
//! exact.

use std::path::{Path, PathBuf};

use llmrl::recipe::{self, Plan};
use llmrl::run_dir::RunDir;

fn repo(p: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(p)
}

fn plan(sets: &[&str]) -> anyhow::Result<Plan> {
    let path = repo("recipes/smoke.toml");
    let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
    recipe::load_recipe(&path, &sets)?.resolve(&path)
}

fn tensors(p: &Path) -> Vec<(String, Vec<f32>)> {
    let mut v: Vec<(String, Vec<f32>)> =
        candle_core::safetensors::load(p, &candle_core::Device::Cpu)
            .unwrap()
            .into_iter()
            .map(|(k, t)| (k, t.flatten_all().unwrap().to_vec1().unwrap()))
            .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

/// Train `sets` at world size `world` into `dir/name`; the run directory.
fn run(dir: &Path, name: &str, world: usize, sets: &[&str]) -> RunDir {
    let w = format!("train.world_size={world}");
    let mut all = vec![w.as_str()];
    all.extend(sets);
    let p = plan(&all).unwrap();
    let run = RunDir::create(&dir.join(name)).unwrap();
    llmrl::train::train(&p, &run, false, &llmrl::progress::Silent).unwrap();
    run
}

fn weights(r: &RunDir, step: u64) -> Vec<(String, Vec<f32>)> {
    tensors(&r.path(&format!(
        "checkpoints/step_{step:06}/model/model.safetensors"
    )))
}

/// The largest |a − b| over every weight.
fn max_diff(a: &[(String, Vec<f32>)], b: &[(String, Vec<f32>)]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .flat_map(|((n, x), (m, y))| {
            assert_eq!(n, m);
            x.iter().zip(y).map(|(p, q)| (p - q).abs())
        })
        .fold(0.0, f32::max)
}

fn lines(r: &RunDir) -> Vec<serde_json::Value> {
    std::fs::read_to_string(r.path("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Equal, or numbers within 1e-12 relative (f64 sums added in another order).
fn close(a: Option<&serde_json::Value>, b: Option<&serde_json::Value>) -> bool {
    match (a.and_then(|v| v.as_f64()), b.and_then(|v| v.as_f64())) {
        (Some(x), Some(y)) => (x - y).abs() <= 1e-12 * x.abs().max(y.abs()).max(1e-30),
        _ => a == b,
    }
}

/// The metrics of two runs, line by line, timings aside; a mismatch names its step and keys.
fn assert_same_metrics(a: &RunDir, b: &RunDir, what: &str) {
    let (x, y) = (lines(a), lines(b));
    assert_eq!(x.len(), y.len(), "{what}: metric lines");
    for (l, m) in x.iter().zip(&y) {
        let (l, m) = (l.as_object().unwrap(), m.as_object().unwrap());
        let keys: std::collections::BTreeSet<&String> = l.keys().chain(m.keys()).collect();
        let differ: Vec<String> = keys
            .into_iter()
            .filter(|k| !llmrl::train::metrics::TIMING_KEYS.contains(&k.as_str()))
            .filter(|k| !close(l.get(*k), m.get(*k)))
            .map(|k| format!("{k}: {:?} vs {:?}", l.get(k), m.get(k)))
            .collect();
        assert!(
            differ.is_empty(),
            "{what}, step {:?}: {differ:#?}",
            l.get("step")
        );
    }
}

/// The largest weight difference the sampled-rollout tests allow (see the module's note).
const SAMPLED_TOL: f32 = 5e-5;

/// GRPO, 4 prompts × 4 samples for 3 steps, one mini-batch, micro-batches of 4.
const GRPO: [&str; 4] = [
    "train.prompts_per_step=4",
    "train.micro_batch_size=4",
    "checkpoint.every=0",
    "algorithm.beta=0.04",
];

/// SFT on the reference completions of 4 prompts per step, one sequence per micro-batch and two
/// per mini-batch: one worker's gradient sums are the ranks' to the last bit.
const EXACT: [&str; 6] = [
    "algorithm={ name = \"sft\" }",
    "train.prompts_per_step=4",
    "train.micro_batch_size=1",
    "train.num_minibatches=2",
    "checkpoint.every=0",
    "train.max_steps=3",
];

#[test]
fn workers_give_one_workers_weights_to_the_last_bit() {
    let d = tempfile::tempdir().unwrap();
    let one = run(d.path(), "one", 1, &EXACT);
    for world in [2, 4] {
        let many = run(d.path(), &format!("{world}"), world, &EXACT);
        assert_same_metrics(&one, &many, &format!("world size {world}"));
        assert_eq!(lines(&many).len(), 3, "only rank 0 writes metrics");
        assert_eq!(
            max_diff(&weights(&one, 3), &weights(&many, 3)),
            0.0,
            "world size {world}"
        );
    }
}

#[test]
fn sampled_rollouts_are_one_workers_and_weights_equal_within_rounding() {
    let d = tempfile::tempdir().unwrap();
    let one = run(d.path(), "one", 1, &GRPO);
    for world in [2, 4] {
        let many = run(d.path(), &format!("{world}"), world, &GRPO);
        let (a, b) = (lines(&one), lines(&many));
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(&b) {
            // The same samples: rewards and their spread match exactly.
            for k in ["reward_mean", "reward_std", "num_tokens"] {
                assert_eq!(x[k], y[k], "world size {world}, {k}");
            }
        }
        let diff = max_diff(&weights(&one, 3), &weights(&many, 3));
        assert!(
            diff <= SAMPLED_TOL,
            "world size {world}: weights differ by {diff}"
        );
    }
}

/// A run stopped at step 2 by two workers and resumed by one (and the other way round) ends
/// where the uninterrupted two-worker run does.
#[test]
fn a_checkpoint_resumes_at_any_world_size() {
    let d = tempfile::tempdir().unwrap();
    let four: Vec<&str> = EXACT.iter().copied().chain(["train.max_steps=4"]).collect();
    let full = run(d.path(), "full", 2, &four);
    for (first, then) in [(2, 1), (1, 2)] {
        let cut_sets: Vec<&str> = four
            .iter()
            .copied()
            .chain(["train.max_steps=2", "checkpoint.every=2"])
            .collect();
        let name = format!("cut_{first}_{then}");
        let cut = run(d.path(), &name, first, &cut_sets);
        let w = format!("train.world_size={then}");
        let sets: Vec<&str> = four.iter().copied().chain([w.as_str()]).collect();
        llmrl::train::train(&plan(&sets).unwrap(), &cut, true, &llmrl::progress::Silent).unwrap();
        assert_same_metrics(&full, &cut, &name);
        assert_eq!(
            max_diff(&weights(&full, 4), &weights(&cut, 4)),
            0.0,
            "{name}"
        );
    }
}

/// i-MENTOR's predictor trains on every rank's trajectories (gathered): its bonuses are those
/// of one worker, exactly.
#[test]
fn imentor_sees_every_ranks_trajectories() {
    let d = tempfile::tempdir().unwrap();
    let sets: Vec<&str> = GRPO
        .iter()
        .copied()
        .chain(["exploration={ name = \"imentor\" }"])
        .collect();
    let one = run(d.path(), "one", 1, &sets);
    let two = run(d.path(), "two", 2, &sets);
    let (a, b) = (lines(&one), lines(&two));
    assert!(
        a[0]["explore/bonus_mean"].as_f64().is_some_and(|x| x > 0.0),
        "no i-MENTOR bonus: {}",
        a[0]
    );
    for (x, y) in a.iter().zip(&b) {
        for k in [
            "reward_mean",
            "explore/bonus_mean",
            "explore/bonus_max",
            "explore/predictor_loss",
        ] {
            assert_eq!(x[k], y[k], "{k} at step {}", x["step"]);
        }
    }
    let diff = max_diff(&weights(&one, 3), &weights(&two, 3));
    assert!(diff <= SAMPLED_TOL, "weights differ by {diff}");
}

#[test]
fn a_world_size_that_does_not_divide_the_batch_is_refused_before_loading() {
    let Err(err) = plan(&["train.world_size=3"]) else {
        panic!("world_size 3 over 2 prompts was accepted");
    };
    let msg = format!("{err:#}");
    assert!(
        msg.contains("world_size = 3") && msg.contains("prompts_per_step = 2"),
        "{msg}"
    );
    assert!(plan(&["train.world_size=0"]).is_err());
    plan(&["train.world_size=2"]).unwrap();
}

/// Launched as one of several processes without the `nccl` feature, the binary refuses before
/// it writes anything (N unrelated copies would otherwise train into one run directory).
#[cfg(not(feature = "nccl"))]
#[test]
fn a_multi_process_launch_without_nccl_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("run");
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_llmrl"))
        .args([
            "train",
            repo("recipes/smoke.toml").to_str().unwrap(),
            "--out",
        ])
        .arg(&out)
        .env("WORLD_SIZE", "2")
        .env("RANK", "1")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("nccl"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(!out.exists(), "a refused launch wrote {}", out.display());
}
