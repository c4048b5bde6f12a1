//! Plumbing shared by the fused kernels: CPU storage access, rayon task sizing, the `simd_fn!`
//! AVX2 dispatch macro, and the vectorizable exp / max / dot helpers.

use candle_core::{
    bail, CpuStorage, DType, Device, Layout, Result, Shape, Storage, Tensor, WithDType,
};

/// The fused kernels run on CPU f32 tensors only.
pub(super) fn fused_ok(ts: &[&Tensor]) -> bool {
    ts.iter()
        .all(|t| t.device().is_cpu() && t.dtype() == DType::F32)
}

/// The elements of a contiguous CPU storage region.
pub(super) fn slice_of<'a, T: WithDType>(s: &'a CpuStorage, l: &Layout) -> Result<&'a [T]> {
    let data = s.as_slice::<T>()?;
    match l.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        // The public functions make inputs contiguous before applying an op.
        None => bail!("fused op: internal error, input is not contiguous"),
    }
}

/// Runs `f` on the elements of `t`, made contiguous first (free when it already is).
pub(super) fn with_slice<T: WithDType, R>(
    t: &Tensor,
    f: impl FnOnce(&[T]) -> Result<R>,
) -> Result<R> {
    let t = t.contiguous()?;
    let (storage, layout) = t.storage_and_layout();
    match &*storage {
        Storage::Cpu(s) => f(slice_of(s, layout)?),
        _ => bail!("fused op: the backward kernel runs on CPU only"),
    }
}

pub(super) fn cpu_tensor(data: Vec<f32>, shape: &Shape) -> Result<Tensor> {
    Tensor::from_vec(data, shape, &Device::Cpu)
}

/// Rows per rayon task for row-wise kernels: enough work per task to amortize scheduling.
pub(super) fn rows_per_task(row_len: usize) -> usize {
    (16_384 / row_len.max(1)).max(1)
}

/// Compiles `$body` twice, generic and with AVX2+FMA enabled, and picks at run time, so the exp
/// and reduction loops vectorize 8-wide without a target-cpu flag.
macro_rules! simd_fn {
    ($(#[$meta:meta])* $vis:vis fn $name:ident($($arg:ident : $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block) => {
        $(#[$meta])*
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            #[inline(always)]
            fn generic($($arg: $ty),*) $(-> $ret)? $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2,fma")]
                unsafe fn avx2($($arg: $ty),*) $(-> $ret)? { generic($($arg),*) }
                if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
                    // SAFETY: the running CPU has the features `avx2` was compiled for.
                    return unsafe { avx2($($arg),*) };
                }
            }
            generic($($arg),*)
        }
    };
}
pub(crate) use simd_fn;

/// Row-major matrices as gemm's (row stride, column stride).
#[derive(Clone, Copy)]
pub(super) struct Mat {
    ptr: *const f32,
    rs: isize,
    cs: isize,
}

impl Mat {
    /// A row-major (rows, cols) slice.
    pub(super) fn rows(s: &[f32], cols: usize) -> Self {
        Mat {
            ptr: s.as_ptr(),
            rs: cols as isize,
            cs: 1,
        }
    }
    /// The transpose of a row-major (rows, cols) slice, read in place.
    pub(super) fn transposed(s: &[f32], cols: usize) -> Self {
        Mat {
            ptr: s.as_ptr(),
            rs: 1,
            cs: cols as isize,
        }
    }
}

/// dst (m, n, row-major) = a (m, k) · b (k, n), or dst += that when `accumulate`; on rayon's
/// threads when `par`, else on the calling thread (kernels that run one product per rayon task).
#[allow(clippy::too_many_arguments)]
pub(super) fn matmul_into(
    dst: &mut [f32],
    m: usize,
    n: usize,
    k: usize,
    a: Mat,
    b: Mat,
    accumulate: bool,
    par: bool,
) {
    assert_eq!(dst.len(), m * n, "matmul_into: dst holds m × n");
    let threads = rayon::current_num_threads();
    let par = if par && threads > 1 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: every pointer covers its matrix under its strides: dst is checked above, `a` and
    // `b` are built by the callers from slices of exactly (m, k) and (k, n) elements (or their
    // transposes); gemm reads dst only when `accumulate` (read_dst).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            a.ptr,
            a.cs,
            a.rs,
            b.ptr,
            b.cs,
            b.rs,
            1.0,
            1.0,
            false,
            false,
            false,
            par,
        )
    }
}

