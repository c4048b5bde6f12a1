//! Decode-step attention, fused kernel vs candle's batched matmul, at SmolLM2-135M's shapes
//! (9 query heads, 3 kv heads, head size 64, 30 layers) on narrow views of a 260-slot cache, as
//! generation reads it. Both run in one process, interleaved, so load on the machine skews them
//! alike; the batched-matmul path is the one `ops::attention` takes when an input tracks
//! gradients, so a `Var` query selects it.
//!
//! Usage: cargo run --release --example bench_decode_attention

use std::time::Instant;

use anyhow::Result;
use candle_core::{DType, Device, Tensor, Var};
use llmrl::model::ops;

fn main() -> Result<()> {
    let dev = Device::Cpu;
    let (layers, reps) = (30, 4);
    for &(b, s) in &[(32usize, 200usize), (64, 150), (128, 200)] {
        let q = Tensor::randn(0f32, 1f32, (b, 9, 1, 64), &dev)?;
        let q_tracked = Var::from_tensor(&q)?;
        let kbuf = Tensor::randn(0f32, 1f32, (b, 3, 260, 64), &dev)?;
        let vbuf = Tensor::randn(0f32, 1f32, (b, 3, 260, 64), &dev)?;
        let (k, v) = (kbuf.narrow(2, 0, s)?, vbuf.narrow(2, 0, s)?);
        let mask = Tensor::zeros((b, 1, 1, s), DType::F32, &dev)?;
        let (mut batched, mut fused) = (0.0, 0.0);
        for _ in 0..reps {
            let t = Instant::now();
            for _ in 0..layers {
                ops::attention(q_tracked.as_tensor(), &k, &v, &mask, 0.125)?;
            }
            batched += t.elapsed().as_secs_f64();
            let t = Instant::now();
            for _ in 0..layers {
                ops::attention(&q, &k, &v, &mask, 0.125)?;
            }
            fused += t.elapsed().as_secs_f64();
        }
        let ms = |x: f64| x * 1e3 / reps as f64;
        println!(
            "rows {b:>3}, cache {s} slots: per decode step ({layers} layers) batched matmul {:.1} ms, fused {:.1} ms, ratio {:.2}",
            ms(batched),
            ms(fused),
            fused / batched
        );
    }
    Ok(())
}
