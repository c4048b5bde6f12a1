//! Save a model as an HF directory that transformers loads unchanged: `config.json`,
//! `model.safetensors`, tokenizer files and `generation_config.json`.
//!
//! Refuses to write into a non-empty directory that is not an earlier llmrl save, so nothing a user
//! wrote is overwritten; checkpointing writes to a temp dir and renames (see `run_dir`).

use std::collections::HashMap;
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use candle_core::{DType, Tensor};
use serde_json::{json, Value};

use super::config::ModelConfig;
use super::params::Params;
use super::tokenizer::Tokenizer;

pub fn save_hf_dir(
    dir: &Path,
    config: &ModelConfig,
    params: &Params,
    tokenizer: &Tokenizer,
    generation_config: Option<&Value>,
) -> Result<()> {
    if dir.exists() && std::fs::read_dir(dir)?.next().is_some() && !dir.join("config.json").exists()
    {
        bail!(
            "{} exists and is not empty; refusing to write a model into it",
            dir.display()
        );
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let write = |name: &str, v: &Value| -> Result<()> {
        let p = dir.join(name);
        std::fs::write(&p, serde_json::to_string_pretty(v)? + "\n")
            .with_context(|| format!("writing {}", p.display()))
    };
    write("config.json", &config.to_hf_json())?;

    let mut tensors: HashMap<String, Tensor> = HashMap::new();
    for (name, var) in params.named_vars() {
        // f32 on disk: transformers reads it as is, and a bf16 run's master weights stay exact.
        tensors.insert(name, var.as_tensor().to_dtype(DType::F32)?.contiguous()?);
    }
    let st = dir.join("model.safetensors");
    candle_core::safetensors::save(&tensors, &st)
        .with_context(|| format!("writing {}", st.display()))?;

    let tj = dir.join("tokenizer.json");
    tokenizer
        .inner()
        .save(&tj, false)
        .map_err(|e| anyhow!("writing {}: {e}", tj.display()))?;
    let mut tc = json!({
        "tokenizer_class": "PreTrainedTokenizerFast",
        "clean_up_tokenization_spaces": false,
        "model_max_length": config.max_position_embeddings,
    });
    let m = tc.as_object_mut().expect("json! object");
    for (k, v) in [
        ("bos_token", &tokenizer.bos_token),
        ("eos_token", &tokenizer.eos_token),
        ("pad_token", &tokenizer.pad_token),
    ] {
        if let Some(v) = v {
            m.insert(k.into(), v.clone().into());
        }
    }
    if let Some(t) = &tokenizer.chat_template {
        m.insert("chat_template".into(), t.clone().into());
    }
    // As transformers' `save_pretrained` writes it: each added token with its flags, so tools
    // that read only tokenizer_config.json also see which are special (added vocabulary tokens,
    // e.g. Semantic IDs, are not).
    let mut added: Vec<(u32, tokenizers::AddedToken)> = tokenizer
        .inner()
        .get_added_tokens_decoder()
        .into_iter()
        .collect();
    added.sort_by_key(|(id, _)| *id);
    let decoder: serde_json::Map<String, Value> = added
        .into_iter()
        .map(|(id, t)| {
            let v = json!({
                "content": t.content, "lstrip": t.lstrip, "normalized": t.normalized,
                "rstrip": t.rstrip, "single_word": t.single_word, "special": t.special,
            });
            (id.to_string(), v)
        })
        .collect();
    if !decoder.is_empty() {
        m.insert("added_tokens_decoder".into(), Value::Object(decoder));
    }
    write("tokenizer_config.json", &tc)?;
    let gen = generation_config.cloned().unwrap_or_else(
        || json!({ "bos_token_id": config.bos_token_id, "eos_token_id": config.eos_token_ids }),
    );
    write("generation_config.json", &gen)
}
