//! The AdamW update arithmetic: in place over the buffers on CPU, as tensor ops elsewhere.

use std::cell::RefCell;
use std::ops::Range;

use candle_core::backend::BackendStorage as _;
use candle_core::{CpuStorage, DType, InplaceOp2, Layout, Tensor};
use candle_core::{Error, Result};
use rayon::prelude::*;

use super::{AdamWConfig, CHUNK};

/// Per-parameter scalars of one update, rounded to f32 the way torch applies Python floats to
/// f32 tensors.
#[derive(Clone, Copy, Debug)]
pub(super) struct Coeffs {
    /// `1 - lr * weight_decay`; `None` when weight decay is off (torch skips the multiply).
    decay: Option<f32>,
    /// `1 - beta1`, the `lerp` weight.
    w1: f32,
    beta2: f32,
    one_minus_beta2: f32,
    /// `sqrt(1 - beta2^t)`.
    bc2_sqrt: f32,
    eps: f32,
    /// `-lr / (1 - beta1^t)`.
    neg_step_size: f32,
}

impl Coeffs {
    pub(super) fn new(cfg: &AdamWConfig, lr: f64, t: u64) -> Self {
        let t = t.min(i32::MAX as u64) as i32;
        let bc1 = 1.0 - cfg.beta1.powi(t);
        let bc2 = 1.0 - cfg.beta2.powi(t);
        Self {
            decay: (cfg.weight_decay != 0.0).then_some((1.0 - lr * cfg.weight_decay) as f32),
            w1: (1.0 - cfg.beta1) as f32,
            beta2: cfg.beta2 as f32,
            one_minus_beta2: (1.0 - cfg.beta2) as f32,
            bc2_sqrt: bc2.sqrt() as f32,
            eps: cfg.eps as f32,
            neg_step_size: (-lr / bc1) as f32,
        }
    }
}

/// The AdamW update over one contiguous chunk, in torch's order of operations
/// (`_single_tensor_adamw`): decay, `lerp_` for m, `mul_`+`addcmul_` for v, then `addcdiv_`.
#[inline]
fn update_chunk<T: Copy>(
    p: &mut [T],
    g: &[T],
    m: &mut [f32],
    v: &mut [f32],
    c: &Coeffs,
    load: impl Fn(T) -> f32,
    store: impl Fn(f32) -> T,
) {
    for (((p, &g), m), v) in p.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut()) {
        let g = load(g);
        let mut x = load(*p);
        if let Some(d) = c.decay {
            x *= d;
        }
        // torch's lerp uses `self + w * (end - self)` for weights below 0.5.
        *m += c.w1 * (g - *m);
        *v = *v * c.beta2 + c.one_minus_beta2 * g * g;
        let denom = v.sqrt() / c.bc2_sqrt + c.eps;
        x += c.neg_step_size * (*m / denom);
        *p = store(x);
    }
}

fn update_parallel<T: Copy + Send + Sync>(
    p: &mut [T],
    g: &[T],
    m: &mut [f32],
    v: &mut [f32],
    c: &Coeffs,
    load: impl Fn(T) -> f32 + Sync + Send + Copy,
    store: impl Fn(f32) -> T + Sync + Send + Copy,
) {
    p.par_chunks_mut(CHUNK)
        .zip(g.par_chunks(CHUNK))
        .zip(m.par_chunks_mut(CHUNK))
        .zip(v.par_chunks_mut(CHUNK))
        .for_each(|(((p, g), m), v)| update_chunk(p, g, m, v, c, load, store));
}

/// In-place CPU update of one parameter (dst) from its gradient (src); the moments ride along in
/// `RefCell`s because candle hands the op to us by shared reference.
pub(super) struct AdamWKernel<'a> {
    pub(super) m: RefCell<&'a mut Vec<f32>>,
    pub(super) v: RefCell<&'a mut Vec<f32>>,
    /// Element ranges of the parameter to update, in order; the moments hold exactly these
    /// elements one after another. Elements outside are not read or written.
    pub(super) segments: Vec<Range<usize>>,
    pub(super) c: Coeffs,
}

