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

use candle_core::{
    bail, CpuStorage, CustomOp1, CustomOp2, CustomOp3, DType, Device, Layout, Result, Shape,
    Storage, Tensor, WithDType, D,
};
use rayon::prelude::*;

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

/// Scaled dot-product attention with grouped-query heads. q: (B, H, T, D); k, v: (B, Hkv, S, D)
/// with H a multiple of Hkv; mask: additive (B, 1, T, S), 0 where allowed and −inf (or a large
/// negative) where not. Returns (B, H, T, D).
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor, mask: &Tensor, scale: f64) -> Result<Tensor> {
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

// ---------------------------------------------------------------------------------------------
// Plumbing

/// The fused kernels run on CPU f32 tensors only.
fn fused_ok(ts: &[&Tensor]) -> bool {
    ts.iter()
        .all(|t| t.device().is_cpu() && t.dtype() == DType::F32)
}

/// The elements of a contiguous CPU storage region.
fn slice_of<'a, T: WithDType>(s: &'a CpuStorage, l: &Layout) -> Result<&'a [T]> {
    let data = s.as_slice::<T>()?;
    match l.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        // The public functions make inputs contiguous before applying an op.
        None => bail!("fused op: internal error, input is not contiguous"),
    }
}

/// Runs `f` on the elements of `t`, made contiguous first (free when it already is).
fn with_slice<T: WithDType, R>(t: &Tensor, f: impl FnOnce(&[T]) -> Result<R>) -> Result<R> {
    let t = t.contiguous()?;
    let (storage, layout) = t.storage_and_layout();
    match &*storage {
        Storage::Cpu(s) => f(slice_of(s, layout)?),
        _ => bail!("fused op: the backward kernel runs on CPU only"),
    }
}

fn cpu_tensor(data: Vec<f32>, shape: &Shape) -> Result<Tensor> {
    Tensor::from_vec(data, shape, &Device::Cpu)
}

/// Rows per rayon task for row-wise kernels: enough work per task to amortize scheduling.
fn rows_per_task(row_len: usize) -> usize {
    (16_384 / row_len.max(1)).max(1)
}

/// Compiles `$body` twice, generic and with AVX2+FMA enabled, and picks at run time, so the exp
/// and reduction loops vectorize 8-wide without a target-cpu flag.
macro_rules! simd_fn {
    ($(#[$meta:meta])* fn $name:ident($($arg:ident : $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block) => {
        $(#[$meta])*
        fn $name($($arg: $ty),*) $(-> $ret)? {
            #[inline(always)]
            fn generic($($arg: $ty),*) $(-> $ret)? $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2,fma")]
                unsafe fn avx2($($arg: $ty),*) $(-> $ret)? { generic($($arg),*) }
                if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
                    // SAFETY: the running CPU has the features `avx2` was compiled for.
                    return unsafe { avx2($($arg),*) };
                }
            }
            generic($($arg),*)
        }
    };
}

/// exp(x) in f32, branch-free so loops over it vectorize: 2^n · p(r) with n = round(x / ln 2),
/// |r| ≤ ln 2 / 2 and p the degree-7 Taylor polynomial (relative error < 2e-7 over the range).
/// Inputs below −87 give exactly 0 (so −inf masks give 0); above 88 saturate at e^88.
#[inline(always)]
fn exp_f32(x: f32) -> f32 {
    // Adding 1.5 · 2^23 rounds to an integer and leaves it in the low mantissa bits.
    const SHIFT: f32 = 12_582_912.0;
    const LN2_HI: f32 = 0.693_359_4; // Cephes split of ln 2: LN2_HI exact in few bits
    const LN2_LO: f32 = -2.121_944_4e-4;
    let xc = x.clamp(-87.0, 88.0);
    let t = xc * std::f32::consts::LOG2_E + SHIFT;
    let n = t - SHIFT;
    let r = xc - n * LN2_HI - n * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0
                    + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0 + r / 5040.0))))));
    let two_n = f32::from_bits(((t.to_bits() as i32 - 0x4B40_0000 + 127) << 23) as u32);
    if x < -87.0 {
        0.0
    } else {
        p * two_n
    }
}

const LANES: usize = 16;

/// max over a slice, with independent lanes so it vectorizes.
#[inline(always)]
fn max_of(x: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; LANES];
    let chunks = x.chunks_exact(LANES);
    let tail = chunks.remainder();
    for c in chunks {
        for i in 0..LANES {
            acc[i] = if c[i] > acc[i] { c[i] } else { acc[i] };
        }
    }
    let mut m = f32::NEG_INFINITY;
    for &v in acc.iter().chain(tail) {
        m = if v > m { v } else { m };
    }
    m
}

