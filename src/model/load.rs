//! Model sources → [`LoadedModel`]: a local HF directory (single or sharded safetensors), a hub id
//! (through the `hf-hub` cache), or a `.gguf` file (dequantized; tokenizer and chat template from
//! its metadata). Every failure a user can cause (missing path, no `config.json`, no tokenizer,
//! unsupported `model_type`, truncated file) is one `anyhow` error saying what to do.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use candle_core::quantized::gguf_file;
use candle_core::{DType, Device, Tensor};
use hf_hub::RepoType;
use serde_json::Value;

use super::config::{Family, ModelConfig};
use super::hub;
use super::params::Params;
use super::tokenizer::Tokenizer;

/// Where a model comes from.
#[derive(Clone, Debug, PartialEq)]
pub enum ModelSource {
    Dir(PathBuf),
    Gguf(PathBuf),
    Hub(String),
}

impl ModelSource {
    /// An existing path is a directory or a `.gguf` file; `org/name` that is not a path is a hub id.
    pub fn parse(s: &str) -> Result<Self> {
        let p = Path::new(s);
        if p.is_dir() {
            return Ok(Self::Dir(p.to_path_buf()));
        }
        if p.is_file() {
            if s.ends_with(".gguf") {
                return Ok(Self::Gguf(p.to_path_buf()));
            }
            bail!(
                "model `{s}` is a file but not a .gguf; pass a GGUF file or an HF model directory"
            );
        }
        if looks_local(s, Path::new(".")) {
            let hint = if s.ends_with(".gguf") && s.contains("SmolLM2") {
                "run scripts/fetch_model.sh for the default SmolLM2-135M-Instruct"
            } else {
                "check the path (a run's model is RUN/checkpoints/step_N/model)"
            };
            bail!("model `{s}` not found: no such directory or file; hint: {hint}");
        }
        if s.split('/').count() == 2 && s.split('/').all(|part| !part.is_empty()) {
            return Ok(Self::Hub(s.to_string()));
        }
        bail!(
            "model `{s}` not found: not an existing directory or .gguf file, and not a hub id \
             (`org/name`); run scripts/fetch_model.sh for the default SmolLM2-135M-Instruct"
        )
    }
}

/// Whether a model source that does not exist was meant as a local path rather than a hub id
/// `org/name`: it starts with `.`, `/` or `~`, names a file (`.gguf`, `.safetensors`, `.json`),
/// has more than two components, or its first component is a directory under `base`
/// (`runs/x`, `models/x`). Such a source fails with "no such directory or file" instead of
/// a hub lookup.
pub fn looks_local(s: &str, base: &Path) -> bool {
    let first = s.split('/').next().unwrap_or("");
    s.starts_with(['.', '/', '~'])
        || s.contains('\\')
        || [".gguf", ".safetensors", ".json"]
            .iter()
            .any(|e| s.ends_with(e))
        || s.split('/').count() > 2
        || (s.contains('/') && !first.is_empty() && base.join(first).is_dir())
}

impl std::fmt::Display for ModelSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Dir(p) | Self::Gguf(p) => write!(f, "{}", p.display()),
            Self::Hub(id) => write!(f, "hub:{id}"),
        }
    }
}

pub struct LoadedModel {
    pub config: ModelConfig,
    pub params: Params,
    pub tokenizer: Tokenizer,
    /// `generation_config.json` as found (kept for saving), if any.
    pub generation_config: Option<Value>,
    /// The dtype the checkpoint was stored in (before conversion), for `inspect`.
    pub stored_dtype: String,
}

