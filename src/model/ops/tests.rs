//! Unit tests of the fused ops: forward and gradients against the composite versions in
//! `reference` and f64 finite differences, hand-computed values, and an ignored benchmark.

use super::simd::exp_f32;
use super::*;
use candle_core::{Device, Var};

fn randn(shape: &[usize]) -> Tensor {
    Tensor::randn(0f32, 1f32, shape, &Device::Cpu).unwrap()
}

fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    let a = a.to_dtype(DType::F32).unwrap();
    let b = b.to_dtype(DType::F32).unwrap();
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

type OpFn<'a> = &'a dyn Fn(&[Tensor]) -> Result<Tensor>;

/// Compares `fused` with `reference` on `inputs`: forward values; gradients of Σ out·w for the
/// inputs listed in `diff` against the reference's autograd; and the same gradients against
/// f64 central differences of the reference at a few elements.
fn check(fused: OpFn, reference: OpFn, inputs: &[Tensor], diff: &[usize], grad_tol: f32) {
    let out_f = fused(inputs).unwrap();
    let out_r = reference(inputs).unwrap();
    assert_eq!(out_f.dims(), out_r.dims());
    let d = max_diff(&out_f, &out_r);
    assert!(
        d <= 1e-5,
        "forward differs from the composite version by {d}"
    );

    let w = randn(out_f.dims());
    let grads = |f: OpFn| -> Vec<Tensor> {
        let vars: Vec<Tensor> = inputs
            .iter()
            .enumerate()
            .map(|(i, t)| match diff.contains(&i) {
                true => Var::from_tensor(t).unwrap().as_tensor().clone(),
                false => t.clone(),
            })
            .collect();
        let loss = (f(&vars).unwrap() * &w).unwrap().sum_all().unwrap();
        let g = loss.backward().unwrap();
        diff.iter()
            .map(|&i| g.get(&vars[i]).expect("input got no gradient").clone())
            .collect()
    };
    let (g_fused, g_ref) = (grads(fused), grads(reference));
    for (k, (a, b)) in g_fused.iter().zip(&g_ref).enumerate() {
        let d = max_diff(a, b);
        assert!(
            d <= grad_tol,
            "input {}: gradient differs from autograd by {d}",
            diff[k]
        );
    }

    let to64 = |t: &Tensor| match t.dtype() {
        DType::F32 => t.to_dtype(DType::F64).unwrap(),
        _ => t.clone(),
    };
    let inputs64: Vec<Tensor> = inputs.iter().map(to64).collect();
    let w64 = to64(&w);
    let loss64 = |xs: &[Tensor]| -> f64 {
        (reference(xs).unwrap() * &w64)
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f64>()
            .unwrap()
    };
    for (k, &i) in diff.iter().enumerate() {
        let base: Vec<f64> = inputs64[i].flatten_all().unwrap().to_vec1().unwrap();
        let g: Vec<f32> = g_fused[k].flatten_all().unwrap().to_vec1().unwrap();
        let n = base.len();
        for j in [0, n / 5, n / 3, n / 2, 2 * n / 3, n - 1] {
            let eval = |delta: f64| {
                let mut v = base.clone();
                v[j] += delta;
                let mut xs = inputs64.clone();
                xs[i] = Tensor::from_vec(v, inputs64[i].shape(), &Device::Cpu).unwrap();
                loss64(&xs)
            };
            let h = 1e-5;
            let fd = (eval(h) - eval(-h)) / (2.0 * h);
            let err = (fd - g[j] as f64).abs();
            assert!(
                err <= 1e-4 * (1.0 + fd.abs()),
                "input {i} element {j}: fused gradient {} vs finite difference {fd}",
                g[j]
            );
        }
    }
}

fn causal_mask(b: usize, t: usize, pad: &[usize]) -> Tensor {
    // Sequence i is left-padded by pad[i] keys; each query still sees at least itself.
    let mut m = vec![0f32; b * t * t];
    for bi in 0..b {
        for q in 0..t {
            for k in 0..t {
                if k > q || (k < pad[bi] && k != q) {
                    m[(bi * t + q) * t + k] = f32::NEG_INFINITY;
                }
            }
        }
    }
    Tensor::from_vec(m, (b, 1, t, t), &Device::Cpu).unwrap()
}