/// Σ a·b with independent lanes (vectorizes; also more accurate than a serial sum).
#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; LANES];
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..LANES {
            acc[i] += x[i] * y[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}

// ---------------------------------------------------------------------------------------------
// logprob_stats

struct LogProbStatsOp {
    inv_t: f32,
    vocab: usize,
}

simd_fn! {
    /// For one row of logits x and z = x · inv_t: (max z, Σ e^(z−m), Σ e^(z−m)·(z−m), Σ z).
    fn lp_row_sums(x: &[f32], inv_t: f32) -> (f32, f32, f32, f32) {
        let m = max_of(x) * inv_t; // inv_t > 0, so max commutes with the scaling
        let mut s = [0f32; LANES];
        let mut sd = [0f32; LANES];
        let mut sz = [0f32; LANES];
        let chunks = x.chunks_exact(LANES);
        let tail = chunks.remainder();
        for c in chunks {
            for i in 0..LANES {
                let z = c[i] * inv_t;
                let d = z - m;
                let e = exp_f32(d);
                s[i] += e;
                sd[i] += e * d;
                sz[i] += z;
            }
        }
        let (mut s, mut sd, mut sz) = (s.iter().sum::<f32>(), sd.iter().sum::<f32>(), sz.iter().sum::<f32>());
        for &xv in tail {
            let z = xv * inv_t;
            let d = z - m;
            let e = exp_f32(d);
            s += e;
            sd += e * d;
            sz += z;
        }
        (m, s, sd, sz)
    }
}

simd_fn! {
    /// dlogits of one row: with p = softmax(z), log p_j = z_j − lse,
    ///   ∂logp_t/∂z_j = 1[j=t] − p_j
    ///   ∂mean_logp/∂z_j = 1/V − p_j
    ///   ∂H/∂z_j = −p_j (log p_j + H)          (H = −Σ p log p)
    /// so dz_j = gm/V − p_j (gl + gm + ge (log p_j + H)) + gl·1[j=t], and dlogits = dz / T.
    fn lp_row_grad(x: &[f32], out: &mut [f32], inv_t: f32, lse: f32, h: f32, g: [f32; 3]) {
        let [gl, gm, ge] = g;
        let c0 = gm / x.len() as f32 * inv_t;
        let c1 = gl + gm;
        for (o, &xv) in out.iter_mut().zip(x) {
            let lp = xv * inv_t - lse;
            let p = exp_f32(lp);
            *o = c0 - p * (c1 + ge * (lp + h)) * inv_t;
        }
    }
}

impl CustomOp2 for LogProbStatsOp {
    fn name(&self) -> &'static str {
        "logprob-stats"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = slice_of::<f32>(s1, l1)?; // (N, V)
        let tg = slice_of::<u32>(s2, l2)?; // (N,)
        let v = self.vocab;
        let n = tg.len();
        if let Some(&bad) = tg.iter().find(|&&t| t as usize >= v) {
            bail!("logprob_stats: target id {bad} is outside the vocabulary of {v} logits");
        }
        let rows: Vec<[f32; 4]> = x
            .par_chunks(v)
            .zip(tg.par_iter())
            .with_min_len(rows_per_task(v))
            .map(|(row, &t)| {
                let (m, s, sd, sz) = lp_row_sums(row, self.inv_t);
                let lse = m + s.ln();
                // H = lse − Σ p z = ln s − Σ p (z − m).
                let entropy = s.ln() - sd / s;
                [
                    row[t as usize] * self.inv_t - lse,
                    sz / v as f32 - lse,
                    entropy,
                    lse,
                ]
            })
            .collect();
        let mut out = vec![0f32; 4 * n];
        for (i, r) in rows.iter().enumerate() {
            for (k, &val) in r.iter().enumerate() {
                out[k * n + i] = val;
            }
        }
        Ok((CpuStorage::F32(out), Shape::from((4, n))))
    }

    fn bwd(
        &self,
        logits: &Tensor,
        targets: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let v = self.vocab;
        let dx = with_slice::<f32, _>(logits, |x| {
            with_slice::<u32, _>(targets, |tg| {
                with_slice::<f32, _>(res, |res| {
                    with_slice::<f32, _>(grad, |g| {
                        let n = tg.len();
                        let mut dx = vec![0f32; n * v];
                        dx.par_chunks_mut(v)
                            .zip(x.par_chunks(v))
                            .enumerate()
                            .with_min_len(rows_per_task(v))
                            .for_each(|(i, (out, row))| {
                                let gi = [g[i], g[n + i], g[2 * n + i]];
                                lp_row_grad(
                                    row,
                                    out,
                                    self.inv_t,
                                    res[3 * n + i],
                                    res[2 * n + i],
                                    gi,
                                );
                                out[tg[i] as usize] += gi[0] * self.inv_t;
                            });
                        Ok(dx)
                    })
                })
            })
        })?;
        Ok((Some(cpu_tensor(dx, logits.shape())?), None))
    }
}

// ---------------------------------------------------------------------------------------------
// rms_norm

struct RmsNormOp {
    eps: f32,
}

simd_fn! {
    fn rms_fwd_rows(x: &[f32], w: &[f32], out: &mut [f32], eps: f32) {
        let d = w.len();
        for (xr, or) in x.chunks_exact(d).zip(out.chunks_exact_mut(d)) {
            let r = 1.0 / (dot(xr, xr) / d as f32 + eps).sqrt();
            for ((o, &xv), &wv) in or.iter_mut().zip(xr).zip(w) {
                *o = xv * r * wv;
            }
        }
    }
}

simd_fn! {
    /// With r = (mean(x²) + eps)^(−1/2) and y_i = w_i x_i r, ∂r/∂x_j = −r³ x_j / D, so
    ///   dx_j = r (g_j w_j − x_j r² Σ_i g_i w_i x_i / D),   dw_i += g_i x_i r (summed over rows).
    fn rms_bwd_rows(x: &[f32], w: &[f32], g: &[f32], dx: &mut [f32], dw: &mut [f32], eps: f32) {
        let d = w.len();
        for ((xr, gr), dxr) in x.chunks_exact(d).zip(g.chunks_exact(d)).zip(dx.chunks_exact_mut(d)) {
            let r = 1.0 / (dot(xr, xr) / d as f32 + eps).sqrt();
            let mut gwx = 0f32;
            for i in 0..d {
                gwx += gr[i] * w[i] * xr[i];
            }
            let c = r * r * gwx / d as f32;
            for i in 0..d {
                dxr[i] = r * (gr[i] * w[i] - xr[i] * c);
                dw[i] += gr[i] * xr[i] * r;
            }
        }
    }
}

