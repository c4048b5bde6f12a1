//! `x · wᵀ` for a weight that trains, as one op whose backward writes both gradients in the
//! layout of their inputs.
//!
//! Written as `x.matmul(&w.t())`, the weight's gradient reaches `w` through the transposed view:
//! candle computes it as xᵀ · g in (in, out) layout, adds it into a zeroed (in, out) buffer for
//! the view, then adds the view's transpose into a zeroed (out, in) buffer for `w` through a
//! strided loop, for each of a layer's seven projections. Here the backward computes
//! dW = gᵀ · x directly in (out, in) and dx = g · w, each one gemm call.
//!
//! The forward is the gemm call candle's matmul makes for `x.matmul(&w.t())` (same shapes and
//! strides), so its values are the same bitwise; the tests check that and the gradients.

use super::simd::{cpu_tensor, matmul_into, slice_of, with_slice, Mat};
use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};

pub(super) struct LinearOp;

impl CustomOp2 for LinearOp {
    fn name(&self) -> &'static str {
        "linear"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = slice_of::<f32>(s1, l1)?; // (N, in)
        let w = slice_of::<f32>(s2, l2)?; // (out, in)
        let (n, k) = l1.shape().dims2()?;
        let (m, _) = l2.shape().dims2()?;
        let mut y = vec![0f32; n * m]; // (N, out)
        matmul_into(
            &mut y,
            n,
            m,
            k,
            Mat::rows(x, k),
            Mat::transposed(w, k),
            false,
            true,
        );
        Ok((CpuStorage::F32(y), Shape::from((n, m))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (n, k) = x.dims2()?;
        let (m, _) = w.dims2()?;
        with_slice::<f32, _>(grad, |g| {
            // dx (N, in) = g (N, out) · w (out, in); skipped for the embedding's output
            // (nothing upstream of a leaf tracks a gradient).
            let dx = if x.track_op() {
                let mut dx = vec![0f32; n * k];
                with_slice::<f32, _>(w, |w| {
                    matmul_into(
                        &mut dx,
                        n,
                        k,
                        m,
                        Mat::rows(g, m),
                        Mat::rows(w, k),
                        false,
                        true,
                    );
                    Ok(())
                })?;
                Some(cpu_tensor(dx, x.shape())?)
            } else {
                None
            };
            // dW (out, in) = gᵀ (out, N) · x (N, in); skipped for a frozen weight.
            let dw = if w.track_op() {
                let mut dw = vec![0f32; m * k];
                with_slice::<f32, _>(x, |x| {
                    let gt = Mat::transposed(g, m);
                    matmul_into(&mut dw, m, k, n, gt, Mat::rows(x, k), false, true);
                    Ok(())
                })?;
                Some(cpu_tensor(dw, w.shape())?)
            } else {
                None
            };
            Ok((dx, dw))
        })
    }
}
