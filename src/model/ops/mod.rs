//! Differentiable building blocks of the decoder forward, fused on CPU.
//!
//! candle-nn's fused `rms_norm`, `softmax_last_dim` and `rope` have no backward (they cut the graph
//! silently, feasibility.md §2), and composing them from elementary ops allocates a fresh buffer per
//! op and keeps every one alive for backward (2x torch's memory, a quarter of the time in page
//! zeroing). So on CPU each op here is a candle custom op with a hand-written backward and an f32
//! kernel (rayon over rows) that keeps only its inputs and output alive for the backward pass.
//!
//! Deliberately not here: GPU kernels and non-f32 kernels. On other devices or dtypes every
//! function falls back to the composite version in [`reference`] (same semantics, candle autograd),
//! so a `cuda` build works unchanged. Second-order gradients are not supported (backward kernels
//! produce constants).
//!
//! Follows HF transformers' `LlamaRMSNorm`, `apply_rotary_pos_emb` (rotate-half) and eager
//! attention; each backward derives its formula in a comment and is checked in the tests against
//! the composite version's autograd and against f64 central finite differences.

mod attention_op;
mod decode_attention_op;
mod decode_matmul;
pub mod grad_hook;
mod head_logprob_op;
mod int8_linear;
mod linear_op;
mod logprob_op;
pub mod reference;
mod rms_norm_op;
mod rope_op;
pub(crate) mod simd;
mod softmax_op;
mod swiglu_op;

use candle_core::{bail, DType, Result, Tensor, D};
use head_logprob_op::HeadLogProbStatsOp;
pub use int8_linear::Int8Weight;
use logprob_op::LogProbStatsOp;
use rms_norm_op::RmsNormOp;
use rope_op::RopeOp;
use simd::fused_ok;
use softmax_op::{MaskedSoftmaxOp, SoftmaxOp};
use swiglu_op::SwigluOp;

/// RMSNorm over the last dim: x / sqrt(mean(x²) + eps) * w, computed in f32.
pub fn rms_norm(x: &Tensor, w: &Tensor, eps: f64) -> Result<Tensor> {
    let d = x.dim(D::Minus1)?;
    if !fused_ok(&[x, w]) || w.dims() != [d] {
        return reference::rms_norm(x, w, eps);
    }
    x.contiguous()?
        .apply_op2(&w.contiguous()?, RmsNormOp { eps: eps as f32 })
}

/// Rotary embedding, HF rotate-half convention. x: (B, H, T, D); cos, sin: (B, T, D/2), one row
/// of positions per sequence so left-padded batches get their true positions (a leading 1 instead
/// of B broadcasts). x may be a transposed view (only its last dim must be unit-stride).
pub fn rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    let (b, _, t, d) = x.dims4()?;
    let (bc, tc, hc) = cos.dims3()?;
    let shape_ok = d % 2 == 0 && (bc == b || bc == 1) && tc == t && hc == d / 2;
    if !fused_ok(&[x, cos, sin]) || !shape_ok || sin.dims() != cos.dims() {
        return reference::rope(x, cos, sin);
    }
    // The kernel reads x through its strides; only a non-unit last stride needs a copy.
    let x = if x.stride()[3] == 1 {
        x.clone()
    } else {
        x.contiguous()?
    };
    x.apply_op3(&cos.contiguous()?, &sin.contiguous()?, RopeOp)
}

/// Softmax over the last dim.
pub fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    if !fused_ok(&[x]) {
        return reference::softmax_last_dim(x);
    }
    x.contiguous()?.apply_op1(SoftmaxOp { scale: 1.0 })
}

/// softmax(x · scale + mask) over the last dim, the mask added inside the kernel. x: (B, H, T, S);
/// mask: additive (B, 1, T, S) or (1, 1, T, S), 0 where allowed and −inf (or a large negative)
/// where not. A row masked everywhere gives zeros (the composite version gives NaN).
pub fn masked_softmax(x: &Tensor, mask: &Tensor, scale: f64) -> Result<Tensor> {
    let (b, _, t, s) = x.dims4()?;
    let (bm, hm, tm, sm) = mask.dims4()?;
    let shape_ok = (bm == b || bm == 1) && hm == 1 && tm == t && sm == s;
    if !fused_ok(&[x]) || !mask.device().is_cpu() || !shape_ok {
        return reference::masked_softmax(x, mask, scale);
    }
    let mask = mask.to_dtype(DType::F32)?.contiguous()?;
    x.contiguous()?.apply_op2(
        &mask,
        MaskedSoftmaxOp {
            scale: scale as f32,
        },
    )
}

/// silu(gate) * up, the SwiGLU MLP activation.
pub fn swiglu(gate: &Tensor, up: &Tensor) -> Result<Tensor> {
    if !fused_ok(&[gate, up]) || gate.dims() != up.dims() {
        return reference::swiglu(gate, up);
    }
    gate.contiguous()?.apply_op2(&up.contiguous()?, SwigluOp)
}