#[test]
fn exp_f32_matches_libm() {
    let mut worst = 0f64;
    for i in 0..=200_000 {
        let x = -87.0 + 175.0 * i as f32 / 200_000.0;
        let want = (x as f64).exp();
        worst = worst.max(((exp_f32(x) as f64) - want).abs() / want);
    }
    assert!(worst < 3e-7, "relative error {worst}");
    assert_eq!(exp_f32(f32::NEG_INFINITY), 0.0);
    assert_eq!(exp_f32(0.0), 1.0);
    assert!(exp_f32(f32::NAN).is_nan());
}

#[test]
fn hand_computed_values() {
    let dev = Device::Cpu;
    // RMSNorm of [3, 4]: mean square 12.5 → [3, 4] / √12.5, times w = [1, 2].
    let x = Tensor::new(&[[3f32, 4.]], &dev).unwrap();
    let w = Tensor::new(&[1f32, 2.], &dev).unwrap();
    let y: Vec<Vec<f32>> = rms_norm(&x, &w, 0.0).unwrap().to_vec2().unwrap();
    let r = 12.5f32.sqrt();
    assert!((y[0][0] - 3. / r).abs() < 1e-6 && (y[0][1] - 8. / r).abs() < 1e-6);
    // softmax([0, ln 3]) = [1/4, 3/4].
    let p: Vec<f32> = softmax_last_dim(&Tensor::new(&[0f32, 3f32.ln()], &dev).unwrap())
        .unwrap()
        .to_vec1()
        .unwrap();
    assert!((p[0] - 0.25).abs() < 1e-6 && (p[1] - 0.75).abs() < 1e-6);
    // swiglu(0, 5) = 0; swiglu(ln 3, 2) = ln 3 · 3/4 · 2.
    let g = Tensor::new(&[0f32, 3f32.ln()], &dev).unwrap();
    let u = Tensor::new(&[5f32, 2.], &dev).unwrap();
    let s: Vec<f32> = swiglu(&g, &u).unwrap().to_vec1().unwrap();
    assert!(s[0].abs() < 1e-7 && (s[1] - 3f32.ln() * 1.5).abs() < 1e-6);
    // rope with cos = 0, sin = 1 rotates (x1, x2) → (−x2, x1).
    let x = Tensor::new(&[1f32, 2., 3., 4.], &dev)
        .unwrap()
        .reshape((1, 1, 1, 4))
        .unwrap();
    let c = Tensor::zeros((1, 1, 2), DType::F32, &dev).unwrap();
    let sn = Tensor::ones((1, 1, 2), DType::F32, &dev).unwrap();
    let y: Vec<f32> = rope(&x, &c, &sn)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    assert_eq!(y, [-3., -4., 1., 2.]);
    // Uniform logits over 4 tokens: logp = mean_logp = −ln 4, entropy = ln 4, at any temperature.
    let z = Tensor::zeros((1, 4), DType::F32, &dev).unwrap();
    let t = Tensor::new(&[2u32], &dev).unwrap();
    let st = logprob_stats(&z, &t, 0.5).unwrap();
    let l4 = 4f32.ln();
    let get = |t: &Tensor| t.to_vec1::<f32>().unwrap()[0];
    assert!((get(&st.logp) + l4).abs() < 1e-6);
    assert!((get(&st.mean_logp) + l4).abs() < 1e-6);
    assert!((get(&st.entropy) - l4).abs() < 1e-6);
}

fn lp_stack(s: LogProbStats) -> Result<Tensor> {
    Tensor::stack(&[&s.logp, &s.mean_logp, &s.entropy], 0)
}

#[test]
fn logprob_stats_matches_composite() {
    for v in [37, 64] {
        let n = 6;
        let logits = (randn(&[n, v]) * 3.0).unwrap();
        let targets = Tensor::new(&[0u32, 5, 36, 1, 2, 30], &Device::Cpu).unwrap();
        check(
            &|i| lp_stack(logprob_stats(&i[0], &i[1], 0.7)?),
            &|i| lp_stack(reference::logprob_stats(&i[0], &i[1], 0.7)?),
            &[logits, targets],
            &[0],
            1e-5,
        );
    }
}

