//! The trainable decoder shared by the Llama family (Llama 2/3, SmolLM/SmolLM2, Mistral) and the
//! Qwen family (Qwen2/2.5: q/k/v bias; Qwen3: per-head q/k RMSNorm).
//!
//! One file instead of one per family because the families differ only in those two switches
//! (see `ModelConfig`), and the forward is where parity bugs hide: one copy to check against
//! transformers, not three. Unlike candle-transformers' models it returns hidden states (hence
//! logits) for every position, uses only ops with a backward (`ops.rs`), takes per-row positions and
//! an attention mask so padded batches are exact, and keeps the KV cache outside the model.

use candle_core::{DType, Device, Result, Tensor};

use super::config::ModelConfig;
use super::kv_cache::KvCache;
use super::ops;
use super::params::Params;

/// Whether the forward may record an autograd graph.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Weights are the trainable `Var`s: gradients flow to them.
    Train,
    /// Detached views of the same storage: no graph is recorded (generation, reference models).
    Infer,
}

struct Linear {
    w: Tensor,         // (out, in)
    b: Option<Tensor>, // (out,)
}

impl Linear {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        // x: (N, in) → (N, out). 2-D matmuls: broadcast_matmul costs more here (feasibility.md).
        let y = x.matmul(&self.w.t()?)?;
        match &self.b {
            Some(b) => y.broadcast_add(b),
            None => Ok(y),
        }
    }
}

struct Layer {
    input_layernorm: Tensor,
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    o_proj: Linear,
    q_norm: Option<Tensor>,
    k_norm: Option<Tensor>,
    post_attention_layernorm: Tensor,
    gate_proj: Linear,
    up_proj: Linear,
    down_proj: Linear,
}

pub struct Decoder {
    cfg: ModelConfig,
    embed_tokens: Tensor, // (V, H)
    layers: Vec<Layer>,
    norm: Tensor,
    lm_head: Tensor,  // (V, H); the embedding itself when tied
    inv_freq: Tensor, // (1, 1, D/2)
}

/// Per-row positions and the additive attention mask for one forward call.
pub struct Positions {
    /// (B, T) u32 position ids (count of real tokens before each slot in its row).
    pub ids: Tensor,
    /// (B, 1, T, S) additive mask over the S key slots (cache + this call).
    pub mask: Tensor,
}

/// A large negative instead of −inf: a fully masked row (a pad query) then gives finite garbage that
/// no loss reads, instead of NaNs that poison the backward.
pub const MASKED: f32 = -1e30;

impl Positions {
    /// Positions and mask for rows given as token-validity flags. `past` (B rows × P slots) are
    /// the cached slots' flags, `new` (B × T) the flags of the slots fed now; slot j is visible to
    /// query slot i iff j ≤ i (absolute) and j is a real token.
    pub fn build(past: &[Vec<bool>], new: &[Vec<bool>], device: &Device) -> Result<Self> {
        let b = new.len();
        let t = new.first().map_or(0, |r| r.len());
        let p = past.first().map_or(0, |r| r.len());
        let s = p + t;
        let mut pos = Vec::with_capacity(b * t);
        let mut mask = vec![MASKED; b * t * s];
        for r in 0..b {
            let mut seen =
                past.get(r)
                    .map_or(0, |row| row.iter().filter(|&&x| x).count()) as u32;
            let valid: Vec<bool> = past
                .get(r)
                .into_iter()
                .flatten()
                .chain(new[r].iter())
                .copied()
                .collect();
            for i in 0..t {
                // A pad slot keeps the position of the next real token (never read).
                pos.push(seen);
                if new[r][i] {
                    seen += 1;
                }
                let row = &mut mask[(r * t + i) * s..(r * t + i + 1) * s];
                for (j, m) in row.iter_mut().enumerate().take(p + i + 1) {
                    if valid[j] {
                        *m = 0.0;
                    }
                }
            }
        }
        Ok(Self {
            ids: Tensor::from_vec(pos, (b, t), device)?,
            mask: Tensor::from_vec(mask, (b, 1, t, s), device)?,
        })
    }

