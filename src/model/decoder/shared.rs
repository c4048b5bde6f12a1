//! The shared-prefix training forward: a GRPO group's samples continue one prompt, which runs
//! through the model once (see [`SharedPrefixBatch`]).

use std::sync::Arc;

use candle_core::{Device, Result, Tensor};

use super::{Decoder, Layer, Positions, MASKED};
use crate::model::{ops, ModelConfig};

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

impl Decoder {
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
        let hd = cfg.head_dim;
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
        let ctx = Shared {
            u,
            p,
            b,
            t,
            cos_p,
            sin_p,
            cos_s,
            sin_s,
            pre_mask,
            suf_mask,
            owner,
            scale,
        };
        for layer in &self.layers {
            x = match &self.recompute {
                Some(rc) => {
                    let (full, bare, cfg, ctx) =
                        (layer.clone(), layer.detached(), cfg.clone(), ctx.clone());
                    rc.layer(
                        &x,
                        Arc::new(move |x, graph| {
                            let l = if graph { &full } else { &bare };
                            shared_layer(l, &cfg, x, &ctx)
                        }),
                    )?
                }
                None => shared_layer(layer, cfg, &x, &ctx)?,
            };
        }
        ops::rms_norm(&x.narrow(0, np, ns)?, &self.norm, cfg.rms_norm_eps)?.reshape((
            b,
            t,
            cfg.hidden_size,
        ))
    }
}

/// The per-call inputs of a shared-prefix forward's attention.
#[derive(Clone)]
struct Shared {
    u: usize,
    p: usize,
    b: usize,
    t: usize,
    cos_p: Tensor,    // (U, P, D/2)
    sin_p: Tensor,    // (U, P, D/2)
    cos_s: Tensor,    // (B, T, D/2)
    sin_s: Tensor,    // (B, T, D/2)
    pre_mask: Tensor, // (U, 1, P, P)
    suf_mask: Tensor, // (B, 1, T, P+T)
    owner: Tensor,    // (B,) u32
    scale: f64,
}

/// One layer on the (U*P + B*T, H) rows of prefixes then suffixes.
fn shared_layer(layer: &Layer, cfg: &ModelConfig, x: &Tensor, c: &Shared) -> Result<Tensor> {
    let (u, p, b, t) = (c.u, c.p, c.b, c.t);
    let (np, ns) = (u * p, b * t);
    let (nh, hd) = (cfg.num_attention_heads, cfg.head_dim);
    let (cos_p, sin_p, cos_s, sin_s) = (&c.cos_p, &c.sin_p, &c.cos_s, &c.sin_s);
    let (pre_mask, suf_mask, owner, scale) = (&c.pre_mask, &c.suf_mask, &c.owner, c.scale);
    let (q, k, v) = layer.qkv(x, cfg, None)?;
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
    let q_p = ops::rope(&pre(&q)?, cos_p, sin_p)?; // (U, nh, P, D)
    let k_p = ops::rope(&pre(&k)?, cos_p, sin_p)?; // (U, nkv, P, D)
    let v_p = pre(&v)?.contiguous()?; // (U, nkv, P, D)
    let q_s = ops::rope(&suf(&q)?, cos_s, sin_s)?; // (B, nh, T, D)
    let k_s = ops::rope(&suf(&k)?, cos_s, sin_s)?; // (B, nkv, T, D)
    let v_s = suf(&v)?.contiguous()?; // (B, nkv, T, D)
    let att_p = ops::attention(&q_p.contiguous()?, &k_p, &v_p, pre_mask, scale)?; // (U, nh, P, D)
                                                                                  // Each suffix row gets its prefix's keys/values (the backward sums them back).
    let k_s = Tensor::cat(&[k_p.index_select(owner, 0)?, k_s], 2)?; // (B, nkv, P+T, D)
    let v_s = Tensor::cat(&[v_p.index_select(owner, 0)?, v_s], 2)?; // (B, nkv, P+T, D)
    let att_s = ops::attention(&q_s.contiguous()?, &k_s, &v_s, suf_mask, scale)?; // (B, nh, T, D)
    let att = Tensor::cat(
        &[
            att_p.transpose(1, 2)?.reshape((np, nh * hd))?,
            att_s.transpose(1, 2)?.reshape((ns, nh * hd))?,
        ],
        0,
    )?; // (U*P + B*T, nh*D)
    layer.finish(x, &att, cfg, None)
}
