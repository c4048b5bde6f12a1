//! The fused `logprob_stats` kernel: forward statistics and backward per row of logits.

use super::simd::{
    cpu_tensor, exp_f32, max_of, rows_per_task, simd_fn, slice_of, with_slice, LANES,
};
use candle_core::{bail, CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// Every target id indexes one of the `vocab` logits.
pub(super) fn check_targets(targets: &[u32], vocab: usize) -> Result<()> {
    if let Some(&bad) = targets.iter().find(|&&t| t as usize >= vocab) {
        bail!("logprob_stats: target id {bad} is outside the vocabulary of {vocab} logits");
    }
    Ok(())
}

/// (logp of `t`, mean logp, entropy, logsumexp) of one row of logits at inverse temperature
/// `inv_t`: the forward of [`LogProbStatsOp`] and of the fused LM head.
pub(super) fn row_stats(row: &[f32], t: u32, inv_t: f32) -> [f32; 4] {
    let (m, s, sd, sz) = lp_row_sums(row, inv_t);
    let lse = m + s.ln();
    // H = lse − Σ p z = ln s − Σ p (z − m).
    let entropy = s.ln() - sd / s;
    [
        row[t as usize] * inv_t - lse,
        sz / row.len() as f32 - lse,
        entropy,
        lse,
    ]
}

/// Row-major per-row stats into the (4, n) output layout, rows starting at `first`.
pub(super) fn scatter_stats(rows: &[[f32; 4]], first: usize, out: &mut [f32]) {
    let n = out.len() / 4;
    for (i, r) in rows.iter().enumerate() {
        for (k, &val) in r.iter().enumerate() {
            out[k * n + first + i] = val;
        }
    }
}

/// dlogits of row `i` (of `n`) into `out`, from its logits `row`, target `t`, the forward's
/// (4, n) result `res` and the (4, n) incoming gradient `g` (the logsumexp row has none).
#[allow(clippy::too_many_arguments)]
pub(super) fn row_grad(
    row: &[f32],
    out: &mut [f32],
    t: u32,
    inv_t: f32,
    res: &[f32],
    g: &[f32],
    n: usize,
    i: usize,
) {
    let gi = [g[i], g[n + i], g[2 * n + i]];
    lp_row_grad(row, out, inv_t, res[3 * n + i], res[2 * n + i], gi);
    out[t as usize] += gi[0] * inv_t;
}

pub(super) struct LogProbStatsOp {
    pub(super) inv_t: f32,
    pub(super) vocab: usize,
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
        check_targets(tg, v)?;
        let rows: Vec<[f32; 4]> = x
            .par_chunks(v)
            .zip(tg.par_iter())
            .with_min_len(rows_per_task(v))
            .map(|(row, &t)| row_stats(row, t, self.inv_t))
            .collect();
        let mut out = vec![0f32; 4 * n];
        scatter_stats(&rows, 0, &mut out);
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
                                row_grad(row, out, tg[i], self.inv_t, res, g, n, i)
                            });
                        Ok(dx)
                    })
                })
            })
        })?;
        Ok((Some(cpu_tensor(dx, logits.shape())?), None))
    }
}
