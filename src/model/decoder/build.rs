//! Building a [`Decoder`] from a parameter store: which tensors record a graph, and how a LoRA
//! adapter enters the projections.
//!
//! In [`Mode::Train`] a weight records a graph iff it trains: every weight without an adapter
//! (full fine-tuning), else only the adapter tensors and the adapter's `modules_to_save`. A
//! frozen base weight is a detached view, so the backward computes no gradient for it (see
//! `ops::grad_hook::frozen_linear`) — the point of LoRA's memory and time savings.

use candle_core::Tensor;

use super::super::lora::{self, Adapter};
use super::super::recompute::Recompute;
use super::{Decoder, Layer, Linear, Mode};
use crate::model::ops;
use crate::model::{ModelConfig, Params};

/// How a decoder uses the adapter its parameters carry.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AdapterUse {
    /// Unmerged when training, [`INFER_ADAPTERS`] otherwise.
    #[default]
    Auto,
    /// `W x + s·B(A x)`: no copy of any weight.
    Unmerged,
    /// `(W + s·B·A) x` with the merged weights built once (a copy of each targeted weight);
    /// inference only (training needs the adapter's own graph).
    Merged,
    /// The base model alone, as if there were no adapter (the KL reference).
    Off,
}

/// What inference forwards (rollouts, evaluation) do with an adapter: merged, because one
/// matmul per projection beats three in generation (`eval/results/scale/README.md`).
pub const INFER_ADAPTERS: AdapterUse = AdapterUse::Merged;

/// Options of [`Decoder::build`] beyond the mode.
#[derive(Clone, Default)]
pub struct BuildOptions {
    pub adapters: AdapterUse,
    /// Seeds the adapters' dropout masks (training forwards with `lora.dropout > 0`): one
    /// forward per decoder, so a caller passes a new seed per micro-batch, a function of the
    /// step (resume replays it).
    pub dropout_seed: u64,
    /// Recompute activations per layer in the backward ([`Recompute`]).
    pub recompute: Option<Recompute>,
    /// Inference only: every projection and the LM head as weight-only int8
    /// ([`ops::Int8Weight`], quantized here from the current weights; an adapter merged first):
    /// approximate, for rollouts (`[generation] rollout_precision = "int8"`). CPU f32 only.
    pub int8_weights: bool,
}

impl Decoder {
    /// The decoder of `params` in `mode` as `opts` say.
    pub fn build(
        cfg: &ModelConfig,
        params: &Params,
        mode: Mode,
        opts: &BuildOptions,
    ) -> anyhow::Result<Self> {
        let compute = params.compute_dtype();
        let int8 = opts.int8_weights;
        if int8 {
            anyhow::ensure!(
                mode == Mode::Infer,
                "int8 weights are for inference decoders only (rollouts), not training"
            );
            anyhow::ensure!(
                params.device().is_cpu() && compute == candle_core::DType::F32,
                "int8 weights run on CPU f32 only (this model computes in {:?} on {:?}); \
                 hint: set [generation] rollout_precision = \"exact\"",
                compute,
                params.device().location()
            );
        }
        let quantize = |w: &Tensor| -> anyhow::Result<Option<ops::Int8Weight>> {
            Ok(if int8 {
                Some(ops::Int8Weight::quantize(w)?)
            } else {
                None
            })
        };
        let lora = params.lora();
        let use_adapters = match (opts.adapters, mode) {
            (AdapterUse::Off, _) => AdapterUse::Off,
            (AdapterUse::Auto, Mode::Train) | (AdapterUse::Merged, Mode::Train) => {
                AdapterUse::Unmerged
            }
            (AdapterUse::Auto, Mode::Infer) => INFER_ADAPTERS,
            (u, Mode::Infer) => u,
            (AdapterUse::Unmerged, Mode::Train) => AdapterUse::Unmerged,
        };
        let trains = |name: &str| match (&lora, mode) {
            (_, Mode::Infer) => false,
            (None, Mode::Train) => true,
            (Some(l), Mode::Train) => {
                lora::is_adapter(name) || l.modules_to_save.iter().any(|m| m == name)
            }
        };
        let get = |name: &str| -> anyhow::Result<Tensor> {
            let t = params.var(name)?.as_tensor();
            let t = if trains(name) { t.clone() } else { t.detach() };
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
        // Projection `p` of layer `li`, its index `k` among the layer's seven seeding dropout.
        let linear = |p: &str, bias: bool, li: usize, k: u64| -> anyhow::Result<Linear> {
            let mut w = get(&format!("{p}.weight"))?;
            let b = if bias {
                Some(get(&format!("{p}.bias"))?)
            } else {
                opt(&format!("{p}.bias"))?
            };
            let mut adapter = None;
            if let (Some(l), true) = (&lora, params.contains(&lora::a_name(p))) {
                let (a, bm) = (get(&lora::a_name(p))?, get(&lora::b_name(p))?); // (r, in), (out, r)
                let scale = l.config.scaling();
                match use_adapters {
                    AdapterUse::Off => {}
                    AdapterUse::Merged => w = (w + (bm.matmul(&a)? * scale)?)?,
                    _ => {
                        let seed = (li as u64 * 8 + k + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
                        let dropout = (mode == Mode::Train && l.config.dropout > 0.0)
                            .then_some((l.config.dropout, opts.dropout_seed ^ seed));
                        adapter = Some(Adapter {
                            a,
                            b: bm,
                            scale,
                            dropout,
                        });
                    }
                }
            }
            Ok(Linear {
                int8: quantize(&w)?,
                w,
                b,
                lora: adapter,
                // Generation and reference log-probs may stream a few rows; a training forward
                // (recomputed layers included) always takes the matmul, so its untracked pass
                // computes what the tracked one does, bit for bit.
                stream: mode == Mode::Infer,
            })
        };
        let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
        for i in 0..cfg.num_hidden_layers {
            let p = format!("model.layers.{i}");
            let qkv_bias = cfg.attention_bias;
            layers.push(Layer {
                input_layernorm: get(&format!("{p}.input_layernorm.weight"))?,
                q_proj: linear(&format!("{p}.self_attn.q_proj"), qkv_bias, i, 0)?,
                k_proj: linear(&format!("{p}.self_attn.k_proj"), qkv_bias, i, 1)?,
                v_proj: linear(&format!("{p}.self_attn.v_proj"), qkv_bias, i, 2)?,
                o_proj: linear(&format!("{p}.self_attn.o_proj"), false, i, 3)?,
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
                gate_proj: linear(&format!("{p}.mlp.gate_proj"), false, i, 4)?,
                up_proj: linear(&format!("{p}.mlp.up_proj"), false, i, 5)?,
                down_proj: linear(&format!("{p}.mlp.down_proj"), false, i, 6)?,
            });
        }
        let embed_tokens = get("model.embed_tokens.weight")?;
        let lm_head = if cfg.tie_word_embeddings {
            embed_tokens.clone()
        } else {
            get("lm_head.weight")?
        };
        let lm_head_int8 = quantize(&lm_head)?;
        let inv_freq = cfg.rope_inv_freq();
        let n = inv_freq.len();
        let inv_freq = Tensor::from_vec(inv_freq, (1, 1, n), &params.device())?;
        Ok(Self {
            cfg: cfg.clone(),
            embed_tokens,
            layers,
            norm: get("model.norm.weight")?,
            lm_head,
            lm_head_int8,
            inv_freq,
            profile: None,
            recompute: match mode {
                Mode::Train => opts.recompute.clone(),
                Mode::Infer => None,
            },
        })
    }
}
