//! Attention of one new query per row against the KV cache (the decode step), inference only.
//!
//! candle's batched matmul runs one small gemm per (row, kv head) here: B·Hkv calls of G×D by
//! D×S per layer, twice, each paying gemm's setup and packing; at 128 rows and S = 200 that took
//! longer than all of SmolLM2-135M's projections. This kernel reads each cached key and value row
//! once, in place from the cache's strided views, scores it against the group's G query heads,
//! and mixes the values; rayon splits the (row, kv head) pairs. Interleaved A/B per decode step
//! (30 layers, 2 shared cores, `examples/bench_decode_attention.rs`): 0.74× the time at 32 rows,
//! 0.70× at 64, 0.82× at 128, where the f32 K/V reads (≈1.2 GB per step) bound both. No backward:
//! the caller uses it only when nothing tracks gradients.

use candle_core::{bail, Result, Storage, Tensor};
use rayon::prelude::*;

use super::simd::{cpu_tensor, dot, exp_f32, simd_fn, LANES};

/// Runs `f` on the f32 elements behind a CPU tensor with its start offset and strides, so a
/// narrow view of a larger buffer (the KV cache) is read in place.
fn with_strided<R>(t: &Tensor, f: impl FnOnce(&[f32], usize, &[usize]) -> Result<R>) -> Result<R> {
    let (storage, layout) = t.storage_and_layout();
    match &*storage {
        Storage::Cpu(s) => f(s.as_slice::<f32>()?, layout.start_offset(), layout.stride()),
        _ => bail!("decode attention runs on CPU only"),
    }
}

/// One (row, kv head). `q`: the group's query heads (contiguous); key/value row j at
/// `k[j·ks..]` / `v[j·vs..]`; `mask`: additive, one per key.
struct Pair<'a> {
    q: &'a [f32],
    k: &'a [f32],
    ks: usize,
    v: &'a [f32],
    vs: usize,
    mask: &'a [f32],
}

simd_fn! {
    /// `out` (G·D) gets softmax(q·kᵀ·scale + mask)·V for each of the pair's G query heads of
    /// size `d`; `scores` is scratch of at least S.
    fn attend_pair(p: &Pair<'_>, scale: f32, d: usize, scores: &mut [f32], out: &mut [f32]) {
        let Pair { q, k, ks, v, vs, mask } = *p;
        let s = mask.len();
        let heads = q.len() / d;
        let sc = &mut scores[..s];
        for h in 0..heads {
            let qh = &q[h * d..(h + 1) * d];
            let mut m = f32::NEG_INFINITY;
            for (j, x) in sc.iter_mut().enumerate() {
                *x = dot(qh, &k[j * ks..j * ks + d]) * scale + mask[j];
                m = if *x > m { *x } else { m };
            }
            // Independent lanes so the exp loop vectorizes.
            let mut acc = [0f32; LANES];
            let mut chunks = sc.chunks_exact_mut(LANES);
            for c in &mut chunks {
                for i in 0..LANES {
                    c[i] = exp_f32(c[i] - m);
                    acc[i] += c[i];
                }
            }
            let mut sum = acc.iter().sum::<f32>();
            for x in chunks.into_remainder() {
                *x = exp_f32(*x - m);
                sum += *x;
            }
            let inv = 1.0 / sum;
            let o = &mut out[h * d..(h + 1) * d];
            o.fill(0.0);
            for (j, &e) in sc.iter().enumerate() {
                // Masked keys (−1e30) come out of exp as exactly 0: skip their value rows.
                if e == 0.0 {
                    continue;
                }
                let p = e * inv;
                for (oi, &vi) in o.iter_mut().zip(&v[j * vs..j * vs + d]) {
                    *oi += p * vi;
                }
            }
        }
    }
}

/// q: (B, H, 1, D); k, v: (B, Hkv, S, D) with unit stride on D (any other strides); mask: additive
/// (B, 1, 1, S). Returns (B, H, 1, D). CPU f32 only; no autograd.
pub(super) fn decode_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: &Tensor,
    scale: f64,
) -> Result<Tensor> {
    let (b, h, t, d) = q.dims4()?;
    let (_, hkv, s, _) = k.dims4()?;
    if t != 1 || mask.dims() != [b, 1, 1, s] || v.dims() != k.dims() || h % hkv != 0 {
        bail!(
            "decode attention: q {:?}, k {:?}, v {:?}, mask {:?}",
            q.dims(),
            k.dims(),
            v.dims(),
            mask.dims()
        );
    }
    let (k, v) = (unit_last(k)?, unit_last(v)?);
    let (q, mask) = (q.contiguous()?, mask.contiguous()?);
    let g = h / hkv;
    let mut out = vec![0f32; b * h * d];
    with_strided(&q, |qd, qo, _| {
        with_strided(&mask, |md, mo, _| {
            with_strided(&k, |kd, ko, kst| {
                with_strided(&v, |vd, vo, vst| {
                    out.par_chunks_mut(g * d).enumerate().for_each_init(
                        || vec![0f32; s],
                        |scores, (pair, o)| {
                            let (bi, kh) = (pair / hkv, pair % hkv);
                            let qs = qo + pair * g * d; // heads kh·G.. of row bi are contiguous
                            let kb = ko + bi * kst[0] + kh * kst[1];
                            let vb = vo + bi * vst[0] + kh * vst[1];
                            let pair = Pair {
                                q: &qd[qs..qs + g * d],
                                k: &kd[kb..],
                                ks: kst[2],
                                v: &vd[vb..],
                                vs: vst[2],
                                mask: &md[mo + bi * s..mo + (bi + 1) * s],
                            };
                            attend_pair(&pair, scale as f32, d, scores, o);
                        },
                    );
                    Ok(())
                })
            })
        })
    })?;
    cpu_tensor(out, &(b, h, 1, d).into())
}

/// The tensor itself when its last dim has unit stride, else a contiguous copy.
fn unit_last(t: &Tensor) -> Result<Tensor> {
    if t.layout().stride().last() == Some(&1) {
        Ok(t.clone())
    } else {
        t.contiguous()
    }
}
