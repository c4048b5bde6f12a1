//! The fused rotary-embedding kernel (rotate-half); its backward is the inverse rotation.

use super::simd::{cpu_tensor, simd_fn, slice_of, with_slice};
use candle_core::{bail, CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

pub(super) struct RopeOp;

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