    /// Right-padded rows of the given lengths (training batches): real tokens first.
    pub fn right_padded(lengths: &[usize], t: usize, device: &Device) -> Result<Self> {
        let new: Vec<Vec<bool>> = lengths
            .iter()
            .map(|&l| (0..t).map(|i| i < l).collect())
            .collect();
        Self::build(&[], &new, device)
    }
}

impl Decoder {
    pub fn new(cfg: &ModelConfig, params: &Params, mode: Mode) -> anyhow::Result<Self> {
        let compute = params.compute_dtype();
        let get = |name: &str| -> anyhow::Result<Tensor> {
            let t = params.var(name)?.as_tensor();
            let t = match mode {
                Mode::Train => t.clone(),
                Mode::Infer => t.detach(),
            };
            // Mixed precision: the f32 master weights are cast for compute; in training the cast
            // is part of the graph, so gradients reach the f32 variables in f32.
            Ok(if t.dtype() == compute {
                t
            } else {
                t.to_dtype(compute)?
            })
        };
        let opt = |name: &str| -> anyhow::Result<Option<Tensor>> {
            if params.contains(name) {
                get(name).map(Some)
            } else {
                Ok(None)
            }
        };
        let linear = |p: &str, bias: bool| -> anyhow::Result<Linear> {
            Ok(Linear {
                w: get(&format!("{p}.weight"))?,
                b: if bias {
                    Some(get(&format!("{p}.bias"))?)
                } else {
                    opt(&format!("{p}.bias"))?
                },
            })
        };
        let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
        for i in 0..cfg.num_hidden_layers {
            let p = format!("model.layers.{i}");
            let qkv_bias = cfg.attention_bias;
            layers.push(Layer {
                input_layernorm: get(&format!("{p}.input_layernorm.weight"))?,
                q_proj: linear(&format!("{p}.self_attn.q_proj"), qkv_bias)?,
                k_proj: linear(&format!("{p}.self_attn.k_proj"), qkv_bias)?,
                v_proj: linear(&format!("{p}.self_attn.v_proj"), qkv_bias)?,
                o_proj: linear(&format!("{p}.self_attn.o_proj"), false)?,
                q_norm: if cfg.qk_norm {
                    Some(get(&format!("{p}.self_attn.q_norm.weight"))?)
                } else {
                    None
                },
                k_norm: if cfg.qk_norm {
                    Some(get(&format!("{p}.self_attn.k_norm.weight"))?)
                } else {
                    None
                },
                post_attention_layernorm: get(&format!("{p}.post_attention_layernorm.weight"))?,
                gate_proj: linear(&format!("{p}.mlp.gate_proj"), false)?,
                up_proj: linear(&format!("{p}.mlp.up_proj"), false)?,
                down_proj: linear(&format!("{p}.mlp.down_proj"), false)?,
            });
        }
        let embed_tokens = get("model.embed_tokens.weight")?;
        let lm_head = if cfg.tie_word_embeddings {
            embed_tokens.clone()
        } else {
            get("lm_head.weight")?
        };
        let inv_freq = cfg.rope_inv_freq();
        let n = inv_freq.len();
        let inv_freq = Tensor::from_vec(inv_freq, (1, 1, n), &params.device())?;
        Ok(Self {
            cfg: cfg.clone(),
            embed_tokens,
            layers,
            norm: get("model.norm.weight")?,
            lm_head,
            inv_freq,
        })
    }

    pub fn config(&self) -> &ModelConfig {
        &self.cfg
    }

    /// Activation dtype (that of the weights).
    pub fn dtype(&self) -> DType {
        self.embed_tokens.dtype()
    }