/// Load a model on `device`: weights are kept in f32 (the master copy the optimizer updates) and
/// forwards compute in `dtype` (f32 on CPU, bf16 on CUDA).
pub fn load(src: &ModelSource, device: &Device, dtype: DType) -> Result<LoadedModel> {
    match src {
        ModelSource::Dir(d) => load_dir(d, device, dtype),
        ModelSource::Gguf(p) => load_gguf(p, device, dtype),
        ModelSource::Hub(id) => {
            let config = hub::fetch(id, RepoType::Model, "config.json")?;
            hub::fetch(id, RepoType::Model, "tokenizer.json")?;
            for optional in [
                "tokenizer_config.json",
                "generation_config.json",
                "chat_template.jinja",
            ] {
                let _ = hub::fetch_optional(id, RepoType::Model, optional);
            }
            match hub::fetch_optional(id, RepoType::Model, "model.safetensors.index.json") {
                Some(index) => {
                    for shard in shard_files(&index)? {
                        hub::fetch(id, RepoType::Model, &shard)?;
                    }
                }
                None => {
                    hub::fetch(id, RepoType::Model, "model.safetensors")?;
                }
            }
            // hf-hub lays every file of a revision out in one snapshot directory.
            let dir = config.parent().context("hub cache path has no parent")?;
            load_dir(dir, device, dtype).with_context(|| format!("loading hub model `{id}`"))
        }
    }
}

fn read_json(path: &Path) -> Result<Value> {
    let s = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&s).with_context(|| format!("parsing {} as JSON", path.display()))
}

fn shard_files(index: &Path) -> Result<Vec<String>> {
    let v = read_json(index)?;
    let map = v
        .get("weight_map")
        .and_then(Value::as_object)
        .with_context(|| format!("{} has no `weight_map`", index.display()))?;
    let mut files: Vec<String> = map
        .values()
        .filter_map(Value::as_str)
        .map(str::to_string)
        .collect();
    files.sort();
    files.dedup();
    Ok(files)
}

fn load_dir(dir: &Path, device: &Device, dtype: DType) -> Result<LoadedModel> {
    let cfg_path = dir.join("config.json");
    if !cfg_path.exists() {
        bail!(
            "{} has no config.json; an HF model directory needs config.json, tokenizer.json and \
             *.safetensors (as written by `save_pretrained`)",
            dir.display()
        );
    }
    let mut config = ModelConfig::from_hf_json(&read_json(&cfg_path)?)
        .with_context(|| format!("in {}", cfg_path.display()))?;
    if !dir.join("tokenizer.json").exists() {
        bail!(
            "{} has no tokenizer.json; save the tokenizer next to the weights \
             (`tokenizer.save_pretrained(dir)`)",
            dir.display()
        );
    }
    let mut tokenizer = Tokenizer::from_dir(dir)?;
    let gen_path = dir.join("generation_config.json");
    let generation_config = if gen_path.exists() {
        Some(read_json(&gen_path)?)
    } else {
        None
    };

    let index = dir.join("model.safetensors.index.json");
    let files: Vec<PathBuf> = if index.exists() {
        shard_files(&index)?
            .into_iter()
            .map(|f| dir.join(f))
            .collect()
    } else if dir.join("model.safetensors").exists() {
        vec![dir.join("model.safetensors")]
    } else {
        bail!("{} has no model.safetensors (or model.safetensors.index.json); PyTorch .bin checkpoints are not supported, convert with `save_pretrained(dir, safe_serialization=True)`", dir.display());
    };
    let mut tensors = Vec::new();
    let mut stored_dtype = String::new();
    for f in &files {
        // SAFETY: the file is mapped read-only and not modified while we copy out of it.
        let st =
            unsafe { candle_core::safetensors::MmapedSafetensors::new(f) }.with_context(|| {
                format!(
                    "reading {} (truncated or not a safetensors file?)",
                    f.display()
                )
            })?;
        for (name, view) in st.tensors() {
            stored_dtype = format!("{:?}", view.dtype());
            let t = st
                .load(&name, device)
                .with_context(|| format!("loading tensor `{name}` from {}", f.display()))?;
            tensors.push((name, t.to_dtype(DType::F32)?));
        }
    }
    if config.tie_word_embeddings {
        // Some checkpoints store the tied head anyway; the embedding is the one we train.
        tensors.retain(|(n, _)| n != "lm_head.weight");
    }
    let params = Params::from_tensors(tensors)?.with_compute_dtype(dtype);
    check_weights(&config, &params)?;
    merge_eos(&mut config, &mut tokenizer, generation_config.as_ref());
    Ok(LoadedModel {
        config,
        params,
        tokenizer,
        generation_config,
        stored_dtype,
    })
}

