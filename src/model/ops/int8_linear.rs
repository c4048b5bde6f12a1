//! Weight-only int8 for rollouts: x · wᵀ with w stored as int8 plus one f32 scale per block of
//! 32 inputs of each output row, inference only, approximate (off unless a recipe asks for
//! `rollout_precision = "int8"`).
//!
//! Why: a decode step at a few rows streams every weight once, so it is bound by memory
//! bandwidth (batch 1 ran at 85 % of the f32 bandwidth limit, `eval/results/runtime_bench.md`);
//! int8 weights move a quarter of the bytes. The trainer recomputes the log-probs of what was
//! sampled with the exact f32 weights and corrects for the mismatch (`train::correction`), so
//! the approximation changes which tokens are drawn, never the loss's π_old.
//!
//! Quantization: symmetric per block of [`BLOCK`] = 32 consecutive weights of a row (llama.cpp's
//! Q8_0 layout, with an f32 scale): scale = max |w_block| / 127, q = round(w / scale). One
//! scale per whole row (LLM.int8's vector-wise) let a row's largest weight set the step for
//! all 576–1536 of its inputs; on SmolLM2-135M the greedy continuation then left the exact one
//! after 4 tokens. Blocks cost nothing in the inner loop: the scale is applied when a tile is
//! widened to f32. 36 bytes per 32 weights against f32's 128.
//!
//! Kernel: rayon splits the output rows into chunks; a chunk dequantizes C = 4 weight rows at a
//! time into an f32 scratch that stays in L1 (4 × in floats, 24 KB at in = 1536), then meets
//! the input rows 4 at a time: 16 accumulators of 16 lanes (AVX-512) or 8 lanes (portable).
//! Converting once per tile, not per input row, keeps the inner loop the f32 kernel's
//! (`decode_matmul`). Above [`MAX_ROWS`] rows (a prompt's prefill) the whole
//! weight is dequantized and gemm runs: the same numbers up to summation order.

// Register tiles indexed [row][column] read clearer as index loops over their const sizes.
#![allow(clippy::needless_range_loop)]

use std::sync::Arc;

use candle_core::{bail, DType, Result, Storage, Tensor};
use rayon::prelude::*;

use super::simd::cpu_tensor;

/// Rows up to which the streaming kernel runs; above, dequantize once and use gemm.
const MAX_ROWS: usize = 256;

/// Output rows per rayon task (a multiple of the tile width 4).
const COLS_PER_TASK: usize = 32;

/// Weight rows dequantized at a time.
const C: usize = 4;

/// Input rows per tile.
const R: usize = 4;

/// Weights of a row sharing one scale.
pub const BLOCK: usize = 32;

/// An (out, in) weight as int8 rows and one f32 scale per block of [`BLOCK`] inputs.
#[derive(Clone, Debug)]
pub struct Int8Weight {
    q: Arc<Vec<i8>>,      // (out, in), row-major
    scale: Arc<Vec<f32>>, // (out, ⌈in / BLOCK⌉)
    out: usize,
    inp: usize,
}

impl Int8Weight {
    /// Quantizes a CPU f32 weight (out, in) row by row.
    pub fn quantize(w: &Tensor) -> Result<Self> {
        let (out, inp) = w.dims2()?;
        if w.dtype() != DType::F32 {
            bail!("int8 weights: quantize an f32 weight, got {:?}", w.dtype());
        }
        let data = w.contiguous()?.flatten_all()?.to_vec1::<f32>()?;
        Ok(Self::from_rows(&data, out, inp))
    }

    /// Quantizes `w` (out · in floats, row-major).
    pub fn from_rows(w: &[f32], out: usize, inp: usize) -> Self {
        assert_eq!(w.len(), out * inp, "weight length");
        let blocks: Vec<(Vec<i8>, f32)> = w
            .par_chunks(inp.max(1))
            .flat_map_iter(|row| row.chunks(BLOCK))
            .map(|block| {
                let amax = block.iter().fold(0f32, |a, &v| a.max(v.abs()));
                let scale = if amax > 0.0 && amax.is_finite() {
                    amax / 127.0
                } else {
                    1.0
                };
                let q = block
                    .iter()
                    .map(|&v| (v / scale).round().clamp(-127.0, 127.0) as i8)
                    .collect();
                (q, scale)
            })
            .collect();
        let mut q = Vec::with_capacity(out * inp);
        let mut scale = Vec::with_capacity(blocks.len());
        for (b, s) in blocks {
            q.extend(b);
            scale.push(s);
        }
        Self {
            q: Arc::new(q),
            scale: Arc::new(scale),
            out,
            inp,
        }
    }

