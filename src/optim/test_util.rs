//! Helpers shared by the optimizer tests.

use candle_core::backprop::GradStore;
use candle_core::{Device, Tensor, Var};

pub(super) fn var(xs: &[f32]) -> Var {
    Var::from_slice(xs, xs.len(), &Device::Cpu).unwrap()
}

pub(super) fn values(v: &Var) -> Vec<f32> {
    v.as_tensor().to_vec1::<f32>().unwrap()
}

pub(super) fn grads(pairs: &[(&Var, &[f32])]) -> GradStore {
    let mut g = GradStore::default();
    for (v, xs) in pairs {
        g.insert(
            v.as_tensor(),
            Tensor::from_slice(xs, xs.len(), &Device::Cpu).unwrap(),
        );
    }
    g
}

pub(super) fn assert_close(got: &[f32], want: &[f64], tol: f64) {
    assert_eq!(got.len(), want.len());
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert!((g as f64 - w).abs() <= tol, "[{i}] got {g}, want {w}");
    }
}

pub(super) const P0: [f32; 5] = [0.5, -1.0, 2.0, 0.0, 3.0];