impl CustomOp2 for RmsNormOp {
    fn name(&self) -> &'static str {
        "rms-norm-bwd"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = slice_of::<f32>(s1, l1)?; // (.., D)
        let w = slice_of::<f32>(s2, l2)?; // (D,)
        let d = w.len();
        let mut out = vec![0f32; x.len()];
        let chunk = rows_per_task(d) * d;
        out.par_chunks_mut(chunk)
            .zip(x.par_chunks(chunk))
            .for_each(|(o, xc)| rms_fwd_rows(xc, w, o, self.eps));
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (dx, dw) = with_slice::<f32, _>(x, |x| {
            with_slice::<f32, _>(w, |w| {
                with_slice::<f32, _>(grad, |g| {
                    let d = w.len();
                    let mut dx = vec![0f32; x.len()];
                    let chunk = rows_per_task(d) * d;
                    let dw = dx
                        .par_chunks_mut(chunk)
                        .zip(x.par_chunks(chunk).zip(g.par_chunks(chunk)))
                        .map(|(dxc, (xc, gc))| {
                            let mut dw = vec![0f32; d];
                            rms_bwd_rows(xc, w, gc, dxc, &mut dw, self.eps);
                            dw
                        })
                        .reduce(
                            || vec![0f32; d],
                            |mut a, b| {
                                a.iter_mut().zip(&b).for_each(|(a, b)| *a += b);
                                a
                            },
                        );
                    Ok((dx, dw))
                })
            })
        })?;
        Ok((
            Some(cpu_tensor(dx, x.shape())?),
            Some(cpu_tensor(dw, w.shape())?),
        ))
    }
}

// ---------------------------------------------------------------------------------------------
// softmax (plain and masked)

simd_fn! {
    /// p = softmax(x · scale + mask) for one row; mask may be empty (no mask).
    fn softmax_row(x: &[f32], mask: &[f32], out: &mut [f32], scale: f32) {
        if mask.is_empty() {
            for (o, &xv) in out.iter_mut().zip(x) {
                *o = xv * scale;
            }
        } else {
            for ((o, &xv), &mv) in out.iter_mut().zip(x).zip(mask) {
                *o = xv * scale + mv;
            }
        }
        let m = max_of(out);
        if m == f32::NEG_INFINITY {
            // Every position masked: no distribution; zeros keep NaN out of the gradients.
            out.fill(0.0);
            return;
        }
        let mut acc = [0f32; LANES];
        let mut chunks = out.chunks_exact_mut(LANES);
        for c in &mut chunks {
            for i in 0..LANES {
                c[i] = exp_f32(c[i] - m);
                acc[i] += c[i];
            }
        }
        let mut s: f32 = acc.iter().sum();
        for o in chunks.into_remainder() {
            *o = exp_f32(*o - m);
            s += *o;
        }
        let inv = 1.0 / s;
        out.iter_mut().for_each(|o| *o *= inv);
    }
}

simd_fn! {
    /// Softmax backward from its output: dx_j = scale · p_j (g_j − Σ_i g_i p_i).
    fn softmax_grad_row(p: &[f32], g: &[f32], out: &mut [f32], scale: f32) {
        let gp = dot(g, p);
        for ((o, &pv), &gv) in out.iter_mut().zip(p).zip(g) {
            *o = scale * pv * (gv - gp);
        }
    }
}

fn softmax_bwd(res: &Tensor, grad: &Tensor, scale: f32) -> Result<Tensor> {
    let s = res.dim(D::Minus1)?;
    let dx = with_slice::<f32, _>(res, |p| {
        with_slice::<f32, _>(grad, |g| {
            let mut dx = vec![0f32; p.len()];
            dx.par_chunks_mut(s)
                .zip(p.par_chunks(s).zip(g.par_chunks(s)))
                .with_min_len(rows_per_task(s))
                .for_each(|(o, (p, g))| softmax_grad_row(p, g, o, scale));
            Ok(dx)
        })
    })?;
    cpu_tensor(dx, res.shape())
}

struct SoftmaxOp {
    scale: f32,
}

impl CustomOp1 for SoftmaxOp {
    fn name(&self) -> &'static str {
        "softmax-bwd"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = slice_of::<f32>(s1, l1)?;
        let s = l1.shape().dims().last().copied().unwrap_or(1);
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(s)
            .zip(x.par_chunks(s))
            .with_min_len(rows_per_task(s))
            .for_each(|(o, x)| softmax_row(x, &[], o, self.scale));
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    fn bwd(&self, _x: &Tensor, res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(softmax_bwd(res, grad, self.scale)?))
    }
}

struct MaskedSoftmaxOp {
    scale: f32,
}