    /// (out, in).
    pub fn dims(&self) -> (usize, usize) {
        (self.out, self.inp)
    }

    /// The f32 weight these int8 blocks stand for: q · scale, (out, in).
    pub fn dequantize(&self) -> Result<Tensor> {
        let k = self.inp;
        let mut w = vec![0f32; self.out * k];
        w.par_chunks_mut(k.max(1))
            .enumerate()
            .for_each(|(o, dst)| self.widen_row(o, dst, avx512()));
        cpu_tensor(w, &(self.out, k).into())
    }

    /// Scales per row.
    fn blocks_per_row(&self) -> usize {
        self.inp.div_ceil(BLOCK)
    }

    /// dst = weight row `o` as f32 (q · its blocks' scales).
    fn widen_row(&self, o: usize, dst: &mut [f32], simd: bool) {
        let k = self.inp;
        let nb = self.blocks_per_row();
        let src = &self.q[o * k..(o + 1) * k];
        let scales = &self.scale[o * nb..(o + 1) * nb];
        #[cfg(target_arch = "x86_64")]
        if simd {
            // SAFETY: AVX-512F is present (`avx512`); src and dst hold k values, scales ⌈k/32⌉.
            unsafe { x86::widen(src, scales, dst) };
            return;
        }
        let _ = simd;
        for ((d, q), &s) in dst.chunks_mut(BLOCK).zip(src.chunks(BLOCK)).zip(scales) {
            for (d, &v) in d.iter_mut().zip(q) {
                *d = v as f32 * s;
            }
        }
    }

    /// x (N, in) · dequantize()ᵀ: (N, out), a CPU f32 tensor. No autograd.
    pub fn linear(&self, x: &Tensor) -> Result<Tensor> {
        let (m, k) = x.dims2()?;
        if k != self.inp {
            bail!(
                "int8 linear: x {:?} against a weight of {} inputs",
                x.dims(),
                self.inp
            );
        }
        if m > MAX_ROWS {
            return x.matmul(&self.dequantize()?.t()?);
        }
        let x = x.contiguous()?;
        let (xs, xl) = x.storage_and_layout();
        let y = match &*xs {
            Storage::Cpu(xs) => {
                let xd = &xs.as_slice::<f32>()?[xl.start_offset()..xl.start_offset() + m * k];
                self.matmul_xwt(xd, m)
            }
            _ => bail!("int8 linear runs on CPU only"),
        };
        cpu_tensor(y, &(m, self.out).into())
    }

    /// y (m, out) = x (m, in) · (q · scale)ᵀ.
    fn matmul_xwt(&self, x: &[f32], m: usize) -> Vec<f32> {
        self.matmul_xwt_with(x, m, avx512())
    }

    fn matmul_xwt_with(&self, x: &[f32], m: usize, simd: bool) -> Vec<f32> {
        let (k, n) = (self.inp, self.out);
        let mut y = vec![0f32; m * n];
        let out = OutPtr(y.as_mut_ptr());
        let chunks = n.div_ceil(COLS_PER_TASK);
        (0..chunks).into_par_iter().for_each(|c| {
            #[allow(clippy::redundant_locals)]
            let out = out;
            let (o0, o1) = (c * COLS_PER_TASK, ((c + 1) * COLS_PER_TASK).min(n));
            SCRATCH.with_borrow_mut(|scratch| {
                // Reused per thread: a fresh zeroed buffer per task of 32 output rows cost
                // 1.2 of a batch-1 step's 13 ms in the layers' matmuls.
                if scratch.len() < C * k {
                    scratch.resize(C * k, 0.0);
                }
                let mut o = o0;
                while o < o1 {
                    let cols = (o1 - o).min(C);
                    for j in 0..cols {
                        self.widen_row(o + j, &mut scratch[j * k..(j + 1) * k], simd);
                    }
                    for j in cols..C {
                        scratch[j * k..(j + 1) * k].fill(0.0);
                    }
                    let mut acc = [[0f32; C]; R];
                    let mut i = 0;
                    while i < m {
                        let rows = (m - i).min(R);
                        tile(x, scratch, k, i, rows, simd, &mut acc);
                        for r in 0..rows {
                            for j in 0..cols {
                                // SAFETY: i + r < m and o + j < n: inside y; column o + j belongs
                                // to this task's chunk only.
                                unsafe { *out.0.add((i + r) * n + o + j) = acc[r][j] };
                            }
                        }
                        i += rows;
                    }
                    o += cols;
                }
            });
        });
        y
    }
}

