//! The trainable decoder shared by the Llama family (Llama 2/3, SmolLM/SmolLM2, Mistral) and the
//! Qwen family (Qwen2/2.5: q/k/v bias; Qwen3: per-head q/k RMSNorm).
//!
//! One file instead of one per family because the families differ only in those two switches
//! (see `ModelConfig`), and the forward is where parity bugs hide: one copy to check against
//! transformers, not three. Unlike candle-transformers' models it returns hidden states (hence
//! logits) for every position, uses only ops with a backward (`ops.rs`), takes per-row positions and
//! an attention mask so padded batches are exact, and keeps the KV cache outside the model.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use candle_core::{DType, Device, Result, Tensor};

use super::config::ModelConfig;
use super::kv_cache::KvCache;
use super::lora::Adapter;
use super::ops::{self, grad_hook};
use super::params::Params;
use super::profile::timed;
use super::recompute::Recompute;

mod build;
mod shared;
pub use super::profile::{Phase, PhaseTimes};
pub use build::{AdapterUse, BuildOptions, INFER_ADAPTERS};
pub use shared::SharedPrefixBatch;

/// Whether the forward may record an autograd graph.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Weights are the trainable `Var`s: gradients flow to them.
    Train,
    /// Detached views of the same storage: no graph is recorded (generation, reference models).
    Infer,
}

#[derive(Clone)]
struct Linear {
    w: Tensor,         // (out, in)
    b: Option<Tensor>, // (out,)
    lora: Option<Adapter>,
    /// Whether a few untracked rows may take the streaming kernel (`ops::linear`); false in a
    /// training decoder.
    stream: bool,
    /// The weight as int8 rows (`BuildOptions::int8_weights`, inference only): used instead of
    /// `w`.
    int8: Option<ops::Int8Weight>,
}

impl Linear {
    fn forward(&self, x: &Tensor, prof: Option<&PhaseTimes>) -> Result<Tensor> {
        timed(prof, Phase::Matmul, || self.forward_untimed(x))
    }

    fn forward_untimed(&self, x: &Tensor) -> Result<Tensor> {
        // x: (N, in) → (N, out). 2-D matmuls: broadcast_matmul costs more here (feasibility.md);
        // a few untracked rows (decode) take the kernel that streams w once for all of them; a
        // weight that tracks no gradient (a LoRA base) gets none computed.
        let y = match &self.int8 {
            Some(q) => q.linear(x)?,
            None => grad_hook::frozen_linear(x, &self.w, self.stream)?,
        };
        let y = match &self.b {
            Some(b) => y.broadcast_add(b)?,
            None => y,
        };
        match &self.lora {
            Some(a) => y + a.forward(x, self.stream)?,
            None => Ok(y),
        }
    }

    /// The same x through several linears (q, k, v; gate, up). Plain streaming weights (no
    /// adapter, no int8 copy) go to one kernel call ([`ops::linear_many`]); the results are
    /// each `forward`'s, bitwise.
    fn forward_many<const N: usize>(
        ls: [&Linear; N],
        x: &Tensor,
        prof: Option<&PhaseTimes>,
    ) -> Result<[Tensor; N]> {
        let plain = ls
            .iter()
            .all(|l| l.stream && l.lora.is_none() && l.int8.is_none());
        if !plain || x.track_op() {
            return Ok(ls
                .map(|l| l.forward(x, prof))
                .into_iter()
                .collect::<Result<Vec<_>>>()?
                .try_into()
                .unwrap_or_else(|_| unreachable!("N results")));
        }
        let ws = ls.map(|l| &l.w);
        let ys = timed(prof, Phase::Matmul, || ops::linear_many(x, &ws))?;
        let mut out = Vec::with_capacity(N);
        for (y, l) in ys.into_iter().zip(ls) {
            out.push(match &l.b {
                Some(b) => y.broadcast_add(b)?,
                None => y,
            });
        }
        Ok(out.try_into().unwrap_or_else(|_| unreachable!("N results")))
    }

    fn detached(&self) -> Self {
        let lora = self.lora.as_ref().map(|a| Adapter {
            a: a.a.detach(),
            b: a.b.detach(),
            ..a.clone()
        });
        Self {
            w: self.w.detach(),
            b: self.b.as_ref().map(Tensor::detach),
            lora,
            stream: self.stream,
            int8: self.int8.clone(),
        }
    }
}

#[derive(Clone)]
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

impl Layer {
    /// The same layer on detached views of its weights (a forward that records no graph).
    fn detached(&self) -> Self {
        let d = |t: &Option<Tensor>| t.as_ref().map(Tensor::detach);
        Self {
            input_layernorm: self.input_layernorm.detach(),
            q_proj: self.q_proj.detached(),
            k_proj: self.k_proj.detached(),
            v_proj: self.v_proj.detached(),
            o_proj: self.o_proj.detached(),
            q_norm: d(&self.q_norm),
            k_norm: d(&self.k_norm),
            post_attention_layernorm: self.post_attention_layernorm.detach(),
            gate_proj: self.gate_proj.detached(),
            up_proj: self.up_proj.detached(),
            down_proj: self.down_proj.detached(),
        }
    }

