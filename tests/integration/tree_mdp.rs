//! ROVER on an enumerable tree MDP through the real trainer (the full comparison with GRPO over
//! seeds is `cargo run --release --example tree_mdp`, results in eval/results/tree_mdp/).

use llmrl::recipe;
use llmrl::run_dir::RunDir;
use llmrl::toy::{leaf_stats, TreeMdp};

#[test]
fn rover_solves_the_tree_at_low_temperature() {
    let mdp = TreeMdp::new(3, 4, &["a d c", "b b a", "b c d", "d a a", "d a b"]);
    let d = tempfile::tempdir().unwrap();
    mdp.write_model(&d.path().join("model"), 0).unwrap();
    let initial = leaf_stats(
        &mdp,
        &mdp.leaf_probabilities(&d.path().join("model"), 0.3)
            .unwrap(),
    );
    assert!(
        initial.success < 0.3,
        "the random policy should not already solve it: {initial:?}"
    );
    let recipe_path = mdp
        .write_task(
            d.path(),
            r#"{ name = "rover", num_minibatches = 4 }"#,
            40,
            1e-3,
            0,
        )
        .unwrap();
    let plan = recipe::load_recipe(&recipe_path, &[])
        .unwrap()
        .resolve(&recipe_path)
        .unwrap();
    let run = RunDir::create(&d.path().join("run")).unwrap();
    llmrl::train::train(&plan, &run, false, &llmrl::progress::Silent).unwrap();
    let probs = mdp
        .leaf_probabilities(&run.checkpoint_dir(40).join("model"), 0.3)
        .unwrap();
    let s = leaf_stats(&mdp, &probs);
    assert!(s.success >= 0.95, "ROVER at T = 0.3: {s:?}");
}