/// Per-position statistics of log-softmax(logits / temperature) that RL losses need.
pub struct LogProbStats {
    /// log π(target): (N,)
    pub logp: Tensor,
    /// mean over the vocabulary of log π(·) = mean(z) − logsumexp(z): (N,) — ROVER's successor value.
    pub mean_logp: Tensor,
    /// entropy −Σ π log π: (N,)
    pub entropy: Tensor,
}

/// Log-prob of `targets` and full-vocabulary statistics. logits: (N, V) any float dtype;
/// targets: (N,) u32. Computed in f32.
///
/// On CPU this is one fused pass per row: nothing of size (N, V) is materialized in the forward,
/// and the backward allocates only the (N, V) gradient.
pub fn logprob_stats(logits: &Tensor, targets: &Tensor, temperature: f64) -> Result<LogProbStats> {
    if !(temperature > 0.0 && temperature.is_finite()) {
        bail!("logprob_stats: temperature must be a positive finite number, got {temperature}; set a temperature > 0 (use 1.0 for the raw policy)");
    }
    let fusable = logits.device().is_cpu()
        && matches!(logits.dtype(), DType::F32 | DType::F16 | DType::BF16)
        && targets.dtype().is_int();
    if !fusable {
        return reference::logprob_stats(logits, targets, temperature);
    }
    let (n, v) = logits.dims2()?;
    if targets.dims() != [n] {
        bail!(
            "logprob_stats: targets shape {:?} does not match logits rows {n}",
            targets.dims()
        );
    }
    let logits = logits.to_dtype(DType::F32)?.contiguous()?; // (N, V)
    let targets = targets.to_dtype(DType::U32)?.contiguous()?; // (N,)
    let stats = logits.apply_op2(
        &targets,
        LogProbStatsOp {
            inv_t: (1.0 / temperature) as f32,
            vocab: v,
        },
    )?; // (4, N): logp, mean_logp, entropy, logsumexp(z)
    Ok(LogProbStats {
        logp: stats.get(0)?,
        mean_logp: stats.get(1)?,
        entropy: stats.get(2)?,
    })
}

/// [`logprob_stats`] of the logits `hidden · wᵀ` (hidden (N, H), the LM head w (V, H)), fused
/// with the head on CPU f32 so the (N, V) logits and their gradient exist only a chunk of rows
/// at a time (`head_logprob_op.rs`). Equal to `logprob_stats(&linear(hidden, w)?, ..)` within
/// float rounding (the chunks' products sum in another blocking); elsewhere it is exactly that.
pub fn head_logprob_stats(
    hidden: &Tensor,
    w: &Tensor,
    targets: &Tensor,
    temperature: f64,
) -> Result<LogProbStats> {
    let v = w.dim(0)?;
    head_logprob_stats_chunked(
        hidden,
        w,
        targets,
        temperature,
        head_logprob_op::chunk_rows(v),
    )
}

/// [`head_logprob_stats`] with `chunk` rows of logits at a time.
fn head_logprob_stats_chunked(
    hidden: &Tensor,
    w: &Tensor,
    targets: &Tensor,
    temperature: f64,
    chunk: usize,
) -> Result<LogProbStats> {
    let (n, h) = hidden.dims2()?;
    let fusable = fused_ok(&[hidden, w]) && w.rank() == 2 && w.dim(1)? == h;
    // A bad temperature gets logprob_stats' own error.
    if !(fusable && temperature > 0.0 && temperature.is_finite()) {
        return logprob_stats(&linear(hidden, w)?, targets, temperature);
    }
    if targets.dims() != [n] {
        bail!(
            "logprob_stats: targets shape {:?} does not match hidden rows {n}",
            targets.dims()
        );
    }
    let hidden = hidden.contiguous()?; // (N, H)
    let w = w.contiguous()?; // (V, H)
    let targets = targets.to_dtype(DType::U32)?.contiguous()?; // (N,)
    let stats = hidden.apply_op3(
        &w,
        &targets,
        HeadLogProbStatsOp {
            inv_t: (1.0 / temperature) as f32,
            chunk,
        },
    )?; // (4, N): logp, mean_logp, entropy, logsumexp(z)
    Ok(LogProbStats {
        logp: stats.get(0)?,
        mean_logp: stats.get(1)?,
        entropy: stats.get(2)?,
    })
}

/// x · wᵀ for x (N, in) and a weight w (out, in) in its stored layout: (N, out).
///
/// With few rows ([`decode_matmul::pays_off`]: at most 128, or 192 against a layer-sized weight)
/// and nothing tracking gradients (the decode step of generation, rollouts, evaluation), a
/// kernel that streams each weight row once for all rows (`decode_matmul.rs`; equal to the
/// matmul within rounding); otherwise candle's matmul.
pub fn linear(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    if streams(x, w)? {
        return decode_matmul::decode_matmul(x, w);
    }
    matmul_t(x, w)
}