/// [`update_parallel`] over each segment of `p` / `g`, with the moments packed.
#[allow(clippy::too_many_arguments)]
fn update_segments<T: Copy + Send + Sync>(
    p: &mut [T],
    g: &[T],
    m: &mut [f32],
    v: &mut [f32],
    segments: &[Range<usize>],
    c: &Coeffs,
    load: impl Fn(T) -> f32 + Sync + Send + Copy,
    store: impl Fn(f32) -> T + Sync + Send + Copy,
) {
    let mut off = 0;
    for s in segments {
        let n = s.len();
        let (ms, vs) = (&mut m[off..off + n], &mut v[off..off + n]);
        update_parallel(&mut p[s.clone()], &g[s.clone()], ms, vs, c, load, store);
        off += n;
    }
}

pub(super) fn contiguous_range(l: &Layout, what: &str) -> Result<(usize, usize)> {
    l.contiguous_offsets()
        .ok_or_else(|| Error::Msg(format!("AdamW: {what} is not contiguous")))
}

impl InplaceOp2 for AdamWKernel<'_> {
    fn name(&self) -> &'static str {
        "llmrl-adamw"
    }

    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<()> {
        let (p0, p1) = contiguous_range(l1, "parameter")?;
        let (g0, g1) = contiguous_range(l2, "gradient")?;
        let mut m = self.m.borrow_mut();
        let mut v = self.v.borrow_mut();
        let covered: usize = self.segments.iter().map(|s| s.len()).sum();
        let in_range = self.segments.iter().all(|s| s.end <= p1 - p0);
        if p1 - p0 != g1 - g0 || covered != m.len() || covered != v.len() || !in_range {
            return Err(Error::Msg(
                "AdamW: moment and parameter sizes differ".into(),
            ));
        }
        let (c, segs) = (&self.c, self.segments.as_slice());
        match (s1, s2) {
            (CpuStorage::F32(p), CpuStorage::F32(g)) => update_segments(
                &mut p[p0..p1],
                &g[g0..g1],
                &mut m,
                &mut v,
                segs,
                c,
                |x| x,
                |x| x,
            ),
            (CpuStorage::BF16(p), CpuStorage::BF16(g)) => update_segments(
                &mut p[p0..p1],
                &g[g0..g1],
                &mut m,
                &mut v,
                segs,
                c,
                |x| x.to_f32(),
                half::bf16::from_f32,
            ),
            (CpuStorage::F16(p), CpuStorage::F16(g)) => update_segments(
                &mut p[p0..p1],
                &g[g0..g1],
                &mut m,
                &mut v,
                segs,
                c,
                |x| x.to_f32(),
                half::f16::from_f32,
            ),
            (p, g) => {
                return Err(Error::Msg(format!(
                    "AdamW: unsupported parameter/gradient dtypes {:?}/{:?}",
                    p.dtype(),
                    g.dtype()
                )))
            }
        }
        Ok(())
    }
}

/// The same update as tensor ops (devices other than CPU): returns new (param, m, v).
pub(super) fn update_tensors(
    p: &Tensor,
    g: &Tensor,
    m: &Tensor,
    v: &Tensor,
    c: &Coeffs,
) -> Result<(Tensor, Tensor, Tensor)> {
    let g = g.to_dtype(DType::F32)?;
    let mut x = p.to_dtype(DType::F32)?;
    if let Some(d) = c.decay {
        x = x.affine(d as f64, 0.0)?;
    }
    let m = (m + (g.sub(m)?.affine(c.w1 as f64, 0.0)?))?;
    let v = (v.affine(c.beta2 as f64, 0.0)? + g.sqr()?.affine(c.one_minus_beta2 as f64, 0.0)?)?;
    let denom = v.sqrt()?.affine(1.0 / c.bc2_sqrt as f64, c.eps as f64)?;
    let x = (x + m.div(&denom)?.affine(c.neg_step_size as f64, 0.0)?)?;
    Ok((x.to_dtype(p.dtype())?, m, v))
}
