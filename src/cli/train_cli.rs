//! `llmrl train`: a new run (recipe → plan → run directory → trainer) or a resume, and what the
//! run directory records about each (run.json, recipe.resolved.toml). Part of the CLI layer.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::{console, read_text, TrainArgs};
use crate::run_dir::{self, RunDir};
use crate::{recipe, train};

pub fn run(a: TrainArgs) -> Result<()> {
    // --device D is the override model.device=D, recorded like any other.
    let mut sets = a.set.clone();
    if let Some(d) = &a.device {
        sets.push(format!("model.device={d}"));
    }
    // One process of several (scripts/launch_nccl.sh): rank 0 alone writes the run directory.
    let follower = crate::parallel::launched()?.is_some_and(|e| e.rank > 0);
    if let Some(run_dir) = &a.resume {
        return resume_run(run_dir, &sets, follower);
    }
    let Some(path) = &a.recipe else {
        bail!("give a recipe (llmrl train recipes/smoke.toml) or --resume RUN_DIR");
    };
    let recipe = recipe::load_recipe(path, &sets)?;
    let plan = recipe.resolve(path)?;
    if follower {
        let Some(out) = &a.out else {
            bail!("a multi-process launch needs --out DIR: every rank must name the same run directory");
        };
        let run = RunDir::written_by_another_rank(out);
        return train::train_from(&plan, &run, train::Start::New, &crate::progress::Silent);
    }
    let out = match &a.out {
        Some(o) => o.clone(),
        None => free_run_dir(&plan.name),
    };
    let created = !out.exists();
    let run = RunDir::create(&out)?;
    run.write_text(
        "recipe.resolved.toml",
        &toml::to_string_pretty(&plan.recipe)?,
    )?;
    let base = std::fs::canonicalize(&plan.base_dir).unwrap_or(plan.base_dir.clone());
    let meta = serde_json::json!({
        "name": plan.name,
        "algorithm": algorithm_name(&plan.recipe.algorithm),
        "seed": plan.recipe.seed,
        "git_commit": run_dir::git_commit(),
        "recipe": path.display().to_string(),
        "recipe_dir": base.display().to_string(),
        "overrides": sets,
        "llmrl_version": env!("CARGO_PKG_VERSION"),
    });
    run.write_text("run.json", &serde_json::to_string_pretty(&meta)?)?;
    let report = console::reporter();
    report.message(&format!("run directory: {}", out.display()));
    let result = train::train_from(&plan, &run, train::Start::New, report.as_ref());
    // A run that failed before its first step leaves nothing worth keeping: no empty run dir.
    if result.is_err() && run.discard_if_unused(created)? {
        report.message(&format!(
            "removed {} (the run failed before its first step)",
            out.display()
        ));
    }
    result
}

/// `llmrl train --resume RUN [--set k=v]...`: the run continues from its newest intact
/// checkpoint, and its directory records what this resume runs: run.json gains a `resumes`
/// entry (step it applies from, overrides, commit), and recipe.resolved.toml becomes the recipe
/// in effect, the one it replaces kept as recipe.resolved.until_step_N.toml.
///
/// A follower rank of a multi-process launch only reads: the checkpoint rank 0 resumes from.
fn resume_run(run_dir: &Path, sets: &[String], follower: bool) -> Result<()> {
    let run = RunDir::open(run_dir)?;
    if follower {
        let recipe = recipe::load_recipe(&run.path("recipe.resolved.toml"), sets)?;
        let plan = recipe.resolve(&run.recipe_dir()?.join("recipe.toml"))?;
        let from = run.newest_intact_checkpoint(&crate::progress::Silent)?;
        return train::train_from(
            &plan,
            &run,
            train::Start::Resume(from),
            &crate::progress::Silent,
        );
    }
    let mut meta: serde_json::Value =
        serde_json::from_str(&read_text(&run.path("run.json"))?).context("reading run.json")?;
    let recipe_dir = run.recipe_dir()?;
    let resolved = run.path("recipe.resolved.toml");
    let recipe = recipe::load_recipe(&resolved, sets)?;
    let plan = recipe.resolve(&recipe_dir.join("recipe.toml"))?;
    let report = console::reporter();
    let from = run.newest_intact_checkpoint(report.as_ref())?;
    let from_step = from.as_ref().map_or(0, |(s, _)| *s);
    if from.is_some() {
        train::check_resume_step(from_step, plan.recipe.train.max_steps)?;
    }
    let text = toml::to_string_pretty(&plan.recipe)?;
    if text != read_text(&resolved)? {
        let kept = (1..)
            .map(|i| match i {
                1 => format!("recipe.resolved.until_step_{from_step}.toml"),
                _ => format!("recipe.resolved.until_step_{from_step}-{i}.toml"),
            })
            .find(|n| !run.path(n).exists())
            .expect("an unused name");
        std::fs::rename(&resolved, run.path(&kept))
            .with_context(|| format!("keeping the previous recipe as {kept}"))?;
        run.write_text("recipe.resolved.toml", &text)?;
    }
    let entry = serde_json::json!({
        "from_step": from_step,
        "overrides": sets,
        "git_commit": run_dir::git_commit(),
        "llmrl_version": env!("CARGO_PKG_VERSION"),
    });
    match meta.get_mut("resumes").and_then(|r| r.as_array_mut()) {
        Some(list) => list.push(entry),
        None => meta["resumes"] = serde_json::json!([entry]),
    }
    run.write_text("run.json", &serde_json::to_string_pretty(&meta)?)?;
    train::train_from(&plan, &run, train::Start::Resume(from), report.as_ref())
}

fn algorithm_name(a: &crate::algo::AlgoConfig) -> String {
    serde_json::to_value(a)
        .ok()
        .and_then(|v| v["name"].as_str().map(str::to_string))
        .unwrap_or_default()
}

/// runs/<name>, or runs/<name>-2, -3, ... if taken (a run directory is never overwritten).
pub(super) fn free_run_dir(name: &str) -> PathBuf {
    let base = Path::new("runs").join(name);
    if !base.exists() {
        return base;
    }
    (2..)
        .map(|i| Path::new("runs").join(format!("{name}-{i}")))
        .find(|p| !p.exists())
        .expect("an unused name")
}