/// EOS ids from config.json, generation_config.json and the tokenizer, merged.
fn merge_eos(config: &mut ModelConfig, tok: &mut Tokenizer, gen: Option<&Value>) {
    let mut ids = config.eos_token_ids.clone();
    if let Some(g) = gen.and_then(|g| g.get("eos_token_id")) {
        match g {
            Value::Number(n) => ids.extend(n.as_u64().map(|x| x as u32)),
            Value::Array(a) => ids.extend(a.iter().filter_map(|x| x.as_u64().map(|x| x as u32))),
            _ => {}
        }
    }
    tok.add_eos_ids(&ids);
    if config.eos_token_ids.is_empty() {
        config.eos_token_ids = tok.eos_ids.clone();
    }
}

/// Names every weight the config implies and reports all the missing ones at once.
fn check_weights(cfg: &ModelConfig, params: &Params) -> Result<()> {
    let mut want = vec![
        "model.embed_tokens.weight".to_string(),
        "model.norm.weight".to_string(),
    ];
    if !cfg.tie_word_embeddings {
        want.push("lm_head.weight".into());
    }
    for i in 0..cfg.num_hidden_layers {
        let p = format!("model.layers.{i}");
        for n in [
            "input_layernorm",
            "post_attention_layernorm",
            "self_attn.q_proj",
            "self_attn.k_proj",
            "self_attn.v_proj",
            "self_attn.o_proj",
            "mlp.gate_proj",
            "mlp.up_proj",
            "mlp.down_proj",
        ] {
            want.push(format!("{p}.{n}.weight"));
        }
        if cfg.attention_bias {
            for n in ["q_proj", "k_proj", "v_proj"] {
                want.push(format!("{p}.self_attn.{n}.bias"));
            }
        }
        if cfg.qk_norm {
            want.push(format!("{p}.self_attn.q_norm.weight"));
            want.push(format!("{p}.self_attn.k_norm.weight"));
        }
    }
    let missing: Vec<&String> = want.iter().filter(|n| !params.contains(n)).collect();
    if !missing.is_empty() {
        bail!(
            "checkpoint is missing {} weight(s) the config requires, e.g. {:?}; is config.json \
             from the same model as the safetensors?",
            missing.len(),
            &missing[..missing.len().min(5)]
        );
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// GGUF

fn md<'a>(ct: &'a gguf_file::Content, key: &str) -> Result<&'a gguf_file::Value> {
    ct.metadata
        .get(key)
        .with_context(|| format!("GGUF metadata has no `{key}`"))
}

fn md_usize(ct: &gguf_file::Content, key: &str) -> Result<usize> {
    let v = md(ct, key)?;
    v.to_u64()
        .map(|x| x as usize)
        .or_else(|_| v.to_u32().map(|x| x as usize))
        .or_else(|_| v.to_i32().map(|x| x as usize))
        .map_err(|e| anyhow!("GGUF `{key}`: {e}"))
}

fn md_f64(ct: &gguf_file::Content, key: &str) -> Option<f64> {
    let v = ct.metadata.get(key)?;
    v.to_f32().map(f64::from).or_else(|_| v.to_f64()).ok()
}

fn md_u32(ct: &gguf_file::Content, key: &str) -> Option<u32> {
    let v = ct.metadata.get(key)?;
    v.to_u32()
        .or_else(|_| v.to_i32().map(|x| x as u32))
        .or_else(|_| v.to_u64().map(|x| x as u32))
        .ok()
}