impl CustomOp2 for MaskedSoftmaxOp {
    fn name(&self) -> &'static str {
        "masked-softmax-bwd"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = slice_of::<f32>(s1, l1)?; // (B, H, T, S)
        let mask = slice_of::<f32>(s2, l2)?; // (B or 1, 1, T, S)
        let (b, h, t, s) = l1.shape().dims4()?;
        let mask_b = l2.shape().dims()[0];
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(s)
            .zip(x.par_chunks(s))
            .enumerate()
            .with_min_len(rows_per_task(s))
            .for_each(|(row, (o, x))| {
                let (bi, ti) = (row / (h * t), row % t);
                let mrow = (if mask_b == 1 { 0 } else { bi }) * t + ti;
                softmax_row(x, &mask[mrow * s..(mrow + 1) * s], o, self.scale);
            });
        debug_assert_eq!(out.len(), b * h * t * s);
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    fn bwd(
        &self,
        _x: &Tensor,
        _mask: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        // The mask is a constant of the batch; it gets no gradient.
        Ok((Some(softmax_bwd(res, grad, self.scale)?), None))
    }
}

// ---------------------------------------------------------------------------------------------
// rope

struct RopeOp;

simd_fn! {
    /// y1 = x1 c − x2 s·sign, y2 = x2 c + x1 s·sign (rotate-half). The rotation is orthogonal,
    /// so the backward is the same kernel with sign = −1 (the inverse rotation).
    fn rope_row(x: &[f32], c: &[f32], s: &[f32], out: &mut [f32], sign: f32) {
        let half = c.len();
        let (x1, x2) = x.split_at(half);
        let (o1, o2) = out.split_at_mut(half);
        for i in 0..half {
            let si = s[i] * sign;
            o1[i] = x1[i] * c[i] - x2[i] * si;
            o2[i] = x2[i] * c[i] + x1[i] * si;
        }
    }
}

/// Applies the rotation to x read through `layout` (last stride 1) into a contiguous (B, H, T, D).
fn rope_apply(
    data: &[f32],
    layout: &Layout,
    cos: &[f32],
    sin: &[f32],
    sign: f32,
) -> Result<Vec<f32>> {
    let (b, h, t, d) = layout.shape().dims4()?;
    let st = layout.stride();
    let off = layout.start_offset();
    let half = d / 2;
    let cos_b = cos.len() / (t * half); // 1 or B
    let mut out = vec![0f32; b * h * t * d];
    out.par_chunks_mut(t * d).enumerate().for_each(|(bh, o)| {
        let (bi, hi) = (bh / h, bh % h);
        let cb = if cos_b == 1 { 0 } else { bi };
        for ti in 0..t {
            let src = off + bi * st[0] + hi * st[1] + ti * st[2];
            let cs = (cb * t + ti) * half;
            rope_row(
                &data[src..src + d],
                &cos[cs..cs + half],
                &sin[cs..cs + half],
                &mut o[ti * d..(ti + 1) * d],
                sign,
            );
        }
    });
    Ok(out)
}

impl CustomOp3 for RopeOp {
    fn name(&self) -> &'static str {
        "rope-bwd"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        if l1.stride()[3] != 1 {
            bail!("rope: internal error, last dim of x must be unit-stride");
        }
        let data = s1.as_slice::<f32>()?;
        let (cos, sin) = (slice_of::<f32>(s2, l2)?, slice_of::<f32>(s3, l3)?);
        let out = rope_apply(data, l1, cos, sin, 1.0)?;
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    fn bwd(
        &self,
        _x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        let dx = with_slice::<f32, _>(&grad, |g| {
            with_slice::<f32, _>(cos, |c| {
                with_slice::<f32, _>(sin, |s| {
                    rope_apply(g, &Layout::contiguous(grad.shape()), c, s, -1.0)
                })
            })
        })?;
        // cos/sin are position constants: no gradient.
        Ok((Some(cpu_tensor(dx, grad.shape())?), None, None))
    }
}

// ---------------------------------------------------------------------------------------------
// swiglu

struct SwigluOp;

simd_fn! {
    fn swiglu_fwd_chunk(g: &[f32], u: &[f32], out: &mut [f32]) {
        for ((o, &gv), &uv) in out.iter_mut().zip(g).zip(u) {
            *o = gv / (1.0 + exp_f32(-gv)) * uv;
        }
    }
}

simd_fn! {
    /// With s = σ(g): d silu(g)/dg = s (1 + g (1 − s)), so
    ///   dgate = grad · up · s (1 + g (1 − s)),   dup = grad · g s.
    fn swiglu_bwd_chunk(g: &[f32], u: &[f32], gr: &[f32], dg: &mut [f32], du: &mut [f32]) {
        for i in 0..g.len().min(dg.len()).min(du.len()) {
            let s = 1.0 / (1.0 + exp_f32(-g[i]));
            dg[i] = gr[i] * u[i] * s * (1.0 + g[i] * (1.0 - s));
            du[i] = gr[i] * g[i] * s;
        }
    }
}

const ELEMS_PER_TASK: usize = 16_384;

