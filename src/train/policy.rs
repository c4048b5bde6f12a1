//! The policy a run trains: the model (from the recipe or a checkpoint), what of it trains, and
//! the frozen reference when the algorithm needs one.
//!
//! Full fine-tuning: a checkpoint holds the whole model (`model/`, an HF directory); the
//! reference is a copy of the recipe's model. LoRA (`[model] lora`): the base always comes from
//! the recipe, a checkpoint holds only the adapter (`adapter/`, PEFT's files) and the optimizer
//! state of the adapter tensors; the reference is the base without the adapter, sharing the
//! frozen weights (no second copy of the model).

use std::path::Path;

use anyhow::{Context, Result};
use candle_core::{DType, Device};

use crate::model::{self, lora, LoadedModel, Params, Trainable};
use crate::recipe::Plan;

/// Where a LoRA checkpoint keeps its adapter, beside `optimizer.safetensors` and `state.json`.
pub const ADAPTER_DIR: &str = "adapter";

pub struct Policy {
    pub model: LoadedModel,
    pub trainable: Trainable,
    pub reference: Option<Params>,
}

/// The policy of `plan`, resumed from `checkpoint` (a `checkpoints/step_N` directory) if given.
pub fn load(
    plan: &Plan,
    checkpoint: Option<&Path>,
    device: &Device,
    dtype: DType,
    needs_reference: bool,
) -> Result<Policy> {
    let Some(cfg) = &plan.recipe.model.lora else {
        let mut model = match checkpoint {
            Some(dir) => model::load(&model::ModelSource::Dir(dir.join("model")), device, dtype)
                .with_context(|| format!("loading checkpoint {}", dir.display()))?,
            None => model::load(&plan.model_source, device, dtype)?,
        };
        // Added tokens (a checkpoint has them already: adding is then a no-op that still
        // reports their ids for `train_only_new_tokens`).
        let (_, trainable) = plan.vocab.apply(&mut model).context("[model] add_tokens")?;
        // A frozen reference is the model as loaded from the recipe (never a checkpoint).
        let reference = match (needs_reference, checkpoint) {
            (false, _) => None,
            (true, Some(_)) => {
                let mut m = model::load(&plan.model_source, device, dtype)?;
                plan.vocab.apply(&mut m)?;
                Some(m.params)
            }
            (true, None) => Some(model.params.deep_clone()?),
        };
        return Ok(Policy {
            model,
            trainable,
            reference,
        });
    };
    let mut model = model::load(&plan.model_source, device, dtype)?;
    // Added tokens train as PEFT's `modules_to_save` rows beside the adapter.
    let (added, _) = plan.vocab.apply(&mut model).context("[model] add_tokens")?;
    let rows = (!plan.vocab.tokens.is_empty())
        .then(|| Trainable::token_rows(&added.all_ids(), model.config.tie_word_embeddings));
    let trainable = lora::attach(&mut model, cfg, plan.recipe.seed, rows.as_ref())?;
    // Before the checkpoint's values: `modules_to_save` are copied as the recipe loads them.
    let reference = match needs_reference {
        true => Some(model.params.base_only()?),
        false => None,
    };
    if let Some(dir) = checkpoint {
        lora::load_weights(&dir.join(ADAPTER_DIR), &model.params)
            .with_context(|| format!("loading checkpoint {}", dir.display()))?;
    }
    Ok(Policy {
        model,
        trainable,
        reference,
    })
}

/// Writes the policy's weights into a checkpoint directory: the whole model, or the adapter.
pub fn save(plan: &Plan, m: &LoadedModel, dir: &Path) -> Result<()> {
    if m.params.lora().is_some() {
        return lora::save_adapter(
            &dir.join(ADAPTER_DIR),
            &m.params,
            &plan.model_source.to_string(),
        );
    }
    model::save_hf_dir(
        &dir.join("model"),
        &m.config,
        &m.params,
        &m.tokenizer,
        m.generation_config.as_ref(),
    )
}
