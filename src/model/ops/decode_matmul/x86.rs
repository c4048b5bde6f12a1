//! The x86 kernels of `decode_matmul`: 8-lane tiles (AVX2, and AVX-512's 32 registers) and
//! AVX-512's paired tile. Summation order: the parent module's docs.

// Register tiles indexed [row][column] read clearer as index loops over their const sizes.
#![allow(clippy::needless_range_loop)]

use super::OutPtr;
use std::arch::x86_64::*;

/// One vector width: the few operations the tile needs.
trait Vector: Copy {
    /// f32 lanes.
    const L: usize;
    unsafe fn zero() -> Self;
    unsafe fn load(p: *const f32) -> Self;
    /// self · b + c, fused.
    unsafe fn fma(self, b: Self, c: Self) -> Self;
    /// Sum of the lanes in the documented order.
    unsafe fn hsum(self) -> f32;
}

/// Sum of 8 lanes: ((l0+l4)+(l2+l6))+((l1+l5)+(l3+l7)).
#[inline(always)]
unsafe fn hsum8(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1)); // l0+l4 ..
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s)); // (l0+l4)+(l2+l6), (l1+l5)+(l3+l7)
    let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 0b01));
    _mm_cvtss_f32(s)
}

impl Vector for __m256 {
    const L: usize = 8;
    #[inline(always)]
    unsafe fn zero() -> Self {
        _mm256_setzero_ps()
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self {
        _mm256_loadu_ps(p)
    }
    #[inline(always)]
    unsafe fn fma(self, b: Self, c: Self) -> Self {
        _mm256_fmadd_ps(self, b, c)
    }
    #[inline(always)]
    unsafe fn hsum(self) -> f32 {
        hsum8(self)
    }
}

/// R input rows (at x, stride k) against C weight rows (at w, stride k); writes y[r][c] to
/// out at (r0 + r, o + c) of the (m, n) output.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn tile<V: Vector, const R: usize, const C: usize>(
    x: *const f32,
    w: *const f32,
    k: usize,
    n: usize,
    r0: usize,
    o: usize,
    out: OutPtr,
) {
    let kl = k - k % V::L;
    let mut acc = [[V::zero(); C]; R];
    let mut j = 0;
    while j < kl {
        let mut wv = [V::zero(); C];
        for c in 0..C {
            wv[c] = V::load(w.add(c * k + j));
        }
        if r0 == 0 && j % 16 == 0 {
            // The next tile's rows, one cache line each, while this tile's first row block
            // runs (later blocks re-read it from L1): the DRAM stream keeps flowing
            // (measured 1.2–1.4× at 4–16 rows). A hint only: past the end of w it fetches
            // nothing and cannot fault. One input row's tile (C = 8) prefetches into L2, not
            // L1: two tiles of 8 rows (2 × 18 KB at k = 576) overflow a 32 KB L1 (AMD Zen 4),
            // where the prefetch evicted the lines the tile was still reading. On the EPYC
            // (`bench_decode_matmul 1`, 4 alternated rounds) the LM head took 4.2 against
            // 5.4 ms, the layers 0.73 against 0.85 of gemm's time.
            for c in 0..C {
                let p = w.wrapping_add((C + c) * k + j) as *const i8;
                if C >= 8 {
                    _mm_prefetch::<_MM_HINT_T2>(p);
                } else {
                    _mm_prefetch::<_MM_HINT_T0>(p);
                }
            }
        }
        for r in 0..R {
            let xv = V::load(x.add(r * k + j));
            for c in 0..C {
                acc[r][c] = xv.fma(wv[c], acc[r][c]);
            }
        }
        j += V::L;
    }
    for r in 0..R {
        for c in 0..C {
            let mut s = acc[r][c].hsum();
            for t in kl..k {
                s += *x.add(r * k + t) * *w.add(c * k + t);
            }
            *out.0.add((r0 + r) * n + o + c) = s;
        }
    }
}

/// All m rows against one tile of C weight rows, R rows at a time (R ≤ 8).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn rows<V: Vector, const R: usize, const C: usize>(
    x: &[f32],
    w: *const f32,
    m: usize,
    k: usize,
    n: usize,
    o: usize,
    out: OutPtr,
) {
    let xp = x.as_ptr();
    let mut r = 0;
    while r + R <= m {
        tile::<V, R, C>(xp.add(r * k), w, k, n, r, o, out);
        r += R;
    }
    let xp = xp.add(r * k);
    match m - r {
        7 => tile::<V, 7, C>(xp, w, k, n, r, o, out),
        6 => tile::<V, 6, C>(xp, w, k, n, r, o, out),
        5 => tile::<V, 5, C>(xp, w, k, n, r, o, out),
        4 => tile::<V, 4, C>(xp, w, k, n, r, o, out),
        3 => tile::<V, 3, C>(xp, w, k, n, r, o, out),
        2 => tile::<V, 2, C>(xp, w, k, n, r, o, out),
        1 => tile::<V, 1, C>(xp, w, k, n, r, o, out),
        _ => {}
    }
}

