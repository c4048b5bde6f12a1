//! Logits of the tiny fixtures on a device (e.g. CUDA bf16) against transformers' expected
//! logits and against the CPU f32 path: `gpu_parity [DEVICE]` (default cuda:0). Prints one JSON
//! line per fixture with the max |Δlogit|; exits non-zero when the device is further from the CPU
//! path than its dtype allows (1e-4 in f32, 0.1 in bf16 on logits of scale ~5).

use anyhow::Result;
use candle_core::{DType, Device, Tensor};
use llmrl::model::{self, Decoder, Mode, ModelSource, Positions};

fn logits(m: &model::LoadedModel, ids: &[u32], device: &Device) -> Result<Vec<Vec<f32>>> {
    let dec = Decoder::new(&m.config, &m.params, Mode::Infer)?;
    let t = ids.len();
    let pos = Positions::right_padded(&[t], t, device)?;
    let x = Tensor::from_vec(ids.to_vec(), (1, t), device)?;
    Ok(dec
        .forward(&x, &pos, None)?
        .squeeze(0)?
        .to_dtype(DType::F32)?
        .to_vec2()?)
}

fn main() -> Result<()> {
    let dev_name = std::env::args().nth(1).unwrap_or_else(|| "cuda:0".into());
    let (device, dtype) = llmrl::model::device::parse_device(&dev_name)?;
    let tol = if dtype == DType::F32 { 1e-4 } else { 0.1 };
    // Relative to the repository root (where eval/gpu/run.sh runs), so a binary built on another
    // machine finds the fixtures of the checkout it runs in.
    let root = std::path::PathBuf::from("tests/fixtures");
    let mut worst = 0f32;
    for fam in ["tiny_llama", "tiny_llama3", "tiny_qwen2", "tiny_qwen3"] {
        let dir = root.join(fam);
        let expected: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json"))?)?;
        let cpu = model::load(&ModelSource::Dir(dir.clone()), &Device::Cpu, DType::F32)?;
        let dev = model::load(&ModelSource::Dir(dir), &device, dtype)?;
        let (mut vs_cpu, mut vs_hf) = (0f32, 0f32);
        for case in expected["cases"].as_array().into_iter().flatten() {
            let ids: Vec<u32> = case["input_ids"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|x| x.as_u64())
                .map(|x| x as u32)
                .collect();
            let a = logits(&cpu, &ids, &Device::Cpu)?;
            let b = logits(&dev, &ids, &device)?;
            for (t, (ra, rb)) in a.iter().zip(&b).enumerate() {
                for (v, (x, y)) in ra.iter().zip(rb).enumerate() {
                    vs_cpu = vs_cpu.max((x - y).abs());
                    let hf = case["logits"][t][v].as_f64().unwrap_or(f64::NAN) as f32;
                    vs_hf = vs_hf.max((hf - y).abs());
                }
            }
        }
        worst = worst.max(vs_cpu);
        println!(
            "{}",
            serde_json::json!({"fixture": fam, "device": dev_name, "dtype": format!("{dtype:?}"),
            "max_abs_diff_vs_cpu_f32": vs_cpu, "max_abs_diff_vs_transformers": vs_hf})
        );
    }
    anyhow::ensure!(
        worst <= tol,
        "device logits differ from the CPU path by {worst} (> {tol})"
    );
    Ok(())
}