    /// Normalized q, k, v of the residual rows x (N, H): (N, nh, D), (N, nkv, D), (N, nkv, D),
    /// with Qwen3's per-head q/k norm; rotary is applied by the caller, which knows the positions.
    fn qkv(
        &self,
        x: &Tensor,
        cfg: &ModelConfig,
        prof: Option<&PhaseTimes>,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        let n = x.dim(0)?;
        let (nh, nkv, hd) = (
            cfg.num_attention_heads,
            cfg.num_key_value_heads,
            cfg.head_dim,
        );
        let h = ops::rms_norm(x, &self.input_layernorm, cfg.rms_norm_eps)?; // (N, H)
        let [q, k, v] = Linear::forward_many([&self.q_proj, &self.k_proj, &self.v_proj], &h, prof)?; // (N, nh*D), (N, nkv*D) ×2
        let q = q.reshape((n, nh, hd))?;
        let k = k.reshape((n, nkv, hd))?;
        let v = v.reshape((n, nkv, hd))?;
        Ok(match (&self.q_norm, &self.k_norm) {
            (Some(qn), Some(kn)) => (
                ops::rms_norm(&q, qn, cfg.rms_norm_eps)?,
                ops::rms_norm(&k, kn, cfg.rms_norm_eps)?,
                v,
            ),
            _ => (q, k, v),
        })
    }

    /// The rest of the block after attention: output projection and MLP, with their residuals.
    /// x: (N, H) residual rows, att: (N, nh*D) attention outputs of the same rows.
    fn finish(
        &self,
        x: &Tensor,
        att: &Tensor,
        cfg: &ModelConfig,
        prof: Option<&PhaseTimes>,
    ) -> Result<Tensor> {
        let x = (x + self.o_proj.forward(att, prof)?)?;
        let h = ops::rms_norm(&x, &self.post_attention_layernorm, cfg.rms_norm_eps)?;
        let [gate, up] = Linear::forward_many([&self.gate_proj, &self.up_proj], &h, prof)?; // (N, I) ×2
        let mlp = ops::swiglu(&gate, &up)?; // (N, I)
        x + self.down_proj.forward(&mlp, prof)?
    }
}

pub struct Decoder {
    cfg: ModelConfig,
    embed_tokens: Tensor, // (V, H)
    layers: Vec<Layer>,
    norm: Tensor,
    lm_head: Tensor, // (V, H); the embedding itself when tied
    /// The head as int8 rows (`BuildOptions::int8_weights`): used for logits instead of `lm_head`.
    lm_head_int8: Option<ops::Int8Weight>,
    inv_freq: Tensor, // (1, 1, D/2)
    profile: Option<Arc<PhaseTimes>>,
    recompute: Option<Recompute>,
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

/// The per-call inputs of a plain (unshared) forward's attention.
#[derive(Clone)]
struct Attend {
    b: usize,
    t: usize,
    cos: Tensor,  // (B, T, D/2)
    sin: Tensor,  // (B, T, D/2)
    mask: Tensor, // (B, 1, T, S)
    scale: f64,
}

/// One layer of a plain forward on the residual rows x (B*T, H), appending to layer `li` of a
/// cache when given one.
fn plain_layer(
    layer: &Layer,
    cfg: &ModelConfig,
    x: &Tensor,
    c: &Attend,
    cache: Option<(&mut KvCache, usize)>,
    prof: Option<&PhaseTimes>,
) -> Result<Tensor> {
    let (b, t) = (c.b, c.t);
    let (nh, nkv, hd) = (
        cfg.num_attention_heads,
        cfg.num_key_value_heads,
        cfg.head_dim,
    );
    let (q, k, v) = layer.qkv(x, cfg, prof)?; // (B*T, nh, D), (B*T, nkv, D) ×2
    let q = ops::rope(&q.reshape((b, t, nh, hd))?.transpose(1, 2)?, &c.cos, &c.sin)?; // (B, nh, T, D)
    let k = ops::rope(
        &k.reshape((b, t, nkv, hd))?.transpose(1, 2)?,
        &c.cos,
        &c.sin,
    )?; // (B, nkv, T, D)
    let v = v.reshape((b, t, nkv, hd))?.transpose(1, 2)?.contiguous()?; // (B, nkv, T, D)
    let (k, v) = match cache {
        Some((cache, li)) => timed(prof, Phase::Cache, || cache.append(li, &k, &v))?, // (B, nkv, S, D)
        None => (k, v),
    };
    let q = q.contiguous()?;
    let att = timed(prof, Phase::Attention, || {
        ops::attention(&q, &k, &v, &c.mask, c.scale)
    })?; // (B, nh, T, D)
    let att = att.transpose(1, 2)?.reshape((b * t, nh * hd))?; // (B*T, nh*D)
    layer.finish(x, &att, cfg, prof)
}

impl Decoder {
    /// The decoder of `params` in `mode`, with its adapter (if any) as suits the mode: unmerged
    /// in training, [`build::INFER_ADAPTERS`] otherwise. See [`Decoder::build`].
    pub fn new(cfg: &ModelConfig, params: &Params, mode: Mode) -> anyhow::Result<Self> {
        Self::build(cfg, params, mode, &BuildOptions::default())
    }

