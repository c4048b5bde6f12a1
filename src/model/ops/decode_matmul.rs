//! x·wᵀ for a few rows (the decode step's projections and LM head), inference only.
//!
//! gemm packs its right-hand side into panels on every call. At one row candle takes a gemv-like
//! path, but from two rows on every decode step re-packed all of SmolLM2-135M's 540 MB of f32
//! weights (perf, batch 4: 60 % of a step in gemm's packing on one machine, 44 % on another
//! against 26 % in its microkernels), so a step at batch 2 cost about five at batch 1. This kernel
//! reads the weights in place, in their stored (out, in) layout, once per call for all rows: each
//! weight row is a dot product with every input row, so nothing needs a decode layout at load
//! (and a resized vocabulary needs nothing rebuilt).
//!
//! Blocking: rayon splits the output columns into chunks; within a chunk, a tile of C weight rows
//! (at most C · 1536 f32, so it stays in L1) meets the input rows R at a time: R·C independent
//! 8-lane accumulators, C weight vectors and 1 input vector in registers. AVX2 (16 registers):
//! R = 4, C = 3, 7 loads per 12 FMAs. With AVX-512 (32 registers, still 8-lane vectors so the
//! summation order is the same on every CPU): R = 8, C = 3, 11 loads per 24 FMAs. One row alone
//! is memory-bound: 8 weight rows at a time. The input rows are first copied to a 64-byte-aligned
//! buffer (m·k floats, next to nothing against the weights) so vector loads of x never split a
//! cache line. A 16-lane (`__m512`) variant of the 8 × 3 tile measured 1.2–1.4× the AVX2 kernel
//! at 8–32 rows and a whole decode step 1.19× at batch 16, 1.32× at 32 (eval/results/speed/), but
//! its summation order moved a sampled token of the seeded golden RL run
//! (tests/integration/golden_metrics.rs, made on AVX2), so it is not used; the 8-lane AVX-512
//! tile's timings against gemm are at [`MAX_ROWS`].
//!
//! From [`PAIRS_FROM`] rows on, AVX-512 runs a paired tile with the same order at twice the
//! width: x is first packed so that one 16-lane vector holds an 8-float block of two rows, and
//! each weight row's matching 8 floats are broadcast to both halves (`vbroadcastf64x4`); a
//! vector's halves are then exactly the two rows' 8-lane accumulators. Tiles of 4 row pairs × 6
//! weight rows: 24 accumulators, 4 + 6 loads per 24 FMAs. At 64 rows the layers' matmuls ran at
//! 138 GFLOP/s (gemm on 1024³: ~300), 0.75× the 8-lane tile's time and 0.50× gemm's.
//!
//! Accumulation order (so "exact within float tolerance" is checkable), the same for every path:
//! y[i][o] is, per lane l ∈ 0..8, the fused multiply-add chain over k ≡ l (mod 8) in increasing
//! k (k < in − in % 8), then the 8 lanes summed as ((l0+l4)+(l2+l6))+((l1+l5)+(l3+l7)), then the
//! remaining in % 8 products added in increasing k. gemm's order differs, so results agree with
//! the composite matmul to rounding (≈1e-6 relative), not bitwise.

use candle_core::{bail, Result, Storage, Tensor};
use rayon::prelude::*;

use super::simd::cpu_tensor;

/// The most rows `ops::linear` gives this kernel for any weight; above it gemm's packing is
/// amortized over enough rows. Interleaved per decode step at SmolLM2-135M's shapes
/// (`bench_decode_matmul`, idle 2-core Xeon, session 25, AVX-512 paired tile from 12 rows): LM
/// head (49152 rows) kernel ÷ gemm time 0.28 / 0.47 / 0.62 at 8 / 16 / 32 rows, 0.67–0.92 at
/// 48–128, 0.99–1.01 at 160–192, 1.16 at 256. (The 8-lane tile alone: 1.04–1.37 at 48–64.)
pub(super) const MAX_ROWS: usize = 128;