thread_local! {
    /// Each thread's widened tile (C weight rows as f32).
    static SCRATCH: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Output pointer shared by tasks that write disjoint columns.
#[derive(Clone, Copy)]
struct OutPtr(*mut f32);
// SAFETY: every task writes only the columns of its own chunk (disjoint), and the buffer outlives
// the parallel loop.
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

fn avx512() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// acc[r][j] = x row (i + r) · scratch row j, for r < rows (≤ R), j < C.
fn tile(
    x: &[f32],
    w: &[f32],
    k: usize,
    i: usize,
    rows: usize,
    simd: bool,
    acc: &mut [[f32; C]; R],
) {
    #[cfg(target_arch = "x86_64")]
    if simd {
        // SAFETY: `simd` is set only where the CPU has AVX-512F (`avx512`); the slices hold
        // rows i..i+rows of x and C rows of w, each of k floats.
        unsafe {
            if rows == R {
                x86::tile::<R>(x[i * k..].as_ptr(), w.as_ptr(), k, acc);
            } else {
                for r in 0..rows {
                    let mut one = [[0f32; C]; 1];
                    x86::tile::<1>(x[(i + r) * k..].as_ptr(), w.as_ptr(), k, &mut one);
                    acc[r] = one[0];
                }
            }
        }
        return;
    }
    let _ = simd;
    for r in 0..rows {
        let xr = &x[(i + r) * k..(i + r + 1) * k];
        for j in 0..C {
            acc[r][j] = dot8(xr, &w[j * k..(j + 1) * k]);
        }
    }
}

/// An 8-lane dot product (vectorizes without target features).
fn dot8(a: &[f32], b: &[f32]) -> f32 {
    let kl = a.len() - a.len() % 8;
    let mut lanes = [0f32; 8];
    for (ca, cb) in a[..kl].chunks_exact(8).zip(b[..kl].chunks_exact(8)) {
        for l in 0..8 {
            lanes[l] += ca[l] * cb[l];
        }
    }
    let mut s: f32 = lanes.iter().sum();
    for (&p, &q) in a[kl..].iter().zip(&b[kl..]) {
        s += p * q;
    }
    s
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{BLOCK, C};
    use std::arch::x86_64::*;

    /// dst = src · the scale of its block of 32, 16 at a time.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn widen(src: &[i8], scales: &[f32], dst: &mut [f32]) {
        let n = src.len().min(dst.len());
        let nl = n - n % 16;
        let mut t = 0;
        while t < nl {
            let v = _mm_loadu_si128(src.as_ptr().add(t) as *const __m128i);
            let s = _mm512_set1_ps(scales[t / BLOCK]);
            let f = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(v)), s);
            _mm512_storeu_ps(dst.as_mut_ptr().add(t), f);
            t += 16;
        }
        for u in nl..n {
            dst[u] = src[u] as f32 * scales[u / BLOCK];
        }
    }

    /// acc[r][j] = Σ_k x[r·k + t] · w[j·k + t] for RR rows of x and C rows of w, 16 lanes.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn tile<const RR: usize>(
        x: *const f32,
        w: *const f32,
        k: usize,
        acc: &mut [[f32; C]],
    ) {
        let kl = k - k % 16;
        let mut a = [[_mm512_setzero_ps(); C]; RR];
        let mut t = 0;
        while t < kl {
            let wv: [__m512; C] = std::array::from_fn(|j| _mm512_loadu_ps(w.add(j * k + t)));
            for r in 0..RR {
                let xv = _mm512_loadu_ps(x.add(r * k + t));
                for j in 0..C {
                    a[r][j] = _mm512_fmadd_ps(xv, wv[j], a[r][j]);
                }
            }
            t += 16;
        }
        for r in 0..RR {
            for j in 0..C {
                let mut s = _mm512_reduce_add_ps(a[r][j]);
                for u in kl..k {
                    s += *x.add(r * k + u) * *w.add(j * k + u);
                }
                acc[r][j] = s;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::decode_matmul::tests::data;
    use super::*;
    use candle_core::Device;

    #[test]
    fn quantizes_by_block_hand_computed() {
        // Row 0: amax 2.54 → scale 0.02; 1.0 / 0.02 = 50, −2.54 → −127, 0.011 → 0.55 → 1.
        // Row 1: all zero → scale 1, q 0.
        let w = [1.0, -2.54, 0.011, 0.0, 0.0, 0.0];
        let q = Int8Weight::from_rows(&w, 2, 3);
        assert_eq!(*q.q, [50, -127, 1, 0, 0, 0]);
        assert!((q.scale[0] - 0.02).abs() < 1e-7);
        assert_eq!(q.scale[1], 1.0);
        let d = q.dequantize().unwrap().to_vec2::<f32>().unwrap();
        assert!((d[0][0] - 1.0).abs() < 1e-6 && (d[0][2] - 0.02).abs() < 1e-7);
        // A row of 40 is two blocks (32 + 8), each with its own scale: a large weight in the
        // second block leaves the first block's step small.
        let mut w = vec![0.01f32; 40];
        w[35] = 12.7;
        let q = Int8Weight::from_rows(&w, 1, 40);
        assert_eq!(q.scale.len(), 2);
        assert!((q.scale[0] - 0.01 / 127.0).abs() < 1e-9 && (q.scale[1] - 0.1).abs() < 1e-7);
        assert_eq!((q.q[0], q.q[35], q.q[36]), (127, 127, 0));
        // Rounding error ≤ scale / 2 everywhere.
        let (out, k) = (64, 40);
        let w = data(out * k, 3);
        let q = Int8Weight::from_rows(&w, out, k);
        let d = q
            .dequantize()
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        for (t, (x, y)) in w.iter().zip(&d).enumerate() {
            let s = q.scale[(t / k) * 2 + (t % k) / BLOCK];
            assert!((x - y).abs() <= s * 0.5 + 1e-7);
        }
        // The widening kernels agree with the portable one.
        if avx512() {
            let (mut a, mut b) = (vec![0f32; k], vec![0f32; k]);
            q.widen_row(5, &mut a, false);
            q.widen_row(5, &mut b, true);
            assert_eq!(a, b);
        }
    }

    /// The kernel equals x · dequantize()ᵀ (f64) for every row count path and ragged shapes,
    /// with and without AVX-512.
    #[test]
    fn kernel_matches_the_dequantized_matmul() {
        for &(m, k, n) in &[
            (1, 576, 70),
            (3, 40, 9),
            (4, 576, 64),
            (9, 1536, 33),
            (17, 23, 5),
        ] {
            let x = data(m * k, 1);
            let q = Int8Weight::from_rows(&data(n * k, 2), n, k);
            let d = q.dequantize().unwrap().to_vec2::<f32>().unwrap();
            let mut paths = vec![false];
            if avx512() {
                paths.push(true);
            }
            for simd in paths {
                let y = q.matmul_xwt_with(&x, m, simd);
                for i in 0..m {
                    for o in 0..n {
                        let r: f64 = (0..k).map(|t| x[i * k + t] as f64 * d[o][t] as f64).sum();
                        let e = (y[i * n + o] as f64 - r).abs();
                        assert!(e < 1e-4 * (1.0 + r.abs()), "{m}x{k}x{n} simd {simd}: {e}");
                    }
                }
            }
        }
        // The tensor entry point, above MAX_ROWS too (dequantize + gemm).
        let (k, n) = (24, 10);
        let q = Int8Weight::from_rows(&data(n * k, 5), n, k);
        for m in [2, MAX_ROWS + 3] {
            let x = Tensor::from_vec(data(m * k, 6), (m, k), &Device::Cpu).unwrap();
            let want = x.matmul(&q.dequantize().unwrap().t().unwrap()).unwrap();
            let got = q.linear(&x).unwrap();
            let diff = (got - want).unwrap().abs().unwrap().max_all().unwrap();
            assert!(diff.to_scalar::<f32>().unwrap() < 1e-4);
        }
    }
}