    /// The same decoder, adding the wall time of its phases to `times` (benchmarks).
    pub fn with_profile(mut self, times: Arc<PhaseTimes>) -> Self {
        self.profile = Some(times);
        self
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
        cache: Option<&mut KvCache>,
    ) -> Result<Tensor> {
        let t = ids.dim(1)?;
        let prof = self.profile.as_deref();
        match prof {
            Some(p) if t == 1 => {
                p.decode_steps.fetch_add(1, Ordering::Relaxed);
                timed(prof, Phase::DecodeForward, || {
                    self.forward_hidden_in(ids, pos, cache, prof)
                })
            }
            _ => timed(prof, Phase::Prefill, || {
                self.forward_hidden_in(ids, pos, cache, None)
            }),
        }
    }

    /// `forward_hidden`, recording the decode step's phases into `prof`.
    fn forward_hidden_in(
        &self,
        ids: &Tensor,
        pos: &Positions,
        mut cache: Option<&mut KvCache>,
        prof: Option<&PhaseTimes>,
    ) -> Result<Tensor> {
        let (b, t) = ids.dims2()?;
        let cfg = &self.cfg;
        let hd = cfg.head_dim;
        let dtype = self.embed_tokens.dtype();
        let (cos, sin) = self.rope_tables(&pos.ids)?; // (B, T, D/2) each
        let mask = pos.mask.to_dtype(dtype)?;
        let scale = 1.0 / (hd as f64).sqrt();

        let ctx = Attend {
            b,
            t,
            cos,
            sin,
            mask,
            scale,
        };
        let mut x = self.embed_tokens.embedding(&ids.flatten_all()?)?; // (B*T, H)
        for (li, layer) in self.layers.iter().enumerate() {
            x = match (&self.recompute, cache.is_none()) {
                (Some(rc), true) => {
                    let (full, bare, cfg, ctx) =
                        (layer.clone(), layer.detached(), cfg.clone(), ctx.clone());
                    rc.layer(
                        &x,
                        Arc::new(move |x, graph| {
                            let l = if graph { &full } else { &bare };
                            plain_layer(l, &cfg, x, &ctx, None, None)
                        }),
                    )?
                }
                _ => plain_layer(
                    layer,
                    cfg,
                    &x,
                    &ctx,
                    cache.as_deref_mut().map(|c| (c, li)),
                    prof,
                )?,
            };
        }
        if let Some(c) = cache {
            c.advance(t);
        }
        ops::rms_norm(&x, &self.norm, cfg.rms_norm_eps)?.reshape((b, t, cfg.hidden_size))
    }

    /// Rotary cos/sin tables (B, T, D/2) for per-row position ids (B, T).
    fn rope_tables(&self, ids: &Tensor) -> Result<(Tensor, Tensor)> {
        let dtype = self.embed_tokens.dtype();
        let freqs = ids
            .to_dtype(DType::F32)?
            .unsqueeze(2)?
            .broadcast_mul(&self.inv_freq)?; // (B, T, D/2)
        Ok((freqs.cos()?.to_dtype(dtype)?, freqs.sin()?.to_dtype(dtype)?))
    }

    /// The LM head (V, H): the embedding itself when tied. For losses that fuse the head with
    /// what they compute from the logits ([`ops::head_logprob_stats`]).
    pub fn lm_head_weight(&self) -> &Tensor {
        &self.lm_head
    }

    /// Logits (.., V) for hidden states (.., H).
    pub fn logits(&self, hidden: &Tensor) -> Result<Tensor> {
        let dims = hidden.dims().to_vec();
        let h = *dims.last().expect("hidden has a last dim");
        let n = hidden.elem_count() / h;
        let hidden = hidden.reshape((n, h))?;
        let logits = timed(self.profile.as_deref(), Phase::LmHead, || {
            match &self.lm_head_int8 {
                Some(q) => q.linear(&hidden),
                None => ops::linear(&hidden, &self.lm_head),
            }
        })?; // (N, V)
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