impl CustomOp2 for SwigluOp {
    fn name(&self) -> &'static str {
        "swiglu-bwd"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (g, u) = (slice_of::<f32>(s1, l1)?, slice_of::<f32>(s2, l2)?);
        let mut out = vec![0f32; g.len()];
        out.par_chunks_mut(ELEMS_PER_TASK)
            .zip(
                g.par_chunks(ELEMS_PER_TASK)
                    .zip(u.par_chunks(ELEMS_PER_TASK)),
            )
            .for_each(|(o, (g, u))| swiglu_fwd_chunk(g, u, o));
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    fn bwd(
        &self,
        gate: &Tensor,
        up: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (dg, du) = with_slice::<f32, _>(gate, |g| {
            with_slice::<f32, _>(up, |u| {
                with_slice::<f32, _>(grad, |gr| {
                    let mut dg = vec![0f32; g.len()];
                    let mut du = vec![0f32; g.len()];
                    dg.par_chunks_mut(ELEMS_PER_TASK)
                        .zip(du.par_chunks_mut(ELEMS_PER_TASK))
                        .zip(g.par_chunks(ELEMS_PER_TASK))
                        .zip(
                            u.par_chunks(ELEMS_PER_TASK)
                                .zip(gr.par_chunks(ELEMS_PER_TASK)),
                        )
                        .for_each(|(((dg, du), g), (u, gr))| swiglu_bwd_chunk(g, u, gr, dg, du));
                    Ok((dg, du))
                })
            })
        })?;
        Ok((
            Some(cpu_tensor(dg, gate.shape())?),
            Some(cpu_tensor(du, up.shape())?),
        ))
    }
}

// ---------------------------------------------------------------------------------------------

