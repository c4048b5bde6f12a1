//! The trainable decoder shared by the Llama family (Llama 2/3, SmolLM/SmolLM2, Mistral) and the
//! Qwen family (Qwen2/2.5: q/k/v bias; Qwen3: per-head q/k RMSNorm).
//!
//! One file instead of one per family because the families differ only in those two switches
//! (see `ModelConfig`), and the forward is where parity bugs hide: one copy to check against
//! transformers, not three. Unlike candle-transformers' models it returns hidden states (hence
//! logits) for every position, uses only ops with a backward (`ops.rs`), takes per-row positions and
//! an attention mask so padded batches are exact, and keeps the KV cache outside the model.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

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

/// What a profiled forward's wall time is split into (see [`PhaseTimes`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Whole decode-step forwards (one new slot per row), embedding to final norm.
    DecodeForward,
    /// The layers' projections (q, k, v, o, gate, up, down) within decode steps.
    Matmul,
    /// Attention within decode steps.
    Attention,
    /// KV cache appends within decode steps.
    Cache,
    /// Whole forwards of several slots per row (prefill; not split further).
    Prefill,
    /// The LM head (every `logits` call).
    LmHead,
}

impl Phase {
    pub const ALL: [Phase; 6] = [
        Phase::DecodeForward,
        Phase::Matmul,
        Phase::Attention,
        Phase::Cache,
        Phase::Prefill,
        Phase::LmHead,
    ];
}

/// Accumulated wall time per [`Phase`] and the number of decode steps, for benchmarks. A decoder
/// reads no clock unless built with [`Decoder::with_profile`]; CPU ops are synchronous, so the
/// times are the ops' (on CUDA they would be launch times).
#[derive(Debug, Default)]
pub struct PhaseTimes {
    nanos: [AtomicU64; 6],
    decode_steps: AtomicU64,
}

impl PhaseTimes {
    /// Seconds spent in `phase` so far.
    pub fn seconds(&self, phase: Phase) -> f64 {
        self.nanos[phase as usize].load(Ordering::Relaxed) as f64 * 1e-9
    }

    pub fn decode_steps(&self) -> u64 {
        self.decode_steps.load(Ordering::Relaxed)
    }

    pub fn reset(&self) {
        for n in &self.nanos {
            n.store(0, Ordering::Relaxed);
        }
        self.decode_steps.store(0, Ordering::Relaxed);
    }

    fn add(&self, phase: Phase, since: Instant) {
        let ns = since.elapsed().as_nanos() as u64;
        self.nanos[phase as usize].fetch_add(ns, Ordering::Relaxed);
    }
}

/// Runs `f`, adding its wall time to `phase` when profiling.
#[inline(always)]
fn timed<R>(prof: Option<&PhaseTimes>, phase: Phase, f: impl FnOnce() -> R) -> R {
    match prof {
        None => f(),
        Some(p) => {
            let t0 = Instant::now();
            let r = f();
            p.add(phase, t0);
            r
        }
    }
}

struct Linear {
    w: Tensor,         // (out, in)
    b: Option<Tensor>, // (out,)
}

impl Linear {
    fn forward(&self, x: &Tensor, prof: Option<&PhaseTimes>) -> Result<Tensor> {
        timed(prof, Phase::Matmul, || self.forward_untimed(x))
    }