#[test]
fn head_logprob_stats_matches_the_head_then_the_stats() {
    // 7 rows in chunks of 2 (the last one ragged), and in one chunk: values and the gradients
    // of both the hidden states and the head against autograd through hidden · wᵀ.
    let (n, h, v) = (7, 5, 37);
    let hidden = randn(&[n, h]);
    let w = randn(&[v, h]);
    let targets = Tensor::new(&[0u32, 5, 36, 1, 2, 30, 7], &Device::Cpu).unwrap();
    for chunk in [2, 3, n] {
        check(
            &|i| lp_stack(head_logprob_stats_chunked(&i[0], &i[1], &i[2], 0.7, chunk)?),
            &|i| {
                let logits = i[0].matmul(&i[1].t()?)?; // (N, V)
                lp_stack(reference::logprob_stats(&logits, &i[2], 0.7)?)
            },
            &[hidden.clone(), w.clone(), targets.clone()],
            &[0, 1],
            1e-5,
        );
    }
    // A frozen head: the hidden states still get their gradient.
    let hv = Var::from_tensor(&hidden).unwrap();
    let s = head_logprob_stats_chunked(hv.as_tensor(), &w, &targets, 1.0, 3).unwrap();
    let g = s.logp.sum_all().unwrap().backward().unwrap();
    assert!(g.get(hv.as_tensor()).is_some() && g.get(&w).is_none());
}

#[test]
fn logprob_stats_non_contiguous_logits() {
    // Logits stored (V, N) and viewed as (N, V).
    let targets = Tensor::new(&[3u32, 0, 19], &Device::Cpu).unwrap();
    check(
        &|i| lp_stack(logprob_stats(&i[0].t()?, &i[1], 1.3)?),
        &|i| lp_stack(reference::logprob_stats(&i[0].t()?, &i[1], 1.3)?),
        &[randn(&[20, 3]), targets],
        &[0],
        1e-5,
    );
}

#[test]
fn logprob_stats_rejects_bad_input() {
    let z = randn(&[2, 4]);
    let bad = Tensor::new(&[0u32, 4], &Device::Cpu).unwrap();
    assert!(logprob_stats(&z, &bad, 1.0).is_err());
    let ok = Tensor::new(&[0u32, 3], &Device::Cpu).unwrap();
    assert!(logprob_stats(&z, &ok, 0.0).is_err());
}

#[test]
fn rms_norm_matches_composite() {
    check(
        &|i| rms_norm(&i[0], &i[1], 1e-5),
        &|i| reference::rms_norm(&i[0], &i[1], 1e-5),
        &[randn(&[2, 3, 40]), randn(&[40])],
        &[0, 1],
        1e-5,
    );
    // Non-contiguous x: stored (D, N), viewed (N, D).
    check(
        &|i| rms_norm(&i[0].t()?, &i[1], 1e-5),
        &|i| reference::rms_norm(&i[0].t()?, &i[1], 1e-5),
        &[randn(&[24, 5]), randn(&[24])],
        &[0, 1],
        1e-5,
    );
}

#[test]
fn softmax_matches_composite() {
    check(
        &|i| softmax_last_dim(&i[0]),
        &|i| reference::softmax_last_dim(&i[0]),
        &[randn(&[3, 4, 19])],
        &[0],
        1e-5,
    );
    check(
        &|i| softmax_last_dim(&i[0].t()?),
        &|i| reference::softmax_last_dim(&i[0].t()?),
        &[randn(&[17, 6])],
        &[0],
        1e-5,
    );
}

