//! ROVER's theorem in miniature (eval/tree_mdp): a depth-3 tree over 4 actions with 5 correct
//! leaves; a tiny random Llama trained by ROVER and by GRPO through the same trainer, same
//! seeds, steps and samples; exact leaf probabilities afterwards.
//!
//! `cargo run --release --example tree_mdp -- [STEPS] [SEEDS] [LR]` → eval/results/tree_mdp/

use std::path::PathBuf;

use anyhow::Result;
use llmrl::recipe;
use llmrl::run_dir::RunDir;
use llmrl::toy::{leaf_stats, TreeMdp};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let steps: u64 = args.get(1).map(|s| s.parse()).transpose()?.unwrap_or(60);
    let seeds: u64 = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(3);
    let lr: f64 = args.get(3).map(|s| s.parse()).transpose()?.unwrap_or(1e-3);
    let mdp = TreeMdp::new(3, 4, &["a d c", "b b a", "b c d", "d a a", "d a b"]);
    let greedy = mdp.greedy_on_uniform_q();
    let out = PathBuf::from("eval/results/tree_mdp");
    std::fs::create_dir_all(&out)?;
    let work = tempfile_dir()?;
    let mut rows = Vec::new();
    let mut md = format!(
        "# Tree MDP: ROVER vs GRPO\n\nCommand: `cargo run --release --example tree_mdp -- {steps} {seeds} {lr}`\n\n\
         Depth 3, 4 actions (64 leaves), correct leaves {:?}; uniform-random success {:.3}.\n\
         (a) greedy on the uniform policy's Q (by enumeration) reaches `{}` (reward {}).\n\n\
         {steps} steps × 4 prompts × 8 samples, lr {lr}; exact leaf probabilities of the final policy.\n\n\
         | algorithm | seed | success T=1 | success T=0.3 | correct leaves ≥ 1 % (T=1) | leaf entropy (T=1, nats) |\n\
         | --- | --- | --- | --- | --- | --- |\n",
        mdp.correct,
        mdp.correct.len() as f64 / 64.0,
        mdp.text(&greedy),
        mdp.reward(&greedy)
    );
    for seed in 0..seeds {
        // GRPO takes one optimizer step per rollout batch, ROVER four (its default, needed for
        // Q'); "grpo ×4" gives GRPO the same number of optimizer steps. ρ scales Q = ρ·log-ratio,
        // so a larger ρ moves the policy less per batch.
        for (name, algo) in [
            (
                "grpo",
                r#"{ name = "grpo", loss_type = "dapo", scale_rewards = "group" }"#,
            ),
            (
                "grpo ×4",
                r#"{ name = "grpo", loss_type = "dapo", scale_rewards = "group" }"#,
            ),
            (
                "rover ρ=1",
                r#"{ name = "rover", num_minibatches = 4, rho = 1.0 }"#,
            ),
            (
                "rover ρ=4",
                r#"{ name = "rover", num_minibatches = 4, rho = 4.0 }"#,
            ),
        ] {
            let dir = work.join(format!(
                "{}_{seed}",
                name.replace([' ', '×', 'ρ', '='], "_")
            ));
            mdp.write_model(&dir.join("model"), seed)?;
            let recipe_path = mdp.write_task(&dir, algo, steps, lr, seed)?;
            let sets: Vec<String> = if name == "grpo ×4" {
                vec!["train.num_minibatches=4".into()]
            } else {
                vec![]
            };
            let plan = recipe::load_recipe(&recipe_path, &sets)?.resolve(&recipe_path)?;
            let run = RunDir::create(&dir.join("run"))?;
            llmrl::train::train(&plan, &run, false, &llmrl::progress::Silent)?;
            let model = run.checkpoint_dir(steps).join("model");
            let s1 = leaf_stats(&mdp, &mdp.leaf_probabilities(&model, 1.0)?);
            let s03 = leaf_stats(&mdp, &mdp.leaf_probabilities(&model, 0.3)?);
            md.push_str(&format!(
                "| {name} | {seed} | {:.3} | {:.3} | {} | {:.3} |\n",
                s1.success, s03.success, s1.correct_leaves_over_1pct, s1.entropy
            ));
            rows.push(serde_json::json!({"algorithm": name, "seed": seed, "t1": s1, "t03": s03}));
            eprintln!("{name} seed {seed}: {s1:?} / T=0.3 {s03:?}");
        }
    }
    md.push_str("\n| algorithm | mean success T=1 | mean success T=0.3 | mean correct leaves ≥ 1 % | mean entropy |\n| --- | --- | --- | --- | --- |\n");
    for name in ["grpo", "grpo ×4", "rover ρ=1", "rover ρ=4"] {
        let mine: Vec<&serde_json::Value> =
            rows.iter().filter(|r| r["algorithm"] == name).collect();
        let mean = |f: &dyn Fn(&serde_json::Value) -> f64| {
            mine.iter().map(|r| f(r)).sum::<f64>() / mine.len().max(1) as f64
        };
        md.push_str(&format!(
            "| {name} | {:.3} | {:.3} | {:.2} | {:.3} |\n",
            mean(&|r| r["t1"]["success"].as_f64().unwrap_or(f64::NAN)),
            mean(&|r| r["t03"]["success"].as_f64().unwrap_or(f64::NAN)),
            mean(&|r| r["t1"]["correct_leaves_over_1pct"]
                .as_f64()
                .unwrap_or(f64::NAN)),
            mean(&|r| r["t1"]["entropy"].as_f64().unwrap_or(f64::NAN)),
        ));
    }
    std::fs::write(out.join("summary.md"), md)?;
    std::fs::write(
        out.join("results.jsonl"),
        rows.iter()
            .map(|r| r.to_string() + "\n")
            .collect::<String>(),
    )?;
    Ok(())
}

fn tempfile_dir() -> Result<PathBuf> {
    let d = std::env::temp_dir().join(format!("llmrl_tree_mdp_{}", std::process::id()));
    std::fs::create_dir_all(&d)?;
    Ok(d)
}
