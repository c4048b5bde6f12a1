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

/// A unit-norm direction from a fixed seed, so finite-difference checks are reproducible.
pub fn seeded_direction(shape: &candle_core::Shape) -> candle_core::Tensor {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(42);
    let v: Vec<f32> = (0..shape.elem_count())
        .map(|_| rng.random::<f32>() - 0.5)
        .collect();
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    candle_core::Tensor::from_vec(
        v.iter().map(|x| x / norm).collect::<Vec<_>>(),
        shape,
        &candle_core::Device::Cpu,
    )
    .unwrap()
}