    fn forward_untimed(&self, x: &Tensor) -> Result<Tensor> {
        // x: (N, in) → (N, out). 2-D matmuls: broadcast_matmul costs more here (feasibility.md);
        // a few untracked rows (decode) take the kernel that streams w once for all of them.
        let y = ops::linear(x, &self.w)?;
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

impl Layer {
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
        let q = self.q_proj.forward(&h, prof)?.reshape((n, nh, hd))?;
        let k = self.k_proj.forward(&h, prof)?.reshape((n, nkv, hd))?;
        let v = self.v_proj.forward(&h, prof)?.reshape((n, nkv, hd))?;
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
        let mlp = ops::swiglu(
            &self.gate_proj.forward(&h, prof)?,
            &self.up_proj.forward(&h, prof)?,
        )?; // (N, I)
        x + self.down_proj.forward(&mlp, prof)?
    }
}

/// Sequences that continue shared prefixes — a GRPO group's samples all continue the same prompt.
/// Each distinct prefix runs through the model once and every suffix attends to its prefix's
/// keys and values, so a group of n costs one prompt instead of n (forward and backward: the
/// gradients of the n suffixes meet in the shared keys/values).
pub struct SharedPrefixBatch {
    /// (U, P) u32: the distinct prefixes, right-padded.
    pub prefix_ids: Tensor,
    pub prefix_lens: Vec<usize>,
    /// (B, T) u32: the suffixes, right-padded.
    pub suffix_ids: Tensor,
    pub suffix_lens: Vec<usize>,
    /// The prefix row each suffix row continues (B entries, each < U).
    pub owner: Vec<usize>,
}

impl SharedPrefixBatch {
    /// Pads `prefixes` and `suffixes` (with `owner[b]` the prefix of suffix b) into a batch.
    pub fn new(
        prefixes: &[&[u32]],
        suffixes: &[&[u32]],
        owner: Vec<usize>,
        device: &Device,
    ) -> Result<Self> {
        fn pad(rows: &[&[u32]], device: &Device) -> Result<(Tensor, Vec<usize>)> {
            let t = rows.iter().map(|r| r.len()).max().unwrap_or(0);
            let mut ids = Vec::with_capacity(rows.len() * t);
            for r in rows {
                ids.extend_from_slice(r);
                ids.extend(std::iter::repeat_n(0u32, t - r.len()));
            }
            let lens = rows.iter().map(|r| r.len()).collect();
            Ok((Tensor::from_vec(ids, (rows.len(), t), device)?, lens))
        }
        let (prefix_ids, prefix_lens) = pad(prefixes, device)?;
        let (suffix_ids, suffix_lens) = pad(suffixes, device)?;
        Ok(Self {
            prefix_ids,
            prefix_lens,
            suffix_ids,
            suffix_lens,
            owner,
        })
    }
}

pub struct Decoder {
    cfg: ModelConfig,
    embed_tokens: Tensor, // (V, H)
    layers: Vec<Layer>,
    norm: Tensor,
    lm_head: Tensor,  // (V, H); the embedding itself when tied
    inv_freq: Tensor, // (1, 1, D/2)
    profile: Option<Arc<PhaseTimes>>,
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
            profile: None,
        })
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
        let (nh, nkv, hd) = (
            cfg.num_attention_heads,
            cfg.num_key_value_heads,
            cfg.head_dim,
        );
        let dtype = self.embed_tokens.dtype();
        let (cos, sin) = self.rope_tables(&pos.ids)?; // (B, T, D/2) each
        let mask = pos.mask.to_dtype(dtype)?;
        let scale = 1.0 / (hd as f64).sqrt();

        let mut x = self.embed_tokens.embedding(&ids.flatten_all()?)?; // (B*T, H)
        for (li, layer) in self.layers.iter().enumerate() {
            let (q, k, v) = layer.qkv(&x, cfg, prof)?; // (B*T, nh, D), (B*T, nkv, D) ×2
            let q = ops::rope(&q.reshape((b, t, nh, hd))?.transpose(1, 2)?, &cos, &sin)?; // (B, nh, T, D)
            let k = ops::rope(&k.reshape((b, t, nkv, hd))?.transpose(1, 2)?, &cos, &sin)?; // (B, nkv, T, D)
            let v = v.reshape((b, t, nkv, hd))?.transpose(1, 2)?.contiguous()?; // (B, nkv, T, D)
            let (k, v) = match cache.as_deref_mut() {
                Some(c) => timed(prof, Phase::Cache, || c.append(li, &k, &v))?, // (B, nkv, S, D)
                None => (k, v),
            };
            let q = q.contiguous()?;
            let att = timed(prof, Phase::Attention, || {
                ops::attention(&q, &k, &v, &mask, scale)
            })?; // (B, nh, T, D)
            let att = att.transpose(1, 2)?.reshape((b * t, nh * hd))?; // (B*T, nh*D)
            x = layer.finish(&x, &att, cfg, prof)?;
        }
        if let Some(c) = cache {
            c.advance(t);
        }
        ops::rms_norm(&x, &self.norm, cfg.rms_norm_eps)?.reshape((b, t, cfg.hidden_size))
    }

    /// Final hidden states (B, T, H) of the suffixes of a [`SharedPrefixBatch`]: the same values
    /// as running each prefix+suffix row through [`Self::forward_hidden`], at the cost of one
    /// prefix per distinct prefix. Training only (no cache).
    pub fn forward_hidden_shared(&self, batch: &SharedPrefixBatch) -> Result<Tensor> {
        let (u, p) = batch.prefix_ids.dims2()?;
        let (b, t) = batch.suffix_ids.dims2()?;
        let device = batch.suffix_ids.device();
        if u * p == 0 {
            let pos = Positions::right_padded(&batch.suffix_lens, t, device)?;
            return self.forward_hidden(&batch.suffix_ids, &pos, None);
        }
        let cfg = &self.cfg;
        let (nh, hd) = (cfg.num_attention_heads, cfg.head_dim);
        let dtype = self.embed_tokens.dtype();
        let scale = 1.0 / (hd as f64).sqrt();
        // Prefixes: plain causal rows. Suffixes: positions continue their prefix; query i sees
        // the prefix's real slots, then suffix slots j ≤ i.
        let pre = Positions::right_padded(&batch.prefix_lens, p, device)?;
        let (mut pos, mut mask) = (Vec::with_capacity(b * t), vec![MASKED; b * t * (p + t)]);
        for (r, &o) in batch.owner.iter().enumerate() {
            let plen = batch.prefix_lens[o];
            for i in 0..t {
                pos.push((plen + i.min(batch.suffix_lens[r])) as u32);
                let row = &mut mask[(r * t + i) * (p + t)..(r * t + i + 1) * (p + t)];
                row[..plen].fill(0.0);
                row[p..p + (i + 1).min(batch.suffix_lens[r])].fill(0.0);
            }
        }
        let suf_ids = Tensor::from_vec(pos, (b, t), device)?;
        let suf_mask = Tensor::from_vec(mask, (b, 1, t, p + t), device)?.to_dtype(dtype)?;
        let pre_mask = pre.mask.to_dtype(dtype)?;
        let (cos_p, sin_p) = self.rope_tables(&pre.ids)?; // (U, P, D/2)
        let (cos_s, sin_s) = self.rope_tables(&suf_ids)?; // (B, T, D/2)
        let owner = Tensor::from_vec(
            batch.owner.iter().map(|&o| o as u32).collect::<Vec<_>>(),
            b,
            device,
        )?;

        // Both streams share every matmul as one (U*P + B*T)-row batch; only attention splits.
        let (np, ns) = (u * p, b * t);
        let ids = Tensor::cat(
            &[
                batch.prefix_ids.flatten_all()?,
                batch.suffix_ids.flatten_all()?,
            ],
            0,
        )?;
        let mut x = self.embed_tokens.embedding(&ids)?; // (U*P + B*T, H)
        for layer in &self.layers {
            let (q, k, v) = layer.qkv(&x, cfg, None)?;
            // (N, heads, D) rows → (U, heads, P, D) prefixes and (B, heads, T, D) suffixes.
            let pre = |x: &Tensor| {
                x.narrow(0, 0, np)?
                    .reshape((u, p, x.dim(1)?, hd))?
                    .transpose(1, 2)
            };
            let suf = |x: &Tensor| {
                x.narrow(0, np, ns)?
                    .reshape((b, t, x.dim(1)?, hd))?
                    .transpose(1, 2)
            };
            let q_p = ops::rope(&pre(&q)?, &cos_p, &sin_p)?; // (U, nh, P, D)
            let k_p = ops::rope(&pre(&k)?, &cos_p, &sin_p)?; // (U, nkv, P, D)
            let v_p = pre(&v)?.contiguous()?; // (U, nkv, P, D)
            let q_s = ops::rope(&suf(&q)?, &cos_s, &sin_s)?; // (B, nh, T, D)
            let k_s = ops::rope(&suf(&k)?, &cos_s, &sin_s)?; // (B, nkv, T, D)
            let v_s = suf(&v)?.contiguous()?; // (B, nkv, T, D)
            let att_p = ops::attention(&q_p.contiguous()?, &k_p, &v_p, &pre_mask, scale)?; // (U, nh, P, D)
                                                                                           // Each suffix row gets its prefix's keys/values (the backward sums them back).
            let k_s = Tensor::cat(&[k_p.index_select(&owner, 0)?, k_s], 2)?; // (B, nkv, P+T, D)
            let v_s = Tensor::cat(&[v_p.index_select(&owner, 0)?, v_s], 2)?; // (B, nkv, P+T, D)
            let att_s = ops::attention(&q_s.contiguous()?, &k_s, &v_s, &suf_mask, scale)?; // (B, nh, T, D)
            let att = Tensor::cat(
                &[
                    att_p.transpose(1, 2)?.reshape((np, nh * hd))?,
                    att_s.transpose(1, 2)?.reshape((ns, nh * hd))?,
                ],
                0,
            )?; // (U*P + B*T, nh*D)
            x = layer.finish(&x, &att, cfg, None)?;
        }
        ops::rms_norm(&x.narrow(0, np, ns)?, &self.norm, cfg.rms_norm_eps)?.reshape((
            b,
            t,
            cfg.hidden_size,
        ))
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

    /// Logits (.., V) for hidden states (.., H).
    pub fn logits(&self, hidden: &Tensor) -> Result<Tensor> {
        let dims = hidden.dims().to_vec();
        let h = *dims.last().expect("hidden has a last dim");
        let n = hidden.elem_count() / h;
        let hidden = hidden.reshape((n, h))?;
        let logits = timed(self.profile.as_deref(), Phase::LmHead, || {
            ops::linear(&hidden, &self.lm_head)
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