/// The most rows for a weight of at most [`SMALL_WEIGHT_ROWS`] output rows (a layer's
/// projection): the layers' kernel ÷ gemm time in the same runs was 0.36 at 32 rows, 0.44 at
/// 48, 0.50 at 64, 0.63 at 96, 0.71 at 128, 0.75 at 160, 0.85 at 192 and 0.99 at 256.
pub(super) const MAX_ROWS_SMALL_WEIGHT: usize = 192;

/// Output rows up to which a weight counts as small (SmolLM2's largest projection has 1536; the
/// 7B models' MLPs have up to ~19k and are not measured).
pub(super) const SMALL_WEIGHT_ROWS: usize = 4096;

/// Whether `ops::linear` streams x (m rows) against a weight of `n` output rows.
pub(super) fn pays_off(m: usize, n: usize) -> bool {
    m <= MAX_ROWS || (m <= MAX_ROWS_SMALL_WEIGHT && n <= SMALL_WEIGHT_ROWS)
}

/// The fewest rows that take AVX-512's paired tile (`x86::pair_tile`); below, the 8-lane
/// tile, which keeps more weight rows in flight where the weights' stream from memory bounds
/// the step. Layers' time, paired ÷ 8-lane tile (`bench_decode_matmul`, idle 2-core Xeon,
/// session 25): 1.24 / 1.04 at 4 / 8 rows, 0.94 / 0.80 / 0.83 at 12 / 16 / 24, 0.75 at 48–96,
/// 0.65 at 128.
const PAIRS_FROM: usize = 12;

/// Output columns per rayon task: 48 weight rows of 576..1536 f32 (110–300 KB, within L2); a
/// multiple of the tile widths 3, 6 and 8.
const COLS_PER_TASK: usize = 48;

/// The vector instructions a kernel call uses (the best the running CPU has, or one named by a
/// test).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Isa {
    Portable,
    #[cfg(target_arch = "x86_64")]
    Avx2,
    #[cfg(target_arch = "x86_64")]
    Avx512,
}

impl Isa {
    /// The best the running CPU supports.
    pub(super) fn detect() -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            if std::is_x86_feature_detected!("avx512f")
                && std::is_x86_feature_detected!("avx512vl")
                && std::is_x86_feature_detected!("avx2")
                && std::is_x86_feature_detected!("fma")
            {
                return Isa::Avx512;
            }
            if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
                return Isa::Avx2;
            }
        }
        Isa::Portable
    }

    /// Every kind the running CPU can run (tests compare them).
    #[cfg(test)]
    pub(super) fn available() -> Vec<Self> {
        let mut v = vec![Isa::Portable];
        #[cfg(target_arch = "x86_64")]
        {
            let best = Self::detect();
            if best != Isa::Portable {
                v.push(Isa::Avx2);
            }
            if best == Isa::Avx512 {
                v.push(Isa::Avx512);
            }
        }
        v
    }

    /// Lanes per accumulator, which fixes the summation order (module docs).
    #[cfg(test)]
    pub(super) fn lanes(self) -> usize {
        // Every path sums in 8 lanes (see `x86::columns_avx512`); 16 would be the `__m512` order.
        let _ = self;
        8
    }
}

/// Output pointer shared by tasks that write disjoint columns.
#[derive(Clone, Copy)]
struct OutPtr(*mut f32);
// SAFETY: every task writes only the columns of its own chunk (disjoint), and the buffer outlives
// the parallel loop.
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

/// y (m, n) = x (m, k) · wᵀ with w (n, k), both row-major f32 slices.
#[cfg(test)]
pub(super) fn matmul_xwt(x: &[f32], w: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
    matmul_xwt_with(Isa::detect(), x, w, m, k, n)
}

/// [`matmul_xwt`] with the given instructions (which the CPU must support).
#[cfg(test)]
pub(super) fn matmul_xwt_with(
    isa: Isa,
    x: &[f32],
    w: &[f32],
    m: usize,
    k: usize,
    n: usize,
) -> Vec<f32> {
    let mut ys = matmul_xwt_many_with(isa, x, &[(w, n)], m, k);
    ys.pop().unwrap_or_default()
}

