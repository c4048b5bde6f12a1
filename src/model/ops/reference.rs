//! Composite versions built from differentiable candle ops: the fallback off CPU / f32, and the
//! reference the fused kernels are tested and benchmarked against.

use super::LogProbStats;
use candle_core::{DType, Result, Tensor, D};

/// See [`super::rms_norm`].
pub fn rms_norm(x: &Tensor, w: &Tensor, eps: f64) -> Result<Tensor> {
    let ms = (x.sqr()?.sum_keepdim(D::Minus1)? / x.dim(D::Minus1)? as f64)?; // (.., 1)
    x.broadcast_div(&(ms + eps)?.sqrt()?)?.broadcast_mul(w)
}

/// See [`super::rope`].
pub fn rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    let d = x.dim(D::Minus1)?;
    let cos = Tensor::cat(&[cos, cos], D::Minus1)?.unsqueeze(1)?; // (B, 1, T, D)
    let sin = Tensor::cat(&[sin, sin], D::Minus1)?.unsqueeze(1)?; // (B, 1, T, D)
    let x1 = x.narrow(D::Minus1, 0, d / 2)?;
    let x2 = x.narrow(D::Minus1, d / 2, d / 2)?;
    let rotated = Tensor::cat(&[&x2.neg()?, &x1], D::Minus1)?; // (B, H, T, D)
    x.broadcast_mul(&cos)? + rotated.broadcast_mul(&sin)?
}

/// See [`super::softmax_last_dim`].
pub fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    candle_nn::ops::softmax(x, D::Minus1)
}

/// See [`super::masked_softmax`].
pub fn masked_softmax(x: &Tensor, mask: &Tensor, scale: f64) -> Result<Tensor> {
    softmax_last_dim(&(x * scale)?.broadcast_add(&mask.to_dtype(x.dtype())?)?)
}

/// See [`super::swiglu`].
pub fn swiglu(gate: &Tensor, up: &Tensor) -> Result<Tensor> {
    gate.silu()? * up
}

/// See [`super::logprob_stats`]. Computed in f32, or in f64 for f64 logits.
pub fn logprob_stats(logits: &Tensor, targets: &Tensor, temperature: f64) -> Result<LogProbStats> {
    let dtype = if logits.dtype() == DType::F64 {
        DType::F64
    } else {
        DType::F32
    };
    let z = (logits.to_dtype(dtype)? / temperature)?; // (N, V)
    let logp_all = candle_nn::ops::log_softmax(&z, D::Minus1)?; // (N, V)
    let logp = logp_all.gather(&targets.unsqueeze(1)?, 1)?.squeeze(1)?; // (N,)
    let mean_logp = logp_all.mean(D::Minus1)?; // (N,)
    let entropy = (logp_all.exp()? * &logp_all)?.sum(D::Minus1)?.neg()?; // (N,)
    Ok(LogProbStats {
        logp,
        mean_logp,
        entropy,
    })
}

/// See [`super::attention`].
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor, mask: &Tensor, scale: f64) -> Result<Tensor> {
    let (b, h, t, d) = q.dims4()?;
    let (_, hkv, s, _) = k.dims4()?;
    let group = h / hkv;
    let q = q.reshape((b, hkv, group * t, d))?; // (B, Hkv, G*T, D)
    let att = (q.matmul(&k.t()?)? * scale)?; // (B, Hkv, G*T, S)
    let att = att.reshape((b, hkv, group, t, s))?; // (B, Hkv, G, T, S)
    let mask = mask.unsqueeze(1)?; // (B, 1, 1, T, S)
    let att = softmax_last_dim(&att.broadcast_add(&mask)?)?; // (B, Hkv, G, T, S)
    let att = att.reshape((b, hkv, group * t, s))?;
    att.matmul(v)?.reshape((b, h, t, d)) // (B, H, T, D)
}