/// exp(x) in f32, branch-free so loops over it vectorize: 2^n · p(r) with n = round(x / ln 2),
/// |r| ≤ ln 2 / 2 and p the degree-7 Taylor polynomial (relative error < 2e-7 over the range).
/// Inputs below −87 give exactly 0 (so −inf masks give 0); above 88 saturate at e^88.
#[inline(always)]
pub(super) fn exp_f32(x: f32) -> f32 {
    // Adding 1.5 · 2^23 rounds to an integer and leaves it in the low mantissa bits.
    const SHIFT: f32 = 12_582_912.0;
    const LN2_HI: f32 = 0.693_359_4; // Cephes split of ln 2: LN2_HI exact in few bits
    const LN2_LO: f32 = -2.121_944_4e-4;
    let xc = x.clamp(-87.0, 88.0);
    let t = xc * std::f32::consts::LOG2_E + SHIFT;
    let n = t - SHIFT;
    let r = xc - n * LN2_HI - n * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0
                    + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0 + r / 5040.0))))));
    let two_n = f32::from_bits(((t.to_bits() as i32 - 0x4B40_0000 + 127) << 23) as u32);
    if x < -87.0 {
        0.0
    } else {
        p * two_n
    }
}

/// e^x in f64 without branches in the common path, so a loop over it vectorizes: 2^n · p(r) with
/// n = round(x / ln 2), r = x − n ln 2 (Cody–Waite split of ln 2, exact for |n| < 2^20) and p the
/// degree-13 Taylor polynomial (truncation < 5e-18 for |r| ≤ ln 2 / 2). Within 2 ulp of libm's
/// `exp` (tested); below −708 (a weight under 1e-307 next to the row's maximum of 1) it gives 0.
/// No multiply-add is fused (Rust does not contract), so every CPU computes the same value.
#[inline(always)]
pub(crate) fn exp_f64(x: f64) -> f64 {
    // Adding 1.5 · 2^52 rounds to an integer and leaves it in the low mantissa bits.
    const SHIFT: f64 = 6_755_399_441_055_744.0;
    const LN2_HI: f64 = 6.931_471_803_691_238e-1;
    const LN2_LO: f64 = 1.908_214_929_270_587_7e-10;
    let xc = x.clamp(-708.0, 709.0);
    let k = xc * std::f64::consts::LOG2_E + SHIFT;
    let n = k - SHIFT;
    let r = (xc - n * LN2_HI) - n * LN2_LO;
    // Horner from 1/13! down to 1/0!, one statement per step (a single nested expression
    // defeats rustfmt).
    let mut p = 1.0 / 6_227_020_800.0;
    p = p * r + 1.0 / 479_001_600.0;
    p = p * r + 1.0 / 39_916_800.0;
    p = p * r + 1.0 / 3_628_800.0;
    p = p * r + 1.0 / 362_880.0;
    p = p * r + 1.0 / 40_320.0;
    p = p * r + 1.0 / 5_040.0;
    p = p * r + 1.0 / 720.0;
    p = p * r + 1.0 / 120.0;
    p = p * r + 1.0 / 24.0;
    p = p * r + 1.0 / 6.0;
    p = p * r + 1.0 / 2.0;
    p = p * r + 1.0;
    p = p * r + 1.0;
    let two_n = f64::from_bits(((k.to_bits() as i64 - SHIFT.to_bits() as i64 + 1023) << 52) as u64);
    if x < -708.0 {
        0.0
    } else {
        p * two_n
    }
}

pub(super) const LANES: usize = 16;

/// max over a slice, with independent lanes so it vectorizes.
#[inline(always)]
pub(crate) fn max_of(x: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; LANES];
    let chunks = x.chunks_exact(LANES);
    let tail = chunks.remainder();
    for c in chunks {
        for i in 0..LANES {
            acc[i] = if c[i] > acc[i] { c[i] } else { acc[i] };
        }
    }
    let mut m = f32::NEG_INFINITY;
    for &v in acc.iter().chain(tail) {
        m = if v > m { v } else { m };
    }
    m
}

/// Σ a·b with independent lanes (vectorizes; also more accurate than a serial sum).
#[inline(always)]
pub(super) fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; LANES];
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..LANES {
            acc[i] += x[i] * y[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}