/// y_i (m, n_i) = x (m, k) · w_iᵀ for several weights w_i (n_i, k), row-major f32 slices. One
/// parallel loop runs every weight's column chunks: a decode step's q, k and v (or gate and up)
/// then cost one fork-join instead of three, and k's and v's few chunks (192 rows: 4) no longer
/// leave a core waiting at the join. Each y_i is bitwise the one-weight call's.
pub(super) fn matmul_xwt_many(
    x: &[f32],
    ws: &[(&[f32], usize)],
    m: usize,
    k: usize,
) -> Vec<Vec<f32>> {
    matmul_xwt_many_with(Isa::detect(), x, ws, m, k)
}

fn matmul_xwt_many_with(
    isa: Isa,
    x: &[f32],
    ws: &[(&[f32], usize)],
    m: usize,
    k: usize,
) -> Vec<Vec<f32>> {
    debug_assert_eq!(x.len(), m * k);
    debug_assert!(ws.iter().all(|(w, n)| w.len() == n * k));
    // A 64-byte-aligned copy of x: aligned vector loads of the input rows (1.15–1.2× at 16 rows).
    let mut xbuf = vec![0f32; m * k + 16];
    let off = xbuf.as_ptr().align_offset(64).min(16);
    xbuf[off..off + m * k].copy_from_slice(x);
    let x = &xbuf[off..off + m * k];
    let mut ys: Vec<Vec<f32>> = ws.iter().map(|&(_, n)| vec![0f32; m * n]).collect();
    let outs: Vec<OutPtr> = ys.iter_mut().map(|y| OutPtr(y.as_mut_ptr())).collect();
    // From PAIRS_FROM rows AVX-512 reads x packed in row pairs (`x86::pair_tile`).
    #[cfg(target_arch = "x86_64")]
    let packed = (isa == Isa::Avx512 && m >= PAIRS_FROM).then(|| x86::pack_pairs(x, m, k));
    #[cfg(not(target_arch = "x86_64"))]
    let packed: Option<(Vec<f32>, usize)> = None;
    let pairs = packed.as_ref().map(|(buf, off)| &buf[*off..]);
    // (weight, chunk) for every weight's chunks of COLS_PER_TASK output columns.
    let tasks: Vec<(usize, usize)> = ws
        .iter()
        .enumerate()
        .flat_map(|(i, &(_, n))| (0..n.div_ceil(COLS_PER_TASK)).map(move |c| (i, c)))
        .collect();
    tasks.into_par_iter().for_each(|(i, c)| {
        let (w, n) = ws[i];
        let (o0, o1) = (c * COLS_PER_TASK, ((c + 1) * COLS_PER_TASK).min(n));
        columns(isa, x, pairs, w, m, k, n, o0, o1, outs[i]);
    });
    ys
}

/// Output columns o0..o1 of every row; `pairs`: x packed for AVX-512's paired tile.
#[allow(clippy::too_many_arguments)]
fn columns(
    isa: Isa,
    x: &[f32],
    pairs: Option<&[f32]>,
    w: &[f32],
    m: usize,
    k: usize,
    n: usize,
    o0: usize,
    o1: usize,
    out: OutPtr,
) {
    match isa {
        // SAFETY: `isa` names instructions the running CPU has (`Isa::detect`, or a test's
        // `Isa::available`).
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe {
            match pairs {
                Some(xp) => x86::columns_avx512_pairs(xp, x, w, m, k, n, o0, o1, out),
                None => x86::columns_avx512(x, w, m, k, n, o0, o1, out),
            }
        },
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { x86::columns_avx2(x, w, m, k, n, o0, o1, out) },
        Isa::Portable => {
            for o in o0..o1 {
                let wr = &w[o * k..(o + 1) * k];
                for i in 0..m {
                    let v = portable_dot::<8>(&x[i * k..(i + 1) * k], wr);
                    // SAFETY: i < m, o < n: inside y, and column o belongs to this task only.
                    unsafe { *out.0.add(i * n + o) = v };
                }
            }
        }
    }
}