/// Composite versions built from differentiable candle ops: the fallback off CPU / f32, and the
/// reference the fused kernels are tested and benchmarked against.
pub mod reference {
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
    pub fn logprob_stats(
        logits: &Tensor,
        targets: &Tensor,
        temperature: f64,
    ) -> Result<LogProbStats> {
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
    pub fn attention(
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        mask: &Tensor,
        scale: f64,
    ) -> Result<Tensor> {
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Var;

    fn randn(shape: &[usize]) -> Tensor {
        Tensor::randn(0f32, 1f32, shape, &Device::Cpu).unwrap()
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        let a = a.to_dtype(DType::F32).unwrap();
        let b = b.to_dtype(DType::F32).unwrap();
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    }

    type OpFn<'a> = &'a dyn Fn(&[Tensor]) -> Result<Tensor>;

    /// Compares `fused` with `reference` on `inputs`: forward values; gradients of Σ out·w for the
    /// inputs listed in `diff` against the reference's autograd; and the same gradients against
    /// f64 central differences of the reference at a few elements.
    fn check(fused: OpFn, reference: OpFn, inputs: &[Tensor], diff: &[usize], grad_tol: f32) {
        let out_f = fused(inputs).unwrap();
        let out_r = reference(inputs).unwrap();
        assert_eq!(out_f.dims(), out_r.dims());
        let d = max_diff(&out_f, &out_r);
        assert!(
            d <= 1e-5,
            "forward differs from the composite version by {d}"
        );

        let w = randn(out_f.dims());
        let grads = |f: OpFn| -> Vec<Tensor> {
            let vars: Vec<Tensor> = inputs
                .iter()
                .enumerate()
                .map(|(i, t)| match diff.contains(&i) {
                    true => Var::from_tensor(t).unwrap().as_tensor().clone(),
                    false => t.clone(),
                })
                .collect();
            let loss = (f(&vars).unwrap() * &w).unwrap().sum_all().unwrap();
            let g = loss.backward().unwrap();
            diff.iter()
                .map(|&i| g.get(&vars[i]).expect("input got no gradient").clone())
                .collect()
        };
        let (g_fused, g_ref) = (grads(fused), grads(reference));
        for (k, (a, b)) in g_fused.iter().zip(&g_ref).enumerate() {
            let d = max_diff(a, b);
            assert!(
                d <= grad_tol,
                "input {}: gradient differs from autograd by {d}",
                diff[k]
            );
        }

        let to64 = |t: &Tensor| match t.dtype() {
            DType::F32 => t.to_dtype(DType::F64).unwrap(),
            _ => t.clone(),
        };
        let inputs64: Vec<Tensor> = inputs.iter().map(to64).collect();
        let w64 = to64(&w);
        let loss64 = |xs: &[Tensor]| -> f64 {
            (reference(xs).unwrap() * &w64)
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f64>()
                .unwrap()
        };
        for (k, &i) in diff.iter().enumerate() {
            let base: Vec<f64> = inputs64[i].flatten_all().unwrap().to_vec1().unwrap();
            let g: Vec<f32> = g_fused[k].flatten_all().unwrap().to_vec1().unwrap();
            let n = base.len();
            for j in [0, n / 5, n / 3, n / 2, 2 * n / 3, n - 1] {
                let eval = |delta: f64| {
                    let mut v = base.clone();
                    v[j] += delta;
                    let mut xs = inputs64.clone();
                    xs[i] = Tensor::from_vec(v, inputs64[i].shape(), &Device::Cpu).unwrap();
                    loss64(&xs)
                };
                let h = 1e-5;
                let fd = (eval(h) - eval(-h)) / (2.0 * h);
                let err = (fd - g[j] as f64).abs();
                assert!(
                    err <= 1e-4 * (1.0 + fd.abs()),
                    "input {i} element {j}: fused gradient {} vs finite difference {fd}",
                    g[j]
                );
            }
        }
    }

    fn causal_mask(b: usize, t: usize, pad: &[usize]) -> Tensor {
        // Sequence i is left-padded by pad[i] keys; each query still sees at least itself.
        let mut m = vec![0f32; b * t * t];
        for bi in 0..b {
            for q in 0..t {
                for k in 0..t {
                    if k > q || (k < pad[bi] && k != q) {
                        m[(bi * t + q) * t + k] = f32::NEG_INFINITY;
                    }
                }
            }
        }
        Tensor::from_vec(m, (b, 1, t, t), &Device::Cpu).unwrap()
    }

    #[test]
    fn exp_f32_matches_libm() {
        let mut worst = 0f64;
        for i in 0..=200_000 {
            let x = -87.0 + 175.0 * i as f32 / 200_000.0;
            let want = (x as f64).exp();
            worst = worst.max(((exp_f32(x) as f64) - want).abs() / want);
        }
        assert!(worst < 3e-7, "relative error {worst}");
        assert_eq!(exp_f32(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp_f32(0.0), 1.0);
        assert!(exp_f32(f32::NAN).is_nan());
    }

    #[test]
    fn hand_computed_values() {
        let dev = Device::Cpu;
        // RMSNorm of [3, 4]: mean square 12.5 → [3, 4] / √12.5, times w = [1, 2].
        let x = Tensor::new(&[[3f32, 4.]], &dev).unwrap();
        let w = Tensor::new(&[1f32, 2.], &dev).unwrap();
        let y: Vec<Vec<f32>> = rms_norm(&x, &w, 0.0).unwrap().to_vec2().unwrap();
        let r = 12.5f32.sqrt();
        assert!((y[0][0] - 3. / r).abs() < 1e-6 && (y[0][1] - 8. / r).abs() < 1e-6);
        // softmax([0, ln 3]) = [1/4, 3/4].
        let p: Vec<f32> = softmax_last_dim(&Tensor::new(&[0f32, 3f32.ln()], &dev).unwrap())
            .unwrap()
            .to_vec1()
            .unwrap();
        assert!((p[0] - 0.25).abs() < 1e-6 && (p[1] - 0.75).abs() < 1e-6);
        // swiglu(0, 5) = 0; swiglu(ln 3, 2) = ln 3 · 3/4 · 2.
        let g = Tensor::new(&[0f32, 3f32.ln()], &dev).unwrap();
        let u = Tensor::new(&[5f32, 2.], &dev).unwrap();
        let s: Vec<f32> = swiglu(&g, &u).unwrap().to_vec1().unwrap();
        assert!(s[0].abs() < 1e-7 && (s[1] - 3f32.ln() * 1.5).abs() < 1e-6);
        // rope with cos = 0, sin = 1 rotates (x1, x2) → (−x2, x1).
        let x = Tensor::new(&[1f32, 2., 3., 4.], &dev)
            .unwrap()
            .reshape((1, 1, 1, 4))
            .unwrap();
        let c = Tensor::zeros((1, 1, 2), DType::F32, &dev).unwrap();
        let sn = Tensor::ones((1, 1, 2), DType::F32, &dev).unwrap();
        let y: Vec<f32> = rope(&x, &c, &sn)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        assert_eq!(y, [-3., -4., 1., 2.]);
        // Uniform logits over 4 tokens: logp = mean_logp = −ln 4, entropy = ln 4, at any temperature.
        let z = Tensor::zeros((1, 4), DType::F32, &dev).unwrap();
        let t = Tensor::new(&[2u32], &dev).unwrap();
        let st = logprob_stats(&z, &t, 0.5).unwrap();
        let l4 = 4f32.ln();
        let get = |t: &Tensor| t.to_vec1::<f32>().unwrap()[0];
        assert!((get(&st.logp) + l4).abs() < 1e-6);
        assert!((get(&st.mean_logp) + l4).abs() < 1e-6);
        assert!((get(&st.entropy) - l4).abs() < 1e-6);
    }

    fn lp_stack(s: LogProbStats) -> Result<Tensor> {
        Tensor::stack(&[&s.logp, &s.mean_logp, &s.entropy], 0)
    }

    #[test]
    fn logprob_stats_matches_composite() {
        for v in [37, 64] {
            let n = 6;
            let logits = (randn(&[n, v]) * 3.0).unwrap();
            let targets = Tensor::new(&[0u32, 5, 36, 1, 2, 30], &Device::Cpu).unwrap();
            check(
                &|i| lp_stack(logprob_stats(&i[0], &i[1], 0.7)?),
                &|i| lp_stack(reference::logprob_stats(&i[0], &i[1], 0.7)?),
                &[logits, targets],
                &[0],
                1e-5,
            );
        }
    }

    #[test]
    fn logprob_stats_non_contiguous_logits() {
        // Logits stored (V, N) and viewed as (N, V).
        let targets = Tensor::new(&[3u32, 0, 19], &Device::Cpu).unwrap();
        check(
            &|i| lp_stack(logprob_stats(&i[0].t()?, &i[1], 1.3)?),
            &|i| lp_stack(reference::logprob_stats(&i[0].t()?, &i[1], 1.3)?),
            &[randn(&[20, 3]), targets],
            &[0],
            1e-5,
        );
    }

    #[test]
    fn logprob_stats_rejects_bad_input() {
        let z = randn(&[2, 4]);
        let bad = Tensor::new(&[0u32, 4], &Device::Cpu).unwrap();
        assert!(logprob_stats(&z, &bad, 1.0).is_err());
        let ok = Tensor::new(&[0u32, 3], &Device::Cpu).unwrap();
        assert!(logprob_stats(&z, &ok, 0.0).is_err());
    }

    #[test]
    fn rms_norm_matches_composite() {
        check(
            &|i| rms_norm(&i[0], &i[1], 1e-5),
            &|i| reference::rms_norm(&i[0], &i[1], 1e-5),
            &[randn(&[2, 3, 40]), randn(&[40])],
            &[0, 1],
            1e-5,
        );
        // Non-contiguous x: stored (D, N), viewed (N, D).
        check(
            &|i| rms_norm(&i[0].t()?, &i[1], 1e-5),
            &|i| reference::rms_norm(&i[0].t()?, &i[1], 1e-5),
            &[randn(&[24, 5]), randn(&[24])],
            &[0, 1],
            1e-5,
        );
    }

    #[test]
    fn softmax_matches_composite() {
        check(
            &|i| softmax_last_dim(&i[0]),
            &|i| reference::softmax_last_dim(&i[0]),
            &[randn(&[3, 4, 19])],
            &[0],
            1e-5,
        );
        check(
            &|i| softmax_last_dim(&i[0].t()?),
            &|i| reference::softmax_last_dim(&i[0].t()?),
            &[randn(&[17, 6])],
            &[0],
            1e-5,
        );
    }

    #[test]
    fn masked_softmax_matches_composite() {
        let mask = causal_mask(2, 7, &[0, 3]);
        check(
            &|i| masked_softmax(&i[0], &i[1], 0.3),
            &|i| reference::masked_softmax(&i[0], &i[1], 0.3),
            &[randn(&[2, 3, 7, 7]), mask.clone()],
            &[0],
            1e-5,
        );
        // A mask shared by the batch, and x as a transposed view.
        let shared = mask.narrow(0, 1, 1).unwrap();
        check(
            &|i| masked_softmax(&i[0].transpose(2, 3)?, &i[1], 0.3),
            &|i| reference::masked_softmax(&i[0].transpose(2, 3)?, &i[1], 0.3),
            &[randn(&[2, 3, 7, 7]), shared],
            &[0],
            1e-5,
        );
    }

    #[test]
    fn masked_softmax_fully_masked_row_is_zero() {
        let mask = Tensor::full(f32::NEG_INFINITY, (1, 1, 1, 3), &Device::Cpu).unwrap();
        let p = masked_softmax(&randn(&[1, 2, 1, 3]), &mask, 1.0).unwrap();
        let v: Vec<f32> = p.flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(v, [0.0; 6]);
    }

    #[test]
    fn rope_matches_composite() {
        let (b, h, t, d) = (2, 3, 5, 8);
        check(
            &|i| rope(&i[0], &i[1], &i[2]),
            &|i| reference::rope(&i[0], &i[1], &i[2]),
            &[
                randn(&[b, h, t, d]),
                randn(&[b, t, d / 2]),
                randn(&[b, t, d / 2]),
            ],
            &[0],
            1e-5,
        );
        // x as the (B, T, H, D) → (B, H, T, D) transpose the attention layer produces; and the
        // same positions for every sequence.
        check(
            &|i| rope(&i[0].transpose(1, 2)?, &i[1], &i[2]),
            &|i| reference::rope(&i[0].transpose(1, 2)?, &i[1], &i[2]),
            &[
                randn(&[b, t, h, d]),
                randn(&[1, t, d / 2]),
                randn(&[1, t, d / 2]),
            ],
            &[0],
            1e-5,
        );
        // Fully transposed x (last dim not unit-stride) takes the copying path.
        check(
            &|i| rope(&i[0].t()?, &i[1], &i[2]),
            &|i| reference::rope(&i[0].t()?, &i[1], &i[2]),
            &[
                randn(&[b, h, d, t]),
                randn(&[b, t, d / 2]),
                randn(&[b, t, d / 2]),
            ],
            &[0],
            1e-5,
        );
    }

    #[test]
    fn swiglu_matches_composite() {
        check(
            &|i| swiglu(&i[0], &i[1]),
            &|i| reference::swiglu(&i[0], &i[1]),
            &[(randn(&[3, 50]) * 4.0).unwrap(), randn(&[3, 50])],
            &[0, 1],
            1e-5,
        );
        check(
            &|i| swiglu(&i[0].t()?, &i[1]),
            &|i| reference::swiglu(&i[0].t()?, &i[1]),
            &[randn(&[7, 4]), randn(&[4, 7])],
            &[0, 1],
            1e-5,
        );
    }

    #[test]
    fn attention_matches_composite() {
        let mask = causal_mask(2, 6, &[0, 2]);
        check(
            &|i| attention(&i[0], &i[1], &i[2], &i[3], 0.35),
            &|i| reference::attention(&i[0], &i[1], &i[2], &i[3], 0.35),
            &[
                randn(&[2, 4, 6, 8]),
                randn(&[2, 2, 6, 8]),
                randn(&[2, 2, 6, 8]),
                mask,
            ],
            &[0, 1, 2],
            1e-5,
        );
    }

    /// Peak and current resident memory of this process in MB (VmHWM, VmRSS).
    fn rss_mb() -> (f64, f64) {
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let get = |key: &str| {
            status
                .lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
                .unwrap_or(0.0)
                / 1024.0
        };
        (get("VmHWM:"), get("VmRSS:"))
    }

    type BoxFn = Box<dyn Fn(&[Tensor]) -> Result<Tensor>>;
    /// (name, inputs, indices of inputs to differentiate, fused, composite)
    type Case = (&'static str, Vec<Tensor>, Vec<usize>, BoxFn, BoxFn);

    /// Forward + backward of each op at SmolLM2-135M shapes (B 8, T 256, hidden 576, 9/3 heads of
    /// 64, ffn 1536, vocab 49152), composite vs fused; the upstream gradient is a random tensor
    /// (loss = Σ out·w), the same for both. `OPS_BENCH=<op>:<fused|composite>` runs one case so
    /// the printed peak RSS belongs to it:
    /// `for c in logprob:composite logprob:fused ...; do OPS_BENCH=$c cargo test --release --lib
    /// bench_smollm2 -- --ignored --nocapture; done`.
    #[test]
    #[ignore = "benchmark; run with --release -- --ignored --nocapture"]
    fn bench_smollm2_shapes() {
        let only = std::env::var("OPS_BENCH").ok();
        let (b, t, hid, h, hkv, hd, ffn, v) = (8, 256, 576, 9, 3, 64, 1536, 49152);
        let n = b * t;
        let dev = Device::Cpu;
        let pad: Vec<usize> = (0..b).map(|i| i * 8).collect();
        let targets: Vec<u32> = (0..n).map(|i| (i * 7919 % v) as u32).collect();
        let cases: Vec<Case> = vec![
            (
                "logprob",
                vec![
                    (randn(&[n, v]) * 2.0).unwrap(),
                    Tensor::from_vec(targets, n, &dev).unwrap(),
                ],
                vec![0],
                Box::new(|i| lp_stack(logprob_stats(&i[0], &i[1], 1.0)?)),
                Box::new(|i| lp_stack(reference::logprob_stats(&i[0], &i[1], 1.0)?)),
            ),
            (
                "rms_norm",
                vec![randn(&[b, t, hid]), randn(&[hid])],
                vec![0, 1],
                Box::new(|i| rms_norm(&i[0], &i[1], 1e-5)),
                Box::new(|i| reference::rms_norm(&i[0], &i[1], 1e-5)),
            ),
            (
                "rope",
                vec![
                    randn(&[b, t, h, hd]),
                    randn(&[b, t, hd / 2]),
                    randn(&[b, t, hd / 2]),
                ],
                vec![0],
                Box::new(|i| rope(&i[0].transpose(1, 2)?, &i[1], &i[2])),
                Box::new(|i| reference::rope(&i[0].transpose(1, 2)?, &i[1], &i[2])),
            ),
            (
                "softmax",
                vec![randn(&[b, h, t, t])],
                vec![0],
                Box::new(|i| softmax_last_dim(&i[0])),
                Box::new(|i| reference::softmax_last_dim(&i[0])),
            ),
            (
                "attention",
                vec![
                    randn(&[b, h, t, hd]),
                    randn(&[b, hkv, t, hd]),
                    randn(&[b, hkv, t, hd]),
                    causal_mask(b, t, &pad),
                ],
                vec![0, 1, 2],
                Box::new(|i| attention(&i[0], &i[1], &i[2], &i[3], 0.125)),
                Box::new(|i| reference::attention(&i[0], &i[1], &i[2], &i[3], 0.125)),
            ),
            (
                "swiglu",
                vec![randn(&[b, t, ffn]), randn(&[b, t, ffn])],
                vec![0, 1],
                Box::new(|i| swiglu(&i[0], &i[1])),
                Box::new(|i| reference::swiglu(&i[0], &i[1])),
            ),
        ];
        if only.as_deref().is_none_or(|o| o == "harness") {
            // What the harness itself costs: loss = Σ x·w on a variable x, no op in between.
            for shape in [vec![b, t, hid], vec![b, t, ffn], vec![b, h, t, t]] {
                let x = Var::from_tensor(&randn(&shape)).unwrap();
                let w = randn(&shape);
                let mut times = vec![];
                for _ in 0..4 {
                    let start = std::time::Instant::now();
                    let out = (x.as_tensor() * &w).unwrap().sum_all().unwrap();
                    drop(out.backward().unwrap());
                    times.push(start.elapsed().as_secs_f64() * 1e3);
                }
                times.sort_by(f64::total_cmp);
                println!("harness {shape:?}: Σx·w fwd+bwd {:.1} ms", times[1]);
            }
        }
        for (name, inputs, diff, fused, composite) in &cases {
            for (variant, f) in [("composite", composite), ("fused", fused)] {
                let label = format!("{name}:{variant}");
                if only.as_ref().is_some_and(|o| *o != label) {
                    continue;
                }
                let vars: Vec<Tensor> = inputs
                    .iter()
                    .enumerate()
                    .map(|(i, x)| match diff.contains(&i) {
                        true => Var::from_tensor(x).unwrap().as_tensor().clone(),
                        false => x.clone(),
                    })
                    .collect();
                let w = randn(f(&vars).unwrap().dims());
                let (_, rss0) = rss_mb();
                let (mut fwd, mut bwd, mut held) = (vec![], vec![], 0f64);
                for _ in 0..4 {
                    let start = std::time::Instant::now();
                    let out = f(&vars).unwrap();
                    fwd.push(start.elapsed().as_secs_f64() * 1e3);
                    held = rss_mb().1 - rss0;
                    let start = std::time::Instant::now();
                    let grads = (out * &w).unwrap().sum_all().unwrap().backward().unwrap();
                    bwd.push(start.elapsed().as_secs_f64() * 1e3);
                    drop(grads);
                }
                // Drop the first (warm-up) iteration; report the median of the rest.
                let med = |v: &mut Vec<f64>| {
                    v.remove(0);
                    v.sort_by(f64::total_cmp);
                    v[v.len() / 2]
                };
                println!(
                    "{label:22} fwd {:8.1} ms  bwd {:8.1} ms  graph held after fwd {:7.0} MB  peak RSS {:7.0} MB",
                    med(&mut fwd),
                    med(&mut bwd),
                    held,
                    rss_mb().0
                );
            }
        }
    }
}