#[test]
fn masked_softmax_matches_composite() {
    let mask = causal_mask(2, 7, &[0, 3]);
    check(
        &|i| masked_softmax(&i[0], &i[1], 0.3),
        &|i| reference::masked_softmax(&i[0], &i[1], 0.3),
        &[randn(&[2, 3, 7, 7]), mask.clone()],
        &[0],
        1e-5,
    );
    // A mask shared by the batch, and x as a transposed view.
    let shared = mask.narrow(0, 1, 1).unwrap();
    check(
        &|i| masked_softmax(&i[0].transpose(2, 3)?, &i[1], 0.3),
        &|i| reference::masked_softmax(&i[0].transpose(2, 3)?, &i[1], 0.3),
        &[randn(&[2, 3, 7, 7]), shared],
        &[0],
        1e-5,
    );
}

#[test]
fn masked_softmax_fully_masked_row_is_zero() {
    let mask = Tensor::full(f32::NEG_INFINITY, (1, 1, 1, 3), &Device::Cpu).unwrap();
    let p = masked_softmax(&randn(&[1, 2, 1, 3]), &mask, 1.0).unwrap();
    let v: Vec<f32> = p.flatten_all().unwrap().to_vec1().unwrap();
    assert_eq!(v, [0.0; 6]);
}

#[test]
fn rope_matches_composite() {
    let (b, h, t, d) = (2, 3, 5, 8);
    check(
        &|i| rope(&i[0], &i[1], &i[2]),
        &|i| reference::rope(&i[0], &i[1], &i[2]),
        &[
            randn(&[b, h, t, d]),
            randn(&[b, t, d / 2]),
            randn(&[b, t, d / 2]),
        ],
        &[0],
        1e-5,
    );
    // x as the (B, T, H, D) → (B, H, T, D) transpose the attention layer produces; and the
    // same positions for every sequence.
    check(
        &|i| rope(&i[0].transpose(1, 2)?, &i[1], &i[2]),
        &|i| reference::rope(&i[0].transpose(1, 2)?, &i[1], &i[2]),
        &[
            randn(&[b, t, h, d]),
            randn(&[1, t, d / 2]),
            randn(&[1, t, d / 2]),
        ],
        &[0],
        1e-5,
    );
    // Fully transposed x (last dim not unit-stride) takes the copying path.
    check(
        &|i| rope(&i[0].t()?, &i[1], &i[2]),
        &|i| reference::rope(&i[0].t()?, &i[1], &i[2]),
        &[
            randn(&[b, h, d, t]),
            randn(&[b, t, d / 2]),
            randn(&[b, t, d / 2]),
        ],
        &[0],
        1e-5,
    );
}

#[test]
fn swiglu_matches_composite() {
    check(
        &|i| swiglu(&i[0], &i[1]),
        &|i| reference::swiglu(&i[0], &i[1]),
        &[(randn(&[3, 50]) * 4.0).unwrap(), randn(&[3, 50])],
        &[0, 1],
        1e-5,
    );
    check(
        &|i| swiglu(&i[0].t()?, &i[1]),
        &|i| reference::swiglu(&i[0].t()?, &i[1]),
        &[randn(&[7, 4]), randn(&[4, 7])],
        &[0, 1],
        1e-5,
    );
}

#[test]
fn attention_matches_composite() {
    let mask = causal_mask(2, 6, &[0, 2]);
    check(
        &|i| attention(&i[0], &i[1], &i[2], &i[3], 0.35),
        &|i| reference::attention(&i[0], &i[1], &i[2], &i[3], 0.35),
        &[
            randn(&[2, 4, 6, 8]),
            randn(&[2, 2, 6, 8]),
            randn(&[2, 2, 6, 8]),
            mask,
        ],
        &[0, 1, 2],
        1e-5,
    );
}