/// The summation order of the SIMD kernels with L ∈ {8, 16} lanes, without SIMD (CPUs without
/// AVX2+FMA use L = 8; tests check the SIMD kernels against it bitwise).
fn portable_dot<const L: usize>(a: &[f32], b: &[f32]) -> f32 {
    const { assert!(L == 8 || L == 16) };
    let kl = a.len() - a.len() % L;
    let mut lanes = [0f32; L];
    for (ca, cb) in a[..kl].chunks_exact(L).zip(b[..kl].chunks_exact(L)) {
        for l in 0..L {
            lanes[l] = ca[l].mul_add(cb[l], lanes[l]);
        }
    }
    let t: [f32; 8] = std::array::from_fn(|l| {
        if L == 16 {
            lanes[l] + lanes[l + 8]
        } else {
            lanes[l]
        }
    });
    let mut s = ((t[0] + t[4]) + (t[2] + t[6])) + ((t[1] + t[5]) + (t[3] + t[7]));
    for (&p, &q) in a[kl..].iter().zip(&b[kl..]) {
        s += p * q;
    }
    s
}

#[cfg(target_arch = "x86_64")]
mod x86;

/// x (M, K) · wᵀ for w (N, K), f32 CPU tensors, any M (fast for the M of [`pays_off`]). Returns
/// (M, N). No autograd.
pub(super) fn decode_matmul(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    let mut ys = decode_matmul_many(x, &[w])?;
    Ok(ys.remove(0))
}

