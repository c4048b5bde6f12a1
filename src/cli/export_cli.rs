//! `llmrl export`: a run's trained model as files other tools read, and the loading of a run's
//! latest checkpoint (full model or LoRA adapter on its base) that `llmrl eval` shares.

use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};
use candle_core::{DType, Device};
use clap::Args;

use super::console;
use crate::model::{self, lora, LoadedModel, ModelSource};
use crate::recipe;
use crate::run_dir::RunDir;
use crate::train::policy::ADAPTER_DIR;

#[derive(Args, Debug)]
pub struct ExportArgs {
    /// A run directory (its latest checkpoint) or one `checkpoints/step_N` directory.
    pub run: PathBuf,
    /// Merge a LoRA adapter into its base and write the full model (an HF directory
    /// transformers loads). Without it a LoRA run's adapter is written as PEFT's files.
    #[arg(long)]
    pub merge: bool,
    /// Output directory (must not exist or be empty).
    #[arg(long)]
    pub out: PathBuf,
}

pub fn run(a: ExportArgs) -> Result<()> {
    if a.out.exists() && std::fs::read_dir(&a.out)?.next().is_some() {
        bail!(
            "{} exists and is not empty; choose another --out",
            a.out.display()
        );
    }
    let m = load_model_or_run(&a.run.to_string_lossy(), &Device::Cpu, DType::F32)?;
    match (m.params.lora().is_some(), a.merge) {
        (true, false) => {
            lora::save_adapter(&a.out, &m.params, &base_source(&a.run)?.to_string())?;
            m.tokenizer
                .inner()
                .save(a.out.join("tokenizer.json"), false)
                .map_err(|e| anyhow::anyhow!("writing tokenizer.json: {e}"))?;
        }
        _ => {
            let params = lora::merged(&m.params)?;
            model::save_hf_dir(
                &a.out,
                &m.config,
                &params,
                &m.tokenizer,
                m.generation_config.as_ref(),
            )?;
        }
    }
    Ok(())
}

/// The checkpoint directory `spec` names: a run's newest intact one, or `spec` itself when it is one.
fn checkpoint_of(spec: &Path) -> Result<Option<PathBuf>> {
    if spec.join("recipe.resolved.toml").is_file() {
        let run = RunDir::open(spec)?;
        let (_, dir) = run
            .newest_intact_checkpoint(console::reporter().as_ref())?
            .with_context(|| format!("run {} has no checkpoint yet", spec.display()))?;
        return Ok(Some(dir));
    }
    if spec.join("state.json").is_file() {
        return Ok(Some(spec.to_path_buf()));
    }
    Ok(None)
}

/// The run a checkpoint (or run) directory belongs to.
fn run_root(spec: &Path) -> Result<PathBuf> {
    if spec.join("recipe.resolved.toml").is_file() {
        return Ok(spec.to_path_buf());
    }
    // checkpoints/step_N → the run two levels up.
    spec.parent()
        .and_then(Path::parent)
        .filter(|r| r.join("recipe.resolved.toml").is_file())
        .map(Path::to_path_buf)
        .with_context(|| {
            format!(
                "{} is not inside a run directory (no recipe.resolved.toml two levels up); \
                 hint: a LoRA checkpoint needs its run's recipe to find the base model",
                spec.display()
            )
        })
}

/// The base model of a run: its recipe's `[model] source`, resolved as `train --resume` does.
fn base_source(spec: &Path) -> Result<ModelSource> {
    let root = run_root(spec)?;
    let run = RunDir::open(&root)?;
    let recipe_dir = run.recipe_dir()?;
    let r = recipe::load_recipe(&run.path("recipe.resolved.toml"), &[])?;
    recipe::resolve_model(&r.model.source, &recipe_dir)
}

/// A model source, or a run / checkpoint directory: its full model, or its LoRA adapter loaded
/// on the run's base model (generation then runs on merged weights).
pub fn load_model_or_run(spec: &str, device: &Device, dtype: DType) -> Result<LoadedModel> {
    let p = Path::new(spec);
    let Some(ckpt) = checkpoint_of(p)? else {
        return model::load(&ModelSource::parse(spec)?, device, dtype);
    };
    let adapter = ckpt.join(ADAPTER_DIR);
    if !adapter.join(lora::ADAPTER_CONFIG).is_file() {
        return model::load(&ModelSource::Dir(ckpt.join("model")), device, dtype);
    }
    let src = base_source(p)?;
    let mut m = model::load(&src, device, dtype)
        .with_context(|| format!("loading the base model {src} of {spec}"))?;
    lora::load_adapter(&adapter, &mut m, None)
        .with_context(|| format!("loading the adapter in {}", adapter.display()))?;
    ensure!(m.params.lora().is_some(), "adapter attached");
    Ok(m)
}
