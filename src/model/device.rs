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

/// Makes glibc's malloc keep freed memory for the next allocation instead of handing it back to
/// the kernel: no allocation is served by its own `mmap`, and the heap is not trimmed below 2 GiB
/// of free space. A training step allocates and frees the same large activations and gradients
/// every step; with glibc's defaults each one above the mmap threshold (at most 32 MiB) was a
/// fresh mapping whose pages the kernel zeroed on first touch. On SmolLM2's forward+backward of
/// 8 × 256 tokens this cut the step from 25.8 s to 20.7 s with peak memory 5050 → 4995 MB
/// (generation's peak rose ~90 MB; eval/results/speed/README.md). Called once at start-up by
/// the binary and by the benchmarks that time it; a no-op off glibc.
pub fn keep_freed_host_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes malloc's parameters; it is called before any thread starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_MAX, 0);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
    }
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
