//! Where a model runs: a device name from a recipe or a flag (`cpu`, `cuda:N`) and the dtype that
//! goes with it (f32 on CPU, bf16 on CUDA; see ARCHITECTURE.md decision 5).

use anyhow::{Context, Result};
use candle_core::{DType, Device};

/// `cpu` or `cuda:N`, and the dtype that goes with it (f32 on CPU, bf16 on CUDA).
pub fn parse_device(s: &str) -> Result<(Device, DType)> {
    if s == "cpu" {
        return Ok((Device::Cpu, DType::F32));
    }
    if let Some(n) = s.strip_prefix("cuda") {
        let ordinal: usize = n.trim_start_matches(':').parse().unwrap_or(0);
        let dev = Device::new_cuda(ordinal).with_context(|| {
            format!(
                "opening {s}; this binary needs `--features cuda` and an NVIDIA GPU with a driver"
            )
        })?;
        return Ok((dev, DType::BF16));
    }
    anyhow::bail!("unknown device `{s}`; use `cpu` or `cuda:N`")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_is_f32_and_unknown_names_say_what_is_valid() {
        let (d, t) = parse_device("cpu").unwrap();
        assert!(d.is_cpu() && t == DType::F32);
        let e = parse_device("tpu").unwrap_err().to_string();
        assert!(e.contains("cpu") && e.contains("cuda:N"), "{e}");
    }
}