/// Output columns o0..o1: 8 weight rows at a time for one input row, else tiles of C = 3.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn columns<V: Vector, const R: usize>(
    x: &[f32],
    w: &[f32],
    m: usize,
    k: usize,
    n: usize,
    o0: usize,
    o1: usize,
    out: OutPtr,
) {
    let wp = w.as_ptr();
    let mut o = o0;
    if m == 1 {
        // One row: memory-bound; 8 weight rows in flight keep the loads streaming.
        while o + 8 <= o1 {
            tile::<V, 1, 8>(x.as_ptr(), wp.add(o * k), k, n, 0, o, out);
            o += 8;
        }
    }
    while o + 3 <= o1 {
        rows::<V, R, 3>(x, wp.add(o * k), m, k, n, o, out);
        o += 3;
    }
    while o < o1 {
        rows::<V, R, 1>(x, wp.add(o * k), m, k, n, o, out);
        o += 1;
    }
}

#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn columns_avx2(
    x: &[f32],
    w: &[f32],
    m: usize,
    k: usize,
    n: usize,
    o0: usize,
    o1: usize,
    out: OutPtr,
) {
    columns::<__m256, 4>(x, w, m, k, n, o0, o1, out)
}

/// Broadcast of 8 floats at p into both 256-bit halves (`vbroadcastf64x4`, AVX-512F).
#[inline(always)]
unsafe fn broadcast8(p: *const f32) -> __m512 {
    _mm512_castpd_ps(_mm512_broadcast_f64x4(_mm256_castps_pd(_mm256_loadu_ps(p))))
}

/// P row pairs (packed at xp, see [`pack_pairs`]) against C weight rows (at w, stride k),
/// in 16-lane vectors whose halves are two rows' 8-lane accumulators: the same FMA chains
/// and lane sums as the 8-lane tile, at twice the width. Rows from `row0` (x: the same rows,
/// unpacked, for the k tail); a pair's second row at m or beyond is padding, not written.
/// `PREFETCH`: the first row block also fetches the next tile's weight rows.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn pair_tile<const P: usize, const C: usize, const PREFETCH: bool>(
    xp: *const f32,
    x: *const f32,
    w: *const f32,
    m: usize,
    k: usize,
    n: usize,
    row0: usize,
    o: usize,
    out: OutPtr,
) {
    let kl = k - k % 8;
    // One moving pointer each for x and w, constant offsets from them: the addresses stay
    // in registers (per-row pointers spilled to the stack).
    let wrow: [usize; C] = std::array::from_fn(|c| c * k);
    let next = C * k;
    let mut acc = [[_mm512_setzero_ps(); C]; P];
    let (mut xj, mut wj) = (xp, w);
    for b in 0..kl / 8 {
        let mut xv = [_mm512_setzero_ps(); P];
        for p in 0..P {
            xv[p] = _mm512_load_ps(xj.add(16 * p));
        }
        if PREFETCH && b % 2 == 0 {
            // The next tile's rows, a cache line each, while this one's first block runs
            // (as in `tile`). A hint only: past the end of w it fetches nothing.
            for c in 0..C {
                _mm_prefetch::<_MM_HINT_T0>(wj.wrapping_add(next + wrow[c]) as *const i8);
            }
        }
        for c in 0..C {
            let wv = broadcast8(wj.add(wrow[c]));
            for p in 0..P {
                acc[p][c] = _mm512_fmadd_ps(xv[p], wv, acc[p][c]);
            }
        }
        xj = xj.add(16 * P);
        wj = wj.add(8);
    }
    for p in 0..P {
        for c in 0..C {
            let v = acc[p][c];
            let hi = _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(v)));
            for (h, half) in [(0, _mm512_castps512_ps256(v)), (1, hi)] {
                let r = 2 * p + h;
                if row0 + r >= m {
                    continue;
                }
                let mut s = hsum8(half);
                for t in kl..k {
                    s += *x.add(r * k + t) * *w.add(c * k + t);
                }
                *out.0.add((row0 + r) * n + o + c) = s;
            }
        }
    }
}

/// Row pairs per tile of [`pair_tile`].
pub(super) const PAIRS: usize = 4;

