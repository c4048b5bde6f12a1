//! The fused SwiGLU kernel, silu(gate) * up, and its backward.

use super::simd::{cpu_tensor, exp_f32, simd_fn, slice_of, with_slice};
use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

pub(super) struct SwigluOp;

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