/// llama.cpp's converter permutes q/k rows for its interleaved rope; undo it for the HF layout.
fn unpermute(w: &Tensor, n_head: usize) -> candle_core::Result<Tensor> {
    let (out, inp) = w.dims2()?;
    let hd = out / n_head;
    w.reshape((n_head, hd / 2, 2, inp))?
        .transpose(1, 2)?
        .contiguous()?
        .reshape((out, inp))
}

fn load_gguf(path: &Path, device: &Device, dtype: DType) -> Result<LoadedModel> {
    let mut f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let ct = gguf_file::Content::read(&mut f)
        .map_err(|e| anyhow!("{e}"))
        .with_context(|| {
            format!(
                "reading GGUF header of {} (truncated or not a GGUF file?)",
                path.display()
            )
        })?;
    // Check the data section is all there before dequantizing anything.
    let file_len = f.metadata()?.len();
    for (name, info) in &ct.tensor_infos {
        let n = info.shape.elem_count();
        let bytes = n / info.ggml_dtype.block_size() * info.ggml_dtype.type_size();
        let end = ct.tensor_data_offset + info.offset + bytes as u64;
        if end > file_len {
            bail!(
                "{} is truncated: tensor `{name}` ends at byte {end} but the file has {file_len}; \
                 download it again (scripts/fetch_model.sh)",
                path.display()
            );
        }
    }
    let arch = md(&ct, "general.architecture")?
        .to_string()
        .map_err(|e| anyhow!("{e}"))?
        .clone();
    let family = match arch.as_str() {
        "llama" => Family::Llama,
        "qwen2" => Family::Qwen2,
        "qwen3" => Family::Qwen3,
        other => bail!("GGUF architecture `{other}` is not supported (llama, qwen2, qwen3)"),
    };
    let tokens_len = md(&ct, "tokenizer.ggml.tokens")?
        .to_vec()
        .map_err(|e| anyhow!("{e}"))?
        .len();
    let hidden = md_usize(&ct, &format!("{arch}.embedding_length"))?;
    let heads = md_usize(&ct, &format!("{arch}.attention.head_count"))?;
    let kv_heads = md_usize(&ct, &format!("{arch}.attention.head_count_kv")).unwrap_or(heads);
    let head_dim = md_usize(&ct, &format!("{arch}.attention.key_length")).unwrap_or(hidden / heads);
    let has_output = ct.tensor_infos.contains_key("output.weight");
    let eos = md_u32(&ct, "tokenizer.ggml.eos_token_id");
    let mut config = ModelConfig {
        family,
        vocab_size: tokens_len,
        hidden_size: hidden,
        intermediate_size: md_usize(&ct, &format!("{arch}.feed_forward_length"))?,
        num_hidden_layers: md_usize(&ct, &format!("{arch}.block_count"))?,
        num_attention_heads: heads,
        num_key_value_heads: kv_heads,
        head_dim,
        rms_norm_eps: md_f64(&ct, &format!("{arch}.attention.layer_norm_rms_epsilon"))
            .unwrap_or(1e-6),
        rope_theta: md_f64(&ct, &format!("{arch}.rope.freq_base")).unwrap_or(10_000.0),
        rope_scaling: None,
        max_position_embeddings: md_usize(&ct, &format!("{arch}.context_length")).unwrap_or(2048),
        tie_word_embeddings: !has_output,
        attention_bias: family == Family::Qwen2,
        qk_norm: family == Family::Qwen3,
        bos_token_id: md_u32(&ct, "tokenizer.ggml.bos_token_id"),
        eos_token_ids: eos.into_iter().collect(),
        raw: None,
    };
    config.validate()?;

    let mut names: HashMap<String, String> = HashMap::new();
    names.insert(
        "token_embd.weight".into(),
        "model.embed_tokens.weight".into(),
    );
    names.insert("output_norm.weight".into(), "model.norm.weight".into());
    names.insert("output.weight".into(), "lm_head.weight".into());
    for i in 0..config.num_hidden_layers {
        for (g, h) in [
            ("attn_norm.weight", "input_layernorm.weight"),
            ("ffn_norm.weight", "post_attention_layernorm.weight"),
            ("attn_q.weight", "self_attn.q_proj.weight"),
            ("attn_k.weight", "self_attn.k_proj.weight"),
            ("attn_v.weight", "self_attn.v_proj.weight"),
            ("attn_q.bias", "self_attn.q_proj.bias"),
            ("attn_k.bias", "self_attn.k_proj.bias"),
            ("attn_v.bias", "self_attn.v_proj.bias"),
            ("attn_output.weight", "self_attn.o_proj.weight"),
            ("attn_q_norm.weight", "self_attn.q_norm.weight"),
            ("attn_k_norm.weight", "self_attn.k_norm.weight"),
            ("ffn_gate.weight", "mlp.gate_proj.weight"),
            ("ffn_up.weight", "mlp.up_proj.weight"),
            ("ffn_down.weight", "mlp.down_proj.weight"),
        ] {
            names.insert(format!("blk.{i}.{g}"), format!("model.layers.{i}.{h}"));
        }
    }
    let mut tensors = Vec::new();
    let mut stored = std::collections::BTreeSet::new();
    let mut gguf_names: Vec<&String> = ct.tensor_infos.keys().collect();
    gguf_names.sort();
    for gname in gguf_names {
        let Some(hf) = names.get(gname) else {
            continue; // e.g. rope_freqs: recomputed from the config
        };
        let q = ct
            .tensor(&mut f, gname, &Device::Cpu)
            .map_err(|e| anyhow!("{e}"))
            .with_context(|| format!("reading GGUF tensor `{gname}`"))?;
        stored.insert(format!("{:?}", q.dtype()));
        let mut t = q.dequantize(&Device::Cpu)?;
        if family == Family::Llama {
            if gname.ends_with("attn_q.weight") {
                t = unpermute(&t, heads)?;
            } else if gname.ends_with("attn_k.weight") {
                t = unpermute(&t, kv_heads)?;
            }
        }
        tensors.push((hf.clone(), t.to_device(device)?.to_dtype(DType::F32)?));
    }
    let params = Params::from_tensors(tensors)?.with_compute_dtype(dtype);
    check_weights(&config, &params)?;

    use candle_core::quantized::tokenizer::TokenizerFromGguf;
    let mut inner = tokenizers::Tokenizer::from_gguf(&ct)
        .map_err(|e| anyhow!("building the tokenizer from GGUF metadata: {e}"))?;
    let pre = ct
        .metadata
        .get("tokenizer.ggml.pre")
        .and_then(|v| v.to_string().ok())
        .cloned();
    if pre.as_deref() == Some("smollm") {
        // candle does not know `smollm` and falls back to GPT-2's prefix space, which shifts every
        // id after a special token; SmolLM2's own tokenizer adds none (feasibility.md pitfall 5).
        inner.with_pre_tokenizer(Some(
            tokenizers::pre_tokenizers::byte_level::ByteLevel::new(false, true, true),
        ));
    }
    let tok_str = |key: &str| -> Option<String> {
        let id = md_u32(&ct, key)?;
        inner.id_to_token(id)
    };
    let chat_template = ct
        .metadata
        .get("tokenizer.chat_template")
        .and_then(|v| v.to_string().ok())
        .cloned();
    let mut tokenizer = Tokenizer::new(
        inner.clone(),
        chat_template,
        tok_str("tokenizer.ggml.bos_token_id"),
        tok_str("tokenizer.ggml.eos_token_id"),
        tok_str("tokenizer.ggml.padding_token_id")
            .or_else(|| tok_str("tokenizer.ggml.pad_token_id")),
    );
    merge_eos(&mut config, &mut tokenizer, None);
    let generation_config = Some(serde_json::json!({
        "bos_token_id": config.bos_token_id,
        "eos_token_id": config.eos_token_ids,
    }));
    Ok(LoadedModel {
        config,
        params,
        tokenizer,
        generation_config,
        stored_dtype: stored.into_iter().collect::<Vec<_>>().join("+"),
    })
}