/// [`linear`] of one x against several weights (a layer's q, k, v; gate, up). Where every
/// product takes the streaming kernel, one call streams them all in one parallel loop (one
/// fork-join instead of one per weight; bitwise the same results); otherwise one `linear` each.
pub fn linear_many(x: &Tensor, ws: &[&Tensor]) -> Result<Vec<Tensor>> {
    let mut all = true;
    for w in ws {
        all &= streams(x, w)?;
    }
    if all {
        return decode_matmul::decode_matmul_many(x, ws);
    }
    ws.iter().map(|w| linear(x, w)).collect()
}

/// Whether [`linear`] gives x · wᵀ to the streaming kernel.
fn streams(x: &Tensor, w: &Tensor) -> Result<bool> {
    let (n, _) = x.dims2()?;
    Ok(w.rank() == 2
        && decode_matmul::pays_off(n, w.dim(0)?)
        && !x.track_op()
        && !w.track_op()
        && fused_ok(&[x, w])
        && w.is_contiguous())
}

/// `x · wᵀ` (x: (N, in), w: (out, in) → (N, out)) by gemm, on CPU f32 as [`linear_op`] (the
/// weight's gradient computed in its own layout), elsewhere as candle's matmul.
fn matmul_t(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    if x.rank() == 2 && w.rank() == 2 && fused_ok(&[x, w]) {
        return x
            .contiguous()?
            .apply_op2(&w.contiguous()?, linear_op::LinearOp);
    }
    x.matmul(&w.t()?)
}

/// [`linear`] where `stream` (an inference decoder: generation, reference log-probs), else
/// always the matmul (a training forward: its untracked passes, such as recomputed layers,
/// then compute exactly what the tracked ones do).
pub fn linear_or_matmul(x: &Tensor, w: &Tensor, stream: bool) -> Result<Tensor> {
    if stream {
        linear(x, w)
    } else {
        matmul_t(x, w)
    }
}

/// The decode kernel of [`linear`] at any row count and whatever tracks gradients (no autograd:
/// the result is a constant). For benchmarks and tests that compare it with the matmul.
pub fn streamed_linear(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    if !fused_ok(&[x, w]) {
        bail!("streamed_linear: CPU f32 tensors only");
    }
    decode_matmul::decode_matmul(x, w)
}

/// Scaled dot-product attention with grouped-query heads. q: (B, H, T, D); k, v: (B, Hkv, S, D)
/// with H a multiple of Hkv; mask: additive (B, 1, T, S), 0 where allowed and −inf (or a large
/// negative) where not. Returns (B, H, T, D).
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor, mask: &Tensor, scale: f64) -> Result<Tensor> {
    let (b, h, t, _) = q.dims4()?;
    let (_, hkv, s, _) = k.dims4()?;
    // Decode (one query per row, nothing to differentiate): one fused pass over the cache.
    let tracked = q.track_op() || k.track_op() || v.track_op();
    if t == 1 && !tracked && fused_ok(&[q, k, v, mask]) && mask.dims() == [b, 1, 1, s] {
        return decode_attention_op::decode_attention(q, k, v, mask, scale);
    }
    let (bm, hm, tm, sm) = mask.dims4()?;
    let mask_ok = (bm == b || bm == 1) && hm == 1 && tm == t && sm == s;
    if fused_ok(&[q, k, v]) && mask.device().is_cpu() && mask_ok && h % hkv == 0 {
        let op = attention_op::AttentionOp {
            mask: mask.to_dtype(DType::F32)?.contiguous()?,
            scale: scale as f32,
            keep: tracked,
            probs: std::sync::Mutex::new(None),
        };
        return q
            .contiguous()?
            .apply_op3(&k.contiguous()?, &v.contiguous()?, op); // (B, H, T, D)
    }
    attention_by_matmul(q, k, v, mask, scale)
}

/// [`attention`] as candle matmuls around the fused masked softmax: other devices and dtypes.
fn attention_by_matmul(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: &Tensor,
    scale: f64,
) -> Result<Tensor> {
    let (b, h, t, d) = q.dims4()?;
    let (_, hkv, s, _) = k.dims4()?;
    let group = h / hkv;
    // Fold the query-head group into the time axis so each kv head is used once, without copies of k/v.
    let q = q.reshape((b, hkv, group * t, d))?; // (B, Hkv, G*T, D)
    let att = q.matmul(&k.t()?)?.reshape((b, h, t, s))?; // (B, H, T, S), unscaled
    let att = masked_softmax(&att, mask, scale)?; // (B, H, T, S)
    let att = att.reshape((b, hkv, group * t, s))?;
    att.matmul(v)?.reshape((b, h, t, d)) // (B, H, T, D)
}

#[cfg(test)]
mod tests;
