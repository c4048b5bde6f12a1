//! The decode step's projections at SmolLM2-135M's shapes (hidden 576, kv 192, MLP 1536, vocab
//! 49152), candle's matmul (gemm, packing its right-hand side per call) vs the streaming kernel
//! behind `ops::linear`, at several row counts. Both run in one process, interleaved per
//! repetition, so load on the machine skews them alike. Per decode step = 30 layers × (q, k, v,
//! o, gate, up, down) + the LM head once. Used to pick the cut-offs of `decode_matmul::pays_off`.
//!
//! Usage: cargo run --release --example bench_decode_matmul [-- ROWS...]

use std::time::Instant;

use anyhow::Result;
use candle_core::{Device, Tensor};
use llmrl::model::ops;

// Layer-major order (all of layer l's weights, then l + 1), as a decode step reads them.
#[allow(clippy::needless_range_loop)]
fn main() -> Result<()> {
    let dev = Device::Cpu;
    let rows: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse())
        .collect::<Result<_, _>>()?;
    let rows = if rows.is_empty() {
        vec![1, 2, 4, 8, 12, 16, 24, 32, 64]
    } else {
        rows
    };
    // (in, out, uses per step): one copy per layer shape is enough, the cache sees 30 distinct
    // weights per shape; so use 30 distinct weights to keep them out of the caches like a step.
    let (layers, reps) = (30, 3);
    let shapes = [
        (576, 576, 2),  // q, o
        (576, 192, 2),  // k, v
        (576, 1536, 2), // gate, up
        (1536, 576, 1), // down
    ];
    let weights: Vec<Vec<Tensor>> = shapes
        .iter()
        .map(|&(i, o, _)| {
            (0..layers)
                .map(|_| Tensor::randn(0f32, 0.05f32, (o, i), &dev))
                .collect::<candle_core::Result<_>>()
        })
        .collect::<candle_core::Result<_>>()?;
    let head = Tensor::randn(0f32, 0.05f32, (49152, 576), &dev)?;
    for &m in &rows {
        let xs: Vec<Tensor> = [576, 1536]
            .iter()
            .map(|&k| Tensor::randn(0f32, 1f32, (m, k), &dev))
            .collect::<candle_core::Result<_>>()?;
        let x_of = |k: usize| if k == 576 { &xs[0] } else { &xs[1] };
        let step = |kernel: bool| -> Result<(f64, f64)> {
            let mm = |x: &Tensor, w: &Tensor| -> Result<Tensor> {
                Ok(if kernel {
                    ops::streamed_linear(x, w)?
                } else {
                    x.matmul(&w.t()?)?
                })
            };
            let t = Instant::now();
            for l in 0..layers {
                for (si, &(i, _, uses)) in shapes.iter().enumerate() {
                    for _ in 0..uses {
                        mm(x_of(i), &weights[si][l])?;
                    }
                }
            }
            let layers_s = t.elapsed().as_secs_f64();
            let t = Instant::now();
            mm(&xs[0], &head)?;
            Ok((layers_s, t.elapsed().as_secs_f64()))
        };
        step(true)?;
        step(false)?;
        let (mut g, mut k) = ((0.0, 0.0), (0.0, 0.0));
        for _ in 0..reps {
            let a = step(false)?;
            let b = step(true)?;
            g = (g.0 + a.0, g.1 + a.1);
            k = (k.0 + b.0, k.1 + b.1);
        }
        let ms = |x: f64| x * 1e3 / reps as f64;
        println!(
            "rows {m:>3}: layers gemm {:.1} ms, kernel {:.1} ms ({:.2}×); lm head gemm {:.1} ms, kernel {:.1} ms ({:.2}×)",
            ms(g.0),
            ms(k.0),
            k.0 / g.0,
            ms(g.1),
            ms(k.1),
            k.1 / g.1
        );
    }
    Ok(())
}
