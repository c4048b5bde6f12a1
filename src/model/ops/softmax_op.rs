//! The fused softmax kernels, plain and masked (scaled, additive mask), sharing one backward.

use super::simd::{
    cpu_tensor, dot, exp_f32, max_of, rows_per_task, simd_fn, slice_of, with_slice, LANES,
};
use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor, D};
use rayon::prelude::*;

simd_fn! {
    /// p = softmax(x · scale + mask) for one row; mask may be empty (no mask).
    pub(super) fn softmax_row(x: &[f32], mask: &[f32], out: &mut [f32], scale: f32) {
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
    pub(super) fn softmax_grad_row(p: &[f32], g: &[f32], out: &mut [f32], scale: f32) {
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

pub(super) struct SoftmaxOp {
    pub(super) scale: f32,
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

pub(super) struct MaskedSoftmaxOp {
    pub(super) scale: f32,
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