/// [`decode_matmul`] of one x against several weights in one parallel loop
/// ([`matmul_xwt_many`]): (M, N_i) each, bitwise the single calls' results.
pub(super) fn decode_matmul_many(x: &Tensor, ws: &[&Tensor]) -> Result<Vec<Tensor>> {
    let (m, k) = x.dims2()?;
    let mut shapes = Vec::with_capacity(ws.len());
    for w in ws {
        let (n, kw) = w.dims2()?;
        if k != kw {
            bail!("decode matmul: x {:?}, w {:?}", x.dims(), w.dims());
        }
        shapes.push(n);
    }
    let x = x.contiguous()?;
    let ws: Vec<Tensor> = ws.iter().map(|w| w.contiguous()).collect::<Result<_>>()?;
    let (xs, xl) = x.storage_and_layout();
    let Storage::Cpu(xs) = &*xs else {
        bail!("decode matmul runs on CPU only")
    };
    let xd = &xs.as_slice::<f32>()?[xl.start_offset()..xl.start_offset() + m * k];
    let guards: Vec<_> = ws.iter().map(|w| w.storage_and_layout()).collect();
    let mut slices = Vec::with_capacity(ws.len());
    for ((st, wl), &n) in guards.iter().zip(&shapes) {
        let Storage::Cpu(st) = &**st else {
            bail!("decode matmul runs on CPU only")
        };
        let wd = &st.as_slice::<f32>()?[wl.start_offset()..wl.start_offset() + n * k];
        slices.push((wd, n));
    }
    matmul_xwt_many(xd, &slices, m, k)
        .into_iter()
        .zip(&shapes)
        .map(|(y, &n)| cpu_tensor(y, &(m, n).into()))
        .collect()
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use candle_core::{DType, Device, Tensor};

    /// f64 reference of x·wᵀ.
    fn reference(x: &[f32], w: &[f32], m: usize, k: usize, n: usize) -> Vec<f64> {
        let mut y = vec![0f64; m * n];
        for i in 0..m {
            for o in 0..n {
                y[i * n + o] = (0..k)
                    .map(|j| x[i * k + j] as f64 * w[o * k + j] as f64)
                    .sum();
            }
        }
        y
    }

    pub(in crate::model::ops) fn data(len: usize, seed: u32) -> Vec<f32> {
        // A small LCG: deterministic values in [-1, 1) without a test RNG dependency.
        let mut s = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
        (0..len)
            .map(|_| {
                s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (s >> 8) as f32 / (1u32 << 23) as f32 - 1.0
            })
            .collect()
    }

    #[test]
    fn many_weights_in_one_call_equal_the_single_calls_bitwise() {
        // Widths: under one tile, several chunks with a ragged end, one column.
        let (k, shapes) = (40, [7usize, 100, 50, 1]);
        let ws: Vec<Vec<f32>> = (0..shapes.len())
            .map(|i| data(shapes[i] * k, 100 + i as u32))
            .collect();
        let pairs: Vec<(&[f32], usize)> = ws.iter().map(Vec::as_slice).zip(shapes).collect();
        // 1 row, the 8-lane tiles' remainders, and the paired tile from PAIRS_FROM rows.
        for m in [1, 2, 5, PAIRS_FROM, PAIRS_FROM + 1, 33] {
            let x = data(m * k, m as u32);
            for isa in Isa::available() {
                let many = matmul_xwt_many_with(isa, &x, &pairs, m, k);
                for (y, &(w, n)) in many.iter().zip(&pairs) {
                    let single = matmul_xwt_with(isa, &x, w, m, k, n);
                    assert_eq!(y, &single, "{isa:?}, {m} rows, {n} columns");
                }
            }
        }
    }

    #[test]
    fn hand_computed() {
        // x = [[1, 2, 3], [4, 5, 6]], w = [[1, 0, -1], [0.5, 0.5, 0.5]]:
        // y = [[1 − 3, 3], [4 − 6, 7.5]].
        let x = [1., 2., 3., 4., 5., 6.];
        let w = [1., 0., -1., 0.5, 0.5, 0.5];
        assert_eq!(matmul_xwt(&x, &w, 2, 3, 2), vec![-2., 3., -2., 7.5]);
    }

    /// The portable dot product in the summation order of `isa`.
    fn portable(isa: Isa, a: &[f32], b: &[f32]) -> f32 {
        match isa.lanes() {
            16 => portable_dot::<16>(a, b),
            _ => portable_dot::<8>(a, b),
        }
    }

    /// Every kind of kernel the CPU runs: within f64 tolerance, and bitwise the documented order.
    fn check(m: usize, k: usize, n: usize, x: &[f32], w: &[f32]) {
        let r = reference(x, w, m, k, n);
        for isa in Isa::available() {
            let y = matmul_xwt_with(isa, x, w, m, k, n);
            for (i, (&a, &b)) in y.iter().zip(&r).enumerate() {
                let tol = 1e-5 * (k as f64).sqrt().max(1.0);
                assert!(
                    (a as f64 - b).abs() <= tol,
                    "{isa:?} {m}x{k}x{n} [{i}]: {a} vs {b}"
                );
            }
            for i in 0..m {
                for o in 0..n {
                    let p = portable(isa, &x[i * k..(i + 1) * k], &w[o * k..(o + 1) * k]);
                    assert_eq!(y[i * n + o], p, "{isa:?} {m}x{k}x{n} ({i}, {o})");
                }
            }
        }
    }

    #[test]
    fn odd_shapes_match_f64_and_portable_order() {
        // Every row-block remainder (m mod 4, m mod 8), column tails (n mod 3, mod 8, task edges
        // at 48) and k tails (k mod 8, mod 16), including k < 8.
        for &(m, k, n) in &[
            (1, 1, 1),
            (1, 7, 9),
            (1, 576, 67),
            (2, 9, 5),
            (3, 17, 130),
            (4, 64, 3),
            (5, 100, 129),
            (7, 33, 64),
            (6, 8, 50),
            (9, 24, 10),
            (16, 576, 70),
            (15, 1537, 13),
            (17, 24, 97),
            (23, 40, 7),
            (33, 40, 7),
            (64, 576, 50),
            (65, 1536, 13),
            (128, 23, 7),
        ] {
            let (x, w) = (data(m * k, 1), data(n * k, 2));
            check(m, k, n, &x, &w);
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
        /// Random shapes (every remainder of the row and column blocking, k tails) and values.
        #[test]
        fn random_shapes_match_reference(
            m in 1usize..=40,
            k in 1usize..=70,
            n in 1usize..=110,
            seed in 0u32..1000,
        ) {
            let (x, w) = (data(m * k, seed), data(n * k, seed.wrapping_add(7)));
            check(m, k, n, &x, &w);
        }
    }

    #[test]
    fn matches_composite_matmul_on_tensors() {
        let dev = Device::Cpu;
        for &(m, k, n) in &[(1, 576, 192), (2, 576, 1536), (9, 1536, 576), (16, 64, 49)] {
            let x = Tensor::randn(0f32, 1f32, (m, k), &dev).unwrap();
            let w = Tensor::randn(0f32, 1f32, (n, k), &dev).unwrap();
            let fused = decode_matmul(&x, &w).unwrap();
            let composite = x.matmul(&w.t().unwrap()).unwrap();
            let d = (fused - composite)
                .unwrap()
                .abs()
                .unwrap()
                .flatten_all()
                .unwrap()
                .max(0)
                .unwrap()
                .to_dtype(DType::F32)
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            // Outputs are sums of k products of N(0, 1) values (|y| up to ~4·sqrt(k) ≈ 150 at
            // k = 1536, where an f32 ulp is ~1.5e-5); the two paths sum in different orders, and
            // candle's randn is unseeded, so bound the difference relative to that scale.
            let tol = 2e-6 * k as f32;
            assert!(d <= tol, "{m}x{k}x{n}: max diff {d} > {tol}");
        }
    }

    #[test]
    fn rejects_mismatched_shapes() {
        let x = Tensor::zeros((2, 8), DType::F32, &Device::Cpu).unwrap();
        let w = Tensor::zeros((4, 9), DType::F32, &Device::Cpu).unwrap();
        assert!(decode_matmul(&x, &w).is_err());
    }

    #[test]
    fn linear_uses_the_kernel_only_without_gradients() {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 1f32, (3, 40), &dev).unwrap();
        let w = Tensor::randn(0f32, 1f32, (11, 40), &dev).unwrap();
        let composite = x.matmul(&w.t().unwrap()).unwrap();
        // Untracked: the kernel (bitwise its own result).
        let y = super::super::linear(&x, &w).unwrap();
        let k = decode_matmul(&x, &w).unwrap();
        assert_eq!(y.to_vec2::<f32>().unwrap(), k.to_vec2::<f32>().unwrap());
        // A trainable weight: the matmul, and the gradient reaches the weight.
        let v = candle_core::Var::from_tensor(&w).unwrap();
        let y = super::super::linear(&x, v.as_tensor()).unwrap();
        assert_eq!(
            y.to_vec2::<f32>().unwrap(),
            composite.to_vec2::<f32>().unwrap()
        );
        let g = y.sum_all().unwrap().backward().unwrap();
        assert!(g.get(v.as_tensor()).is_some());
        // Row counts around the cut-offs: a layer-sized weight streams up to 96 rows, a
        // vocabulary-sized one up to 32; above, the matmul.
        let big = Tensor::randn(0f32, 1f32, (SMALL_WEIGHT_ROWS + 1, 40), &dev).unwrap();
        for (m, w, kernel) in [
            (MAX_ROWS_SMALL_WEIGHT, &w, true),
            (MAX_ROWS_SMALL_WEIGHT + 1, &w, false),
            (MAX_ROWS, &big, true),
            (MAX_ROWS + 1, &big, false),
        ] {
            let x = Tensor::randn(0f32, 1f32, (m, 40), &dev).unwrap();
            let y = super::super::linear(&x, w).unwrap();
            let want = if kernel {
                decode_matmul(&x, w).unwrap()
            } else {
                x.matmul(&w.t().unwrap()).unwrap()
            };
            assert_eq!(
                y.to_vec2::<f32>().unwrap(),
                want.to_vec2::<f32>().unwrap(),
                "{m} rows against {:?}",
                w.dims()
            );
        }
    }
}
