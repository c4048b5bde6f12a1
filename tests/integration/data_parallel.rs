//! Data parallel (`[train] world_size = N`, N workers as threads): the same weights as one
//! worker on the union batch, resume across world sizes, i-MENTOR over every rank's
//! trajectories, and the batch-size check.
//!
//! Tolerance. Rollouts are identical (sampling seeds are functions of the global prompt index,
//! and a row's generation does not depend on its batch), and so are the per-micro-batch
//! gradients when micro-batches hold one group each. What differs is the order in which those
//! gradients are added: one worker adds a mini-batch's micro-batches left to right,
//! ((g0 + g1) + g2) + g3, while two ranks add their own and then each other's,
//! (g0 + g1) + (g2 + g3). Where the two orders coincide — at most two micro-batches per
//! mini-batch, or no rank but the first holding more than one — the weights are equal to the
//! last bit, and the test asserts exactly that. Elsewhere the gradients differ by float
//! rounding (~1e-7 relative), and AdamW's per-element normalization can turn the rounding of an
//! element whose gradient is near zero into a visible step: the test allows |Δw| ≤ 1e-5 (the
//! learning rate is 1e-3, so a hundredth of one step).

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

/// 4 prompts × 4 samples for 3 steps, one group per micro-batch.
const BASE: [&str; 4] = [
    "train.prompts_per_step=4",
    "train.micro_batch_size=4",
    "checkpoint.every=0",
    "algorithm.beta=0.04",
];

#[test]
fn two_workers_give_one_workers_weights() {
    let d = tempfile::tempdir().unwrap();
    // Two mini-batches of two groups: the reduction orders coincide, equal to the last bit.
    let mb2: Vec<&str> = BASE
        .iter()
        .copied()
        .chain(["train.num_minibatches=2"])
        .collect();
    let one = run(d.path(), "one", 1, &mb2);
    let two = run(d.path(), "two", 2, &mb2);
    assert!(llmrl::train::metrics_equal_ignoring_timing(
        &one.path("metrics.jsonl"),
        &two.path("metrics.jsonl")
    )
    .unwrap());
    assert_eq!(lines(&two).len(), 3, "only rank 0 writes metrics");
    assert_eq!(max_diff(&weights(&one, 3), &weights(&two, 3)), 0.0);

    // One mini-batch of four groups: ((g0+g1)+g2)+g3 vs (g0+g1)+(g2+g3), rounding only.
    let one = run(d.path(), "one_mb1", 1, &BASE);
    for world in [2, 4] {
        let many = run(d.path(), &format!("{world}_mb1"), world, &BASE);
        let diff = max_diff(&weights(&one, 3), &weights(&many, 3));
        assert!(diff <= 1e-5, "world size {world}: weights differ by {diff}");
        let (a, b) = (lines(&one), lines(&many));
        for (x, y) in a.iter().zip(&b) {
            // The rollouts are the same samples: rewards match exactly.
            assert_eq!(x["reward_mean"], y["reward_mean"], "world size {world}");
        }
    }
}

/// A run stopped at step 2 by two workers and resumed by one (and the other way round) ends
/// where the uninterrupted two-worker run does.
#[test]
fn a_checkpoint_resumes_at_any_world_size() {
    let d = tempfile::tempdir().unwrap();
    let mb2: Vec<&str> = BASE
        .iter()
        .copied()
        .chain(["train.num_minibatches=2", "train.max_steps=4"])
        .collect();
    let full = run(d.path(), "full", 2, &mb2);
    for (first, then) in [(2, 1), (1, 2)] {
        let cut_sets: Vec<&str> = mb2
            .iter()
            .copied()
            .chain(["train.max_steps=2", "checkpoint.every=2"])
            .collect();
        let name = format!("cut_{first}_{then}");
        let cut = run(d.path(), &name, first, &cut_sets);
        let w = format!("train.world_size={then}");
        let sets: Vec<&str> = mb2.iter().copied().chain([w.as_str()]).collect();
        llmrl::train::train(&plan(&sets).unwrap(), &cut, true, &llmrl::progress::Silent).unwrap();
        assert!(
            llmrl::train::metrics_equal_ignoring_timing(
                &full.path("metrics.jsonl"),
                &cut.path("metrics.jsonl")
            )
            .unwrap(),
            "{name}"
        );
        assert_eq!(
            max_diff(&weights(&full, 4), &weights(&cut, 4)),
            0.0,
            "{name}"
        );
    }
}

/// i-MENTOR's predictor trains on every rank's trajectories (gathered): its bonuses, and so
/// the run, are those of one worker.
#[test]
fn imentor_sees_every_ranks_trajectories() {
    let d = tempfile::tempdir().unwrap();
    let sets: Vec<&str> = BASE
        .iter()
        .copied()
        .chain([
            "train.num_minibatches=2",
            "exploration={ name = \"imentor\" }",
        ])
        .collect();
    let one = run(d.path(), "one", 1, &sets);
    let two = run(d.path(), "two", 2, &sets);
    assert!(
        lines(&one)[0].get("imentor_bonus_mean").is_some()
            || !lines(&one)[0].as_object().unwrap().is_empty()
    );
    assert!(llmrl::train::metrics_equal_ignoring_timing(
        &one.path("metrics.jsonl"),
        &two.path("metrics.jsonl")
    )
    .unwrap());
    assert_eq!(max_diff(&weights(&one, 3), &weights(&two, 3)), 0.0);
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