#[test]
fn linear_op_matches_the_matmul() {
    // Past one gemm block in every dimension; a frozen weight gets no gradient computed.
    let (n, inp, out) = (130, 70, 90);
    let x = Var::from_tensor(&randn(&[n, inp])).unwrap();
    let w = Var::from_tensor(&randn(&[out, inp])).unwrap();
    let g = randn(&[n, out]);
    let (xt, wt) = (x.as_tensor(), w.as_tensor());
    let run = |y: Tensor| {
        let grads = (&y * &g).unwrap().sum_all().unwrap().backward().unwrap();
        let get = |v: &Var| grads.get(v.as_tensor()).unwrap().clone();
        (y, get(&x), get(&w))
    };
    let (y_op, dx_op, dw_op) = run(linear_or_matmul(xt, wt, false).unwrap());
    let (y_mm, dx_mm, dw_mm) = run(xt.matmul(&wt.t().unwrap()).unwrap());
    let flat = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert_eq!(flat(&y_op), flat(&y_mm), "forward not bitwise equal");
    assert_eq!(flat(&dx_op), flat(&dx_mm), "dx not bitwise equal");
    let d = max_diff(&dw_op, &dw_mm);
    assert!(d <= 1e-5 * n as f32, "dW differs by {d}");
    assert_eq!(dw_op.dims(), [out, inp]);

    let frozen = w.as_tensor().detach();
    let y = linear_or_matmul(xt, &frozen, false).unwrap();
    let grads = (&y * &g).unwrap().sum_all().unwrap().backward().unwrap();
    assert_eq!(flat(grads.get(xt).unwrap()), flat(&dx_mm));
}

#[test]
fn attention_op_matches_the_matmul_path() {
    // SmolLM2's grouping (3 query heads per kv head) at sizes past one gemm block, one mask
    // shared by the batch and one per row (a left-padded row whose pad queries see nothing, as
    // the decoder's MASKED gives them). The forward runs the matmul path's products with the
    // same shapes, so it agrees bitwise; gradients within rounding.
    let (b, h, hkv, t, d) = (2, 6, 2, 70, 16);
    let mut m = vec![0f32; b * t * t];
    for (row, x) in m.iter_mut().enumerate() {
        let (bi, q, k) = (row / (t * t), row / t % t, row % t);
        if k > q || (bi == 1 && (k < 5 || q < 5)) {
            *x = crate::model::decoder::MASKED;
        }
    }
    let per_row = Tensor::from_vec(m.clone(), (b, 1, t, t), &Device::Cpu).unwrap();
    let shared = Tensor::from_vec(m[..t * t].to_vec(), (1, 1, t, t), &Device::Cpu).unwrap();
    for mask in [per_row, shared] {
        let q = Var::from_tensor(&randn(&[b, h, t, d])).unwrap();
        let k = Var::from_tensor(&randn(&[b, hkv, t, d])).unwrap();
        let v = Var::from_tensor(&randn(&[b, hkv, t, d])).unwrap();
        let w = randn(&[b, h, t, d]);
        let run = |f: &dyn Fn() -> Result<Tensor>| {
            let out = f().unwrap();
            let g = (&out * &w).unwrap().sum_all().unwrap().backward().unwrap();
            let grad = |x: &Var| g.get(x.as_tensor()).unwrap().clone();
            (out, [grad(&q), grad(&k), grad(&v)])
        };
        let (qt, kt, vt) = (q.as_tensor(), k.as_tensor(), v.as_tensor());
        let (out_op, g_op) = run(&|| attention(qt, kt, vt, &mask, 0.25));
        let (out_mm, g_mm) = run(&|| attention_by_matmul(qt, kt, vt, &mask, 0.25));
        let flat = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(flat(&out_op), flat(&out_mm), "forward not bitwise equal");
        for (i, (a, b)) in g_op.iter().zip(&g_mm).enumerate() {
            let diff = max_diff(a, b);
            assert!(diff <= 1e-5, "input {i}: gradient differs by {diff}");
        }
        // Untracked inputs (prefill, reference log-probs): the same values, nothing kept.
        let plain = attention(&qt.detach(), &kt.detach(), &vt.detach(), &mask, 0.25).unwrap();
        assert_eq!(flat(&plain), flat(&out_op));
    }
}

