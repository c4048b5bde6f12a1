//! The LM head fused with `logprob_stats`: hidden states (N, H) and the head weight (V, H) in,
//! the per-row statistics out, a chunk of rows at a time. The (N, V) logits and their gradient
//! are never materialized: the forward keeps one chunk of logits, the backward recomputes each
//! chunk's logits and turns them into dlogits, dhidden and a running dW. At 8 × 256 tokens and
//! SmolLM2's 49,152-token vocabulary that is 2 × 48 MiB of scratch instead of two 400 MB
//! tensors, and the kernel's page zeroing of those (a fifth of a training step) is gone.

use super::logprob_op::{check_targets, row_grad, row_stats, scatter_stats};
use super::simd::{cpu_tensor, matmul_into, rows_per_task, slice_of, with_slice, Mat};
use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// Floats in one chunk of logits (48 MiB): large enough that gemm runs at full rate (k = the
/// chunk's rows in dW's product), small next to the whole (N, V).
const CHUNK_FLOATS: usize = 12 << 20;

pub(super) struct HeadLogProbStatsOp {
    pub(super) inv_t: f32,
    /// Rows of logits per chunk ([`chunk_rows`]; tests pick few to cross chunk boundaries).
    pub(super) chunk: usize,
}

pub(super) fn chunk_rows(vocab: usize) -> usize {
    (CHUNK_FLOATS / vocab.max(1)).max(1)
}

impl CustomOp3 for HeadLogProbStatsOp {
    fn name(&self) -> &'static str {
        "head-logprob-stats"
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
        let hidden = slice_of::<f32>(s1, l1)?; // (N, H)
        let w = slice_of::<f32>(s2, l2)?; // (V, H)
        let tg = slice_of::<u32>(s3, l3)?; // (N,)
        let (n, h) = l1.shape().dims2()?;
        let (v, _) = l2.shape().dims2()?;
        check_targets(tg, v)?;
        let rows = self.chunk.max(1).min(n.max(1));
        let mut logits = vec![0f32; rows * v]; // one chunk (rows, V), reused
        let mut out = vec![0f32; 4 * n];
        for first in (0..n).step_by(rows) {
            let nc = rows.min(n - first);
            let hc = &hidden[first * h..(first + nc) * h];
            let lg = &mut logits[..nc * v];
            matmul_into(
                lg,
                nc,
                v,
                h,
                Mat::rows(hc, h),
                Mat::transposed(w, h),
                false,
                true,
            ); // (nc, V)
            let stats: Vec<[f32; 4]> = lg
                .par_chunks(v)
                .zip(tg[first..first + nc].par_iter())
                .with_min_len(rows_per_task(v))
                .map(|(row, &t)| row_stats(row, t, self.inv_t))
                .collect();
            scatter_stats(&stats, first, &mut out);
        }
        Ok((CpuStorage::F32(out), Shape::from((4, n))))
    }

    fn bwd(
        &self,
        hidden: &Tensor,
        w: &Tensor,
        targets: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (n, h) = hidden.dims2()?;
        let (v, _) = w.dims2()?;
        // A frozen head (LoRA, a reference model) needs no dW: skip its product.
        let want_dw = w.track_op();
        let (dh, dw) = with_slice::<f32, _>(hidden, |hs| {
            with_slice::<f32, _>(w, |ws| {
                with_slice::<u32, _>(targets, |tg| {
                    with_slice::<f32, _>(res, |res| {
                        with_slice::<f32, _>(grad, |g| {
                            let rows = self.chunk.max(1).min(n.max(1));
                            let mut logits = vec![0f32; rows * v];
                            let mut dlogits = vec![0f32; rows * v];
                            let mut dh = vec![0f32; n * h];
                            let mut dw = if want_dw { vec![0f32; v * h] } else { vec![] };
                            for first in (0..n).step_by(rows) {
                                let nc = rows.min(n - first);
                                let hc = &hs[first * h..(first + nc) * h];
                                let (lg, dl) = (&mut logits[..nc * v], &mut dlogits[..nc * v]);
                                // The chunk's logits again (nc, V), then their gradient.
                                let wt = Mat::transposed(ws, h);
                                matmul_into(lg, nc, v, h, Mat::rows(hc, h), wt, false, true);
                                dl.par_chunks_mut(v)
                                    .zip(lg.par_chunks(v))
                                    .enumerate()
                                    .with_min_len(rows_per_task(v))
                                    .for_each(|(j, (out, row))| {
                                        let i = first + j;
                                        row_grad(row, out, tg[i], self.inv_t, res, g, n, i)
                                    });
                                // dhidden (nc, H) = dlogits (nc, V) · W (V, H)
                                let dhc = &mut dh[first * h..(first + nc) * h];
                                let (dlm, wm) = (Mat::rows(dl, v), Mat::rows(ws, h));
                                matmul_into(dhc, nc, h, v, dlm, wm, false, true);
                                if want_dw {
                                    // dW (V, H) += dlogitsᵀ (V, nc) · hidden (nc, H)
                                    let dlt = Mat::transposed(dl, v);
                                    let hm = Mat::rows(hc, h);
                                    matmul_into(&mut dw, v, h, nc, dlt, hm, first > 0, true);
                                }
                            }
                            Ok((dh, dw))
                        })
                    })
                })
            })
        })?;
        let dh = cpu_tensor(dh, hidden.shape())?;
        let dw = if want_dw {
            Some(cpu_tensor(dw, w.shape())?)
        } else {
            None
        };
        Ok((Some(dh), dw, None))
    }
}