    /// Final hidden states (B, T, H) for `ids` (B, T) u32. With a cache, the new keys/values are
    /// appended to it and attention covers cache + new slots (`pos.mask` must span both).
    pub fn forward_hidden(
        &self,
        ids: &Tensor,
        pos: &Positions,
        mut cache: Option<&mut KvCache>,
    ) -> Result<Tensor> {
        let (b, t) = ids.dims2()?;
        let cfg = &self.cfg;
        let (nh, nkv, hd) = (
            cfg.num_attention_heads,
            cfg.num_key_value_heads,
            cfg.head_dim,
        );
        let dtype = self.embed_tokens.dtype();
        // Rotary tables for each row's own positions.
        let freqs = pos
            .ids
            .to_dtype(DType::F32)?
            .unsqueeze(2)?
            .broadcast_mul(&self.inv_freq)?; // (B, T, D/2)
        let cos = freqs.cos()?.to_dtype(dtype)?;
        let sin = freqs.sin()?.to_dtype(dtype)?;
        let mask = pos.mask.to_dtype(dtype)?;
        let scale = 1.0 / (hd as f64).sqrt();

        let mut x = self.embed_tokens.embedding(&ids.flatten_all()?)?; // (B*T, H)
        for (li, layer) in self.layers.iter().enumerate() {
            let h = ops::rms_norm(&x, &layer.input_layernorm, cfg.rms_norm_eps)?; // (B*T, H)
            let q = layer.q_proj.forward(&h)?.reshape((b, t, nh, hd))?; // (B, T, nh, D)
            let k = layer.k_proj.forward(&h)?.reshape((b, t, nkv, hd))?; // (B, T, nkv, D)
            let v = layer.v_proj.forward(&h)?.reshape((b, t, nkv, hd))?;
            let (q, k) = match (&layer.q_norm, &layer.k_norm) {
                (Some(qn), Some(kn)) => (
                    ops::rms_norm(&q, qn, cfg.rms_norm_eps)?,
                    ops::rms_norm(&k, kn, cfg.rms_norm_eps)?,
                ),
                _ => (q, k),
            };
            let q = ops::rope(&q.transpose(1, 2)?, &cos, &sin)?; // (B, nh, T, D)
            let k = ops::rope(&k.transpose(1, 2)?, &cos, &sin)?; // (B, nkv, T, D)
            let v = v.transpose(1, 2)?.contiguous()?; // (B, nkv, T, D)
            let (k, v) = match cache.as_deref_mut() {
                Some(c) => c.append(li, &k, &v)?, // (B, nkv, S, D)
                None => (k, v),
            };
            let att = ops::attention(&q.contiguous()?, &k, &v, &mask, scale)?; // (B, nh, T, D)
            let att = att.transpose(1, 2)?.reshape((b * t, nh * hd))?; // (B*T, nh*D)
            x = (x + layer.o_proj.forward(&att)?)?;
            let h = ops::rms_norm(&x, &layer.post_attention_layernorm, cfg.rms_norm_eps)?;
            let mlp = ops::swiglu(&layer.gate_proj.forward(&h)?, &layer.up_proj.forward(&h)?)?; // (B*T, I)
            x = (x + layer.down_proj.forward(&mlp)?)?;
        }
        if let Some(c) = cache {
            c.advance(t);
        }
        ops::rms_norm(&x, &self.norm, cfg.rms_norm_eps)?.reshape((b, t, cfg.hidden_size))
    }

    /// Logits (.., V) for hidden states (.., H).
    pub fn logits(&self, hidden: &Tensor) -> Result<Tensor> {
        let dims = hidden.dims().to_vec();
        let h = *dims.last().expect("hidden has a last dim");
        let n = hidden.elem_count() / h;
        let logits = hidden.reshape((n, h))?.matmul(&self.lm_head.t()?)?; // (N, V)
        let mut out = dims;
        *out.last_mut().expect("non-empty") = self.cfg.vocab_size;
        logits.reshape(out)
    }

    /// Logits for every position (B, T, V).
    pub fn forward(
        &self,
        ids: &Tensor,
        pos: &Positions,
        cache: Option<&mut KvCache>,
    ) -> Result<Tensor> {
        let hidden = self.forward_hidden(ids, pos, cache)?;
        self.logits(&hidden)
    }
}

/// Convenience: the logits of one unpadded sequence (T, V).
pub fn logits_of(model: &Decoder, ids: &[u32], device: &Device) -> Result<Tensor> {
    let t = ids.len();
    let pos = Positions::right_padded(&[t], t, device)?;
    let x = Tensor::from_vec(ids.to_vec(), (1, t), device)?;
    model.forward(&x, &pos, None)?.squeeze(0)
}
