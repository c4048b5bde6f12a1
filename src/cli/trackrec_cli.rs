//! `llmrl trackrec`: a TrackRec run (G and V in alternation) from a `recipes/trackrec-*.toml`,
//! or the continuation of a killed one. Its own subcommand rather than `llmrl train`: the recipe
//! holds two models with their own optimizers and algorithms, a different shape from a training
//! recipe (whose keys stay strict), and the run directory is a list of stages, each stage's
//! training an ordinary `llmrl train` run directory inside it. Part of the CLI layer.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;

use super::train_cli::free_run_dir;
use super::{console, read_text};
use crate::rec::trackrec::{config, run};
use crate::run_dir::{self, RunDir};

#[derive(Args, Debug)]
pub struct TrackRecArgs {
    /// The TrackRec recipe (TOML, e.g. recipes/trackrec-tallrec-movie.toml). Not with --resume.
    pub recipe: Option<PathBuf>,
    /// Override any recipe key: --set generator.optimizer.learning_rate=1e-5 (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Run directory (default: runs/<name>, numbered if taken; never overwritten).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Continue a killed run: finished stages are kept, an unfinished training stage continues
    /// from its newest intact checkpoint, an unfinished generation or scoring stage is redone.
    #[arg(long, value_name = "RUN_DIR", conflicts_with = "recipe")]
    pub resume: Option<PathBuf>,
}

pub fn run(a: TrackRecArgs) -> Result<()> {
    let report = console::reporter();
    if let Some(root) = &a.resume {
        if !a.set.is_empty() {
            bail!(
                "--set with --resume: a TrackRec resume reproduces the interrupted run, so its \
                 recipe cannot change; start a new run with the overrides instead"
            );
        }
        if !root.join(run::RESOLVED).is_file() {
            bail!(
                "{} is not a TrackRec run directory (no {})",
                root.display(),
                run::RESOLVED
            );
        }
        let recipe_dir = RunDir {
            root: root.to_path_buf(),
        }
        .recipe_dir()?;
        let recipe: config::TrackRecRecipe = toml::from_str(&read_text(&root.join(run::RESOLVED))?)
            .context("reading the run's resolved recipe")?;
        let plan = recipe.resolve(&recipe_dir.join("recipe.toml"))?;
        run::check_prompts(&plan, root)?;
        report.message(&format!("resuming {}", root.display()));
        return run::run(&plan, root, report.as_ref());
    }
    let Some(path) = &a.recipe else {
        bail!("give a recipe (llmrl trackrec recipes/trackrec-tallrec-movie.toml) or --resume RUN_DIR");
    };
    let plan = config::load(path, &a.set)?.resolve(path)?;
    let out = match &a.out {
        Some(o) => o.clone(),
        None => free_run_dir(&plan.name),
    };
    let base = std::fs::canonicalize(&plan.base_dir).unwrap_or(plan.base_dir.clone());
    let p = &plan.prompts;
    let meta = serde_json::json!({
        "name": plan.name,
        "mode": plan.mode,
        "seed": plan.recipe.seed,
        "git_commit": run_dir::git_commit(),
        "recipe": path.display().to_string(),
        "recipe_dir": base.display().to_string(),
        "overrides": a.set,
        "prompts": {"train": p.train.len(), "validator": p.validator.len(), "test": p.test.len(),
                    "available": {"train": p.available[0], "valid": p.available[1], "test": p.available[2]}},
        "llmrl_version": env!("CARGO_PKG_VERSION"),
    });
    run::create(&plan, &out, meta)?;
    report.message(&format!(
        "run directory: {} ({} G training / {} V training / {} test prompts)",
        out.display(),
        p.train.len(),
        p.validator.len(),
        p.test.len()
    ));
    run::run(&plan, &out, report.as_ref())
}