#[test]
fn decode_attention_reads_the_cache_in_place_and_matches_composite() {
    // One query per row against a narrow window of a larger cache buffer, as in generation:
    // (B, Hkv, cap, D) buffers viewed as (B, Hkv, S, D); groups of 3 and 1 query heads.
    for (h, hkv) in [(6, 2), (2, 2)] {
        let (b, cap, s, d) = (3, 11, 7, 24);
        let kbuf = randn(&[b, hkv, cap, d]);
        let vbuf = randn(&[b, hkv, cap, d]);
        let (k, v) = (kbuf.narrow(2, 0, s).unwrap(), vbuf.narrow(2, 0, s).unwrap());
        assert!(!k.is_contiguous());
        let q = randn(&[b, h, 1, d]);
        // Left padding and a hole differ per row; the last slot (the new token) is always live.
        let mut m = vec![0f32; b * s];
        for (r, row) in m.chunks_mut(s).enumerate() {
            for (j, x) in row.iter_mut().enumerate() {
                if j < r || j == 4 && r == 1 {
                    *x = crate::model::decoder::MASKED;
                }
            }
        }
        let mask = Tensor::from_vec(m, (b, 1, 1, s), &Device::Cpu).unwrap();
        let fused = attention(&q, &k, &v, &mask, 0.2).unwrap();
        let composite = reference::attention(&q, &k, &v, &mask, 0.2).unwrap();
        assert_eq!(fused.dims(), [b, h, 1, d]);
        let diff = max_diff(&fused, &composite);
        assert!(diff <= 2e-6, "h={h} hkv={hkv}: {diff}");
    }
    // With a tracked input the differentiable path runs (the fused one has no backward).
    let q = Var::from_tensor(&randn(&[1, 2, 1, 4])).unwrap();
    let (k, v) = (randn(&[1, 1, 3, 4]), randn(&[1, 1, 3, 4]));
    let mask = Tensor::zeros((1, 1, 1, 3), DType::F32, &Device::Cpu).unwrap();
    let out = attention(q.as_tensor(), &k, &v, &mask, 0.5).unwrap();
    let grads = out.sum_all().unwrap().backward().unwrap();
    assert!(grads.get(q.as_tensor()).is_some());
}

/// Peak and current resident memory of this process in MB (VmHWM, VmRSS).
fn rss_mb() -> (f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let get = |key: &str| {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .unwrap_or(0.0)
            / 1024.0
    };
    (get("VmHWM:"), get("VmRSS:"))
}

