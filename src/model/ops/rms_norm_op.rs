//! The fused RMSNorm kernel and its backward (dx and dw).

use super::simd::{cpu_tensor, dot, rows_per_task, simd_fn, slice_of, with_slice};
use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

pub(super) struct RmsNormOp {
    pub(super) eps: f32,
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
