use std::path::PathBuf;

use candle_core::{DType, Device};
use llmrl::model::{self, LoadedModel, ModelSource};
use serde_json::Value;

pub const FAMILIES: [&str; 4] = ["tiny_llama", "tiny_llama3", "tiny_qwen2", "tiny_qwen3"];

pub fn fixture_dir(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

pub fn load_fixture(name: &str) -> LoadedModel {
    let src = ModelSource::Dir(fixture_dir(name));
    model::load(&src, &Device::Cpu, DType::F32).expect("fixture loads")
}

pub fn expected(name: &str) -> Value {
    let s =
        std::fs::read_to_string(fixture_dir(name).join("expected.json")).expect("expected.json");
    serde_json::from_str(&s).expect("valid json")
}

pub fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_u64().expect("int") as u32)
        .collect()
}

/// Derivative of `loss` with respect to `var` along a fixed-seed unit direction: the analytic
/// value from `grad` (∂loss/∂var) and the numeric one from central differences of step `eps`.
/// `var` is restored afterwards.
pub fn directional_derivatives(
    var: &candle_core::Var,
    grad: &candle_core::Tensor,
    eps: f64,
    loss: impl Fn() -> f64,
) -> (f64, f64) {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(42);
    let v: Vec<f32> = (0..var.elem_count())
        .map(|_| rng.random::<f32>() - 0.5)
        .collect();
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    let v: Vec<f32> = v.iter().map(|x| x / norm).collect();
    let dir = candle_core::Tensor::from_vec(v, var.shape(), &candle_core::Device::Cpu).unwrap();
    let analytic = (grad * &dir)
        .unwrap()
        .sum_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap() as f64;
    let orig = var.as_tensor().copy().unwrap();
    let at = |s: f64| {
        var.set(&(&orig + (&dir * s).unwrap()).unwrap()).unwrap();
        loss()
    };
    let numeric = (at(eps) - at(-eps)) / (2.0 * eps);
    var.set(&orig).unwrap();
    (analytic, numeric)
}
