//! Model configuration: HF `config.json` (or GGUF metadata) → one validated [`ModelConfig`].
//!
//! One struct covers the Llama family (Llama 2/3, SmolLM/SmolLM2, Mistral) and the Qwen family
//! (Qwen2/2.5 with q/k/v bias, Qwen3 with q/k RMSNorm): they differ only in those two switches,
//! rope scaling and tied embeddings. Anything we would silently compute differently from
//! transformers (unknown rope scaling, active sliding windows) is rejected with a clear message.

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Architecture family, from `model_type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    Llama,
    Mistral,
    Qwen2,
    Qwen3,
}

impl Family {
    pub fn from_model_type(model_type: &str) -> Result<Self> {
        Ok(match model_type {
            "llama" => Family::Llama,
            "mistral" => Family::Mistral,
            "qwen2" => Family::Qwen2,
            "qwen3" => Family::Qwen3,
            other => bail!(
                "unsupported model_type `{other}`; supported: llama (Llama 2/3, SmolLM/SmolLM2), \
                 mistral, qwen2 (Qwen2/Qwen2.5), qwen3"
            ),
        })
    }

    pub fn model_type(self) -> &'static str {
        match self {
            Family::Llama => "llama",
            Family::Mistral => "mistral",
            Family::Qwen2 => "qwen2",
            Family::Qwen3 => "qwen3",
        }
    }

    /// The HF `architectures` entry used when saving.
    pub fn architecture(self) -> &'static str {
        match self {
            Family::Llama => "LlamaForCausalLM",
            Family::Mistral => "MistralForCausalLM",
            Family::Qwen2 => "Qwen2ForCausalLM",
            Family::Qwen3 => "Qwen3ForCausalLM",
        }
    }
}

/// Rope frequency scaling, as HF's `rope_scaling`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum RopeScaling {
    /// Llama 3.x: smooth interpolation between low and high frequencies.
    Llama3 {
        factor: f64,
        low_freq_factor: f64,
        high_freq_factor: f64,
        original_max_position_embeddings: usize,
    },
    /// Position interpolation: all frequencies divided by `factor`.
    Linear { factor: f64 },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    pub family: Family,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub head_dim: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    pub rope_scaling: Option<RopeScaling>,
    pub max_position_embeddings: usize,
    pub tie_word_embeddings: bool,
    /// q/k/v projections carry a bias (Qwen2; Llama's `attention_bias`).
    pub attention_bias: bool,
    /// Per-head RMSNorm on q and k before rope (Qwen3).
    pub qk_norm: bool,
    pub bos_token_id: Option<u32>,
    pub eos_token_ids: Vec<u32>,
    /// The original `config.json`, kept so a saved model round-trips fields we do not model.
    #[serde(skip)]
    pub raw: Option<Value>,
}

fn get_usize(v: &Value, key: &str) -> Result<usize> {
    v.get(key)
        .and_then(Value::as_u64)
        .map(|x| x as usize)
        .with_context(|| format!("config.json: missing or non-integer `{key}`"))
}

fn get_f64_or(v: &Value, key: &str, default: f64) -> f64 {
    v.get(key).and_then(Value::as_f64).unwrap_or(default)
}

fn token_ids(v: Option<&Value>) -> Vec<u32> {
    match v {
        Some(Value::Number(n)) => n.as_u64().map(|x| vec![x as u32]).unwrap_or_default(),
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(|x| x.as_u64().map(|x| x as u32))
            .collect(),
        _ => vec![],
    }
}

impl ModelConfig {
    /// Parse an HF `config.json` value.
    pub fn from_hf_json(v: &Value) -> Result<Self> {
        let model_type = v.get("model_type").and_then(Value::as_str).context(
            "config.json has no `model_type`; is this a Hugging Face causal LM directory?",
        )?;
        let family = Family::from_model_type(model_type)?;
        let hidden_size = get_usize(v, "hidden_size")?;
        let num_attention_heads = get_usize(v, "num_attention_heads")?;
        let num_key_value_heads = v
            .get("num_key_value_heads")
            .and_then(Value::as_u64)
            .map(|x| x as usize)
            .unwrap_or(num_attention_heads);
        let head_dim = v
            .get("head_dim")
            .and_then(Value::as_u64)
            .map(|x| x as usize)
            .unwrap_or(hidden_size / num_attention_heads.max(1));
        let rope_scaling = parse_rope_scaling(v.get("rope_scaling"))?;
        let sliding = v
            .get("use_sliding_window")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        if sliding && family != Family::Mistral {
            bail!(
                "config.json sets use_sliding_window = true, which llmrl does not implement; \
                 set it to false (Qwen2 checkpoints train and generate without it up to their \
                 max_window_layers) or use another model"
            );
        }
        let cfg = ModelConfig {
            family,
            vocab_size: get_usize(v, "vocab_size")?,
            hidden_size,
            intermediate_size: get_usize(v, "intermediate_size")?,
            num_hidden_layers: get_usize(v, "num_hidden_layers")?,
            num_attention_heads,
            num_key_value_heads,
            head_dim,
            rms_norm_eps: get_f64_or(v, "rms_norm_eps", 1e-6),
            rope_theta: get_f64_or(v, "rope_theta", 10_000.0),
            rope_scaling,
            max_position_embeddings: v
                .get("max_position_embeddings")
                .and_then(Value::as_u64)
                .unwrap_or(4096) as usize,
            tie_word_embeddings: v
                .get("tie_word_embeddings")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            attention_bias: match family {
                Family::Qwen2 => true,
                _ => v
                    .get("attention_bias")
                    .and_then(Value::as_bool)
                    .unwrap_or(false),
            },
            qk_norm: family == Family::Qwen3,
            bos_token_id: token_ids(v.get("bos_token_id")).first().copied(),
            eos_token_ids: token_ids(v.get("eos_token_id")),
            raw: Some(v.clone()),
        };
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn validate(&self) -> Result<()> {
        if self.num_attention_heads == 0
            || self.num_key_value_heads == 0
            || !self
                .num_attention_heads
                .is_multiple_of(self.num_key_value_heads)
        {
            bail!(
                "config: num_attention_heads ({}) must be a positive multiple of num_key_value_heads ({})",
                self.num_attention_heads,
                self.num_key_value_heads
            );
        }
        if !self.head_dim.is_multiple_of(2) {
            bail!(
                "config: head_dim {} must be even for rotary embeddings",
                self.head_dim
            );
        }
        Ok(())
    }

    /// The `config.json` transformers loads for this model. Starts from the original file when we
    /// have one, so fields we do not model survive a round trip.
    pub fn to_hf_json(&self) -> Value {
        let mut v = match &self.raw {
            Some(Value::Object(m)) => Value::Object(m.clone()),
            _ => serde_json::json!({}),
        };
        let m = v.as_object_mut().expect("constructed as an object above");
        let mut set = |k: &str, x: Value| {
            m.insert(k.to_string(), x);
        };
        set(
            "architectures",
            serde_json::json!([self.family.architecture()]),
        );
        set("model_type", self.family.model_type().into());
        set("vocab_size", self.vocab_size.into());
        set("hidden_size", self.hidden_size.into());
        set("intermediate_size", self.intermediate_size.into());
        set("num_hidden_layers", self.num_hidden_layers.into());
        set("num_attention_heads", self.num_attention_heads.into());
        set("num_key_value_heads", self.num_key_value_heads.into());
        set("head_dim", self.head_dim.into());
        set("rms_norm_eps", self.rms_norm_eps.into());
        set("rope_theta", self.rope_theta.into());
        set(
            "max_position_embeddings",
            self.max_position_embeddings.into(),
        );
        set("tie_word_embeddings", self.tie_word_embeddings.into());
        set("torch_dtype", "float32".into());
        if matches!(self.family, Family::Llama | Family::Mistral) {
            set("attention_bias", self.attention_bias.into());
            set("hidden_act", "silu".into());
        }
        if let Some(b) = self.bos_token_id {
            set("bos_token_id", b.into());
        }
        match self.eos_token_ids.as_slice() {
            [] => {}
            [one] => set("eos_token_id", (*one).into()),
            many => set("eos_token_id", serde_json::json!(many)),
        }
        match &self.rope_scaling {
            None => {}
            Some(RopeScaling::Linear { factor }) => set(
                "rope_scaling",
                serde_json::json!({"rope_type": "linear", "factor": factor}),
            ),
            Some(RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings,
            }) => set(
                "rope_scaling",
                serde_json::json!({"rope_type": "llama3", "factor": factor,
                    "low_freq_factor": low_freq_factor, "high_freq_factor": high_freq_factor,
                    "original_max_position_embeddings": original_max_position_embeddings}),
            ),
        }
        v
    }

    /// Rotary inverse frequencies (D/2,), with the configured scaling applied.
    pub fn rope_inv_freq(&self) -> Vec<f32> {
        let d = self.head_dim;
        let base: Vec<f64> = (0..d / 2)
            .map(|i| 1.0 / self.rope_theta.powf(2.0 * i as f64 / d as f64))
            .collect();
        let scaled: Vec<f64> = match &self.rope_scaling {
            None => base,
            Some(RopeScaling::Linear { factor }) => base.iter().map(|f| f / factor).collect(),
            Some(RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings,
            }) => {
                // transformers' _compute_llama3_parameters.
                let old = *original_max_position_embeddings as f64;
                let low_wavelen = old / low_freq_factor;
                let high_wavelen = old / high_freq_factor;
                base.iter()
                    .map(|&f| {
                        let wavelen = 2.0 * std::f64::consts::PI / f;
                        if wavelen < high_wavelen {
                            f
                        } else if wavelen > low_wavelen {
                            f / factor
                        } else {
                            let smooth = (old / wavelen - low_freq_factor)
                                / (high_freq_factor - low_freq_factor);
                            (1.0 - smooth) * f / factor + smooth * f
                        }
                    })
                    .collect()
            }
        };
        // transformers computes inv_freq in f32 from an f32/int64 arange; round once at the end.
        scaled.into_iter().map(|x| x as f32).collect()
    }

    /// Number of parameters, counting a tied head once.
    pub fn num_parameters(&self) -> usize {
        let (h, i, v) = (self.hidden_size, self.intermediate_size, self.vocab_size);
        let q = self.num_attention_heads * self.head_dim;
        let kv = self.num_key_value_heads * self.head_dim;
        let bias = if self.attention_bias { q + 2 * kv } else { 0 };
        let qk_norm = if self.qk_norm { 2 * self.head_dim } else { 0 };
        let layer = h * q + 2 * h * kv + q * h + bias + qk_norm + 3 * h * i + 2 * h;
        let head = if self.tie_word_embeddings { 0 } else { v * h };
        v * h + self.num_hidden_layers * layer + h + head
    }
}

fn parse_rope_scaling(v: Option<&Value>) -> Result<Option<RopeScaling>> {
    let Some(v) = v else { return Ok(None) };
    if v.is_null() {
        return Ok(None);
    }
    let kind = v
        .get("rope_type")
        .or_else(|| v.get("type"))
        .and_then(Value::as_str)
        .unwrap_or("default");
    let factor = get_f64_or(v, "factor", 1.0);
    Ok(match kind {
        "default" => None,
        "linear" => Some(RopeScaling::Linear { factor }),
        "llama3" => Some(RopeScaling::Llama3 {
            factor,
            low_freq_factor: get_f64_or(v, "low_freq_factor", 1.0),
            high_freq_factor: get_f64_or(v, "high_freq_factor", 4.0),
            original_max_position_embeddings: get_usize(v, "original_max_position_embeddings")?,
        }),
        other => bail!(
            "config.json: rope_scaling type `{other}` is not supported (supported: default, linear, \
             llama3); generating with it would silently differ from transformers"
        ),
    })
}