type BoxFn = Box<dyn Fn(&[Tensor]) -> Result<Tensor>>;
/// (name, inputs, indices of inputs to differentiate, fused, composite)
type Case = (&'static str, Vec<Tensor>, Vec<usize>, BoxFn, BoxFn);

/// Forward + backward of each op at SmolLM2-135M shapes (B 8, T 256, hidden 576, 9/3 heads of
/// 64, ffn 1536, vocab 49152), composite vs fused; the upstream gradient is a random tensor
/// (loss = Σ out·w), the same for both. `OPS_BENCH=<op>:<fused|composite>` runs one case so
/// the printed peak RSS belongs to it:
/// `for c in logprob:composite logprob:fused ...; do OPS_BENCH=$c cargo test --release --lib
/// bench_smollm2 -- --ignored --nocapture; done`.
#[test]
#[ignore = "benchmark; run with --release -- --ignored --nocapture"]
fn bench_smollm2_shapes() {
    let only = std::env::var("OPS_BENCH").ok();
    let (b, t, hid, h, hkv, hd, ffn, v) = (8, 256, 576, 9, 3, 64, 1536, 49152);
    let n = b * t;
    let dev = Device::Cpu;
    let pad: Vec<usize> = (0..b).map(|i| i * 8).collect();
    let targets: Vec<u32> = (0..n).map(|i| (i * 7919 % v) as u32).collect();
    let cases: Vec<Case> = vec![
        (
            "logprob",
            vec![
                (randn(&[n, v]) * 2.0).unwrap(),
                Tensor::from_vec(targets, n, &dev).unwrap(),
            ],
            vec![0],
            Box::new(|i| lp_stack(logprob_stats(&i[0], &i[1], 1.0)?)),
            Box::new(|i| lp_stack(reference::logprob_stats(&i[0], &i[1], 1.0)?)),
        ),
        (
            "rms_norm",
            vec![randn(&[b, t, hid]), randn(&[hid])],
            vec![0, 1],
            Box::new(|i| rms_norm(&i[0], &i[1], 1e-5)),
            Box::new(|i| reference::rms_norm(&i[0], &i[1], 1e-5)),
        ),
        (
            "rope",
            vec![
                randn(&[b, t, h, hd]),
                randn(&[b, t, hd / 2]),
                randn(&[b, t, hd / 2]),
            ],
            vec![0],
            Box::new(|i| rope(&i[0].transpose(1, 2)?, &i[1], &i[2])),
            Box::new(|i| reference::rope(&i[0].transpose(1, 2)?, &i[1], &i[2])),
        ),
        (
            "softmax",
            vec![randn(&[b, h, t, t])],
            vec![0],
            Box::new(|i| softmax_last_dim(&i[0])),
            Box::new(|i| reference::softmax_last_dim(&i[0])),
        ),
        (
            "attention",
            vec![
                randn(&[b, h, t, hd]),
                randn(&[b, hkv, t, hd]),
                randn(&[b, hkv, t, hd]),
                causal_mask(b, t, &pad),
            ],
            vec![0, 1, 2],
            Box::new(|i| attention(&i[0], &i[1], &i[2], &i[3], 0.125)),
            Box::new(|i| reference::attention(&i[0], &i[1], &i[2], &i[3], 0.125)),
        ),
        (
            "swiglu",
            vec![randn(&[b, t, ffn]), randn(&[b, t, ffn])],
            vec![0, 1],
            Box::new(|i| swiglu(&i[0], &i[1])),
            Box::new(|i| reference::swiglu(&i[0], &i[1])),
        ),
    ];
    if only.as_deref().is_none_or(|o| o == "harness") {
        // What the harness itself costs: loss = Σ x·w on a variable x, no op in between.
        for shape in [vec![b, t, hid], vec![b, t, ffn], vec![b, h, t, t]] {
            let x = Var::from_tensor(&randn(&shape)).unwrap();
            let w = randn(&shape);
            let mut times = vec![];
            for _ in 0..4 {
                let start = std::time::Instant::now();
                let out = (x.as_tensor() * &w).unwrap().sum_all().unwrap();
                drop(out.backward().unwrap());
                times.push(start.elapsed().as_secs_f64() * 1e3);
            }
            times.sort_by(f64::total_cmp);
            println!("harness {shape:?}: Σx·w fwd+bwd {:.1} ms", times[1]);
        }
    }
    for (name, inputs, diff, fused, composite) in &cases {
        for (variant, f) in [("composite", composite), ("fused", fused)] {
            let label = format!("{name}:{variant}");
            if only.as_ref().is_some_and(|o| *o != label) {
                continue;
            }
            let vars: Vec<Tensor> = inputs
                .iter()
                .enumerate()
                .map(|(i, x)| match diff.contains(&i) {
                    true => Var::from_tensor(x).unwrap().as_tensor().clone(),
                    false => x.clone(),
                })
                .collect();
            let w = randn(f(&vars).unwrap().dims());
            let (_, rss0) = rss_mb();
            let (mut fwd, mut bwd, mut held) = (vec![], vec![], 0f64);
            for _ in 0..4 {
                let start = std::time::Instant::now();
                let out = f(&vars).unwrap();
                fwd.push(start.elapsed().as_secs_f64() * 1e3);
                held = rss_mb().1 - rss0;
                let start = std::time::Instant::now();
                let grads = (out * &w).unwrap().sum_all().unwrap().backward().unwrap();
                bwd.push(start.elapsed().as_secs_f64() * 1e3);
                drop(grads);
            }
            // Drop the first (warm-up) iteration; report the median of the rest.
            let med = |v: &mut Vec<f64>| {
                v.remove(0);
                v.sort_by(f64::total_cmp);
                v[v.len() / 2]
            };
            println!(
                "{label:22} fwd {:8.1} ms  bwd {:8.1} ms  graph held after fwd {:7.0} MB  peak RSS {:7.0} MB",
                med(&mut fwd),
                med(&mut bwd),
                held,
                rss_mb().0
            );
        }
    }
}