/// x's rows in pairs for [`pair_tile`], in groups of [`PAIRS`] pairs (the last group may
/// have fewer, g): group-major, then 8-float block b, then pair, 16 floats each:
/// x[2p][8b..8b+8], x[2p+1][8b..8b+8] (zeros past the last row); the k tail is left out.
/// 64-byte aligned at the returned offset into the buffer.
pub(super) fn pack_pairs(x: &[f32], m: usize, k: usize) -> (Vec<f32>, usize) {
    let (kl, pairs) = (k - k % 8, m.div_ceil(2));
    let mut buf = vec![0f32; pairs * 2 * kl + 16];
    let off = buf.as_ptr().align_offset(64).min(16);
    for i in 0..m {
        let (p, h) = (i / 2, i % 2);
        let (g, pg) = (p / PAIRS, p % PAIRS);
        let in_group = PAIRS.min(pairs - g * PAIRS);
        let base = off + g * PAIRS * 2 * kl;
        for b in 0..kl / 8 {
            let d = base + (b * in_group + pg) * 16 + h * 8;
            buf[d..d + 8].copy_from_slice(&x[i * k + b * 8..i * k + b * 8 + 8]);
        }
    }
    (buf, off)
}

/// All m rows against one tile of C weight rows, [`PAIRS`] pairs (8 rows) at a time.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn pair_rows<const C: usize>(
    xp: &[f32],
    x: &[f32],
    w: *const f32,
    m: usize,
    k: usize,
    n: usize,
    o: usize,
    out: OutPtr,
) {
    let (kl, pairs) = (k - k % 8, m.div_ceil(2));
    let (xpp, xx) = (xp.as_ptr(), x.as_ptr());
    let mut p = 0;
    while p + PAIRS <= pairs {
        let (xg, xr) = (xpp.add(p * 2 * kl), xx.add(2 * p * k));
        if p == 0 {
            pair_tile::<PAIRS, C, true>(xg, xr, w, m, k, n, 0, o, out);
        } else {
            pair_tile::<PAIRS, C, false>(xg, xr, w, m, k, n, 2 * p, o, out);
        }
        p += PAIRS;
    }
    let (xg, xr) = (xpp.add(p * 2 * kl), xx.add(2 * p * k));
    // With fewer than PAIRS pairs in all, this block is the first and prefetches.
    match (pairs - p, p == 0) {
        (3, true) => pair_tile::<3, C, true>(xg, xr, w, m, k, n, 0, o, out),
        (2, true) => pair_tile::<2, C, true>(xg, xr, w, m, k, n, 0, o, out),
        (1, true) => pair_tile::<1, C, true>(xg, xr, w, m, k, n, 0, o, out),
        (3, false) => pair_tile::<3, C, false>(xg, xr, w, m, k, n, 2 * p, o, out),
        (2, false) => pair_tile::<2, C, false>(xg, xr, w, m, k, n, 2 * p, o, out),
        (1, false) => pair_tile::<1, C, false>(xg, xr, w, m, k, n, 2 * p, o, out),
        _ => {}
    }
}

/// [`columns_avx512`] for two rows or more: [`PAIRS`] row pairs × 6 weight rows per tile
/// (24 accumulators, 4 + 6 loads per 24 FMAs on 16 lanes).
#[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn columns_avx512_pairs(
    xp: &[f32],
    x: &[f32],
    w: &[f32],
    m: usize,
    k: usize,
    n: usize,
    o0: usize,
    o1: usize,
    out: OutPtr,
) {
    let wp = w.as_ptr();
    let mut o = o0;
    while o + 6 <= o1 {
        pair_rows::<6>(xp, x, wp.add(o * k), m, k, n, o, out);
        o += 6;
    }
    while o < o1 {
        pair_rows::<1>(xp, x, wp.add(o * k), m, k, n, o, out);
        o += 1;
    }
}

#[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn columns_avx512(
    x: &[f32],
    w: &[f32],
    m: usize,
    k: usize,
    n: usize,
    o0: usize,
    o1: usize,
    out: OutPtr,
) {
    // 8-lane vectors, but AVX-512's 32 registers hold 8 × 3 tiles: the summation order stays
    // AVX2's and the portable loop's on every CPU, so seeded runs (the golden RL metrics)
    // do not depend on the machine. 16-lane vectors (`__m512`) measured faster (module
    // docs) but changed sampled tokens against goldens made on AVX2; from `PAIRS_FROM` rows
    // the paired tile (`columns_avx512_pairs`) gets the 16-lane width in this same order.
    columns::<__m256, 8>(x, w, m, k, n, o0, o1, out)
}
