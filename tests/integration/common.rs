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
