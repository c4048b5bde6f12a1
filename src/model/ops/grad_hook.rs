//! A value computed without an autograd graph, re-attached to its input with a hand-written
//! backward: the seam for the two places where candle's own graph keeps (or computes) too much.
//!
//! - [`frozen_linear`]: `x · wᵀ` with a frozen `w`. candle's matmul backward computes the weight's
//!   gradient even for a constant weight and keeps it in the gradient store until the end of the
//!   backward — for LoRA that is a full-model-sized store of gradients nobody reads, and a third
//!   of the projections' backward flops. Here the backward is `g · w` only.
//! - Activation recomputation (`super::super::recompute`): a decoder layer's output is computed
//!   without a graph (nothing inside the layer is kept) and its backward re-runs the layer.
//!
//! The op's forward only hands over the precomputed value (one copy of it); the value is taken out
//! of the op on that call so the graph does not hold it twice.

use std::sync::{Arc, Mutex};

use candle_core::{CpuStorage, CustomOp1, DType, Layout, Result, Shape, Tensor};

/// Backward of a hooked value: the gradient of the output to the gradient of the input.
pub type Backward = Arc<dyn Fn(&Tensor) -> Result<Tensor> + Send + Sync>;

struct Hook {
    value: Mutex<Option<Tensor>>,
    bwd: Backward,
}

impl CustomOp1 for Hook {
    fn name(&self) -> &'static str {
        "grad-hook"
    }

    fn cpu_fwd(&self, _s: &CpuStorage, _l: &Layout) -> Result<(CpuStorage, Shape)> {
        let v = self
            .value
            .lock()
            .map_err(|_| candle_core::Error::Msg("grad-hook: poisoned".into()))?
            .take()
            .ok_or_else(|| candle_core::Error::Msg("grad-hook: forward ran twice".into()))?;
        let shape = v.shape().clone();
        let flat = v.flatten_all()?;
        let storage = match v.dtype() {
            DType::F32 => CpuStorage::F32(flat.to_vec1()?),
            DType::BF16 => CpuStorage::BF16(flat.to_vec1()?),
            DType::F16 => CpuStorage::F16(flat.to_vec1()?),
            DType::F64 => CpuStorage::F64(flat.to_vec1()?),
            d => candle_core::bail!("grad-hook: unsupported dtype {d:?}"),
        };
        Ok((storage, shape))
    }

    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        (self.bwd)(grad).map(Some)
    }
}

/// `value` (computed from `x` without a graph) as a function of `x` whose backward is `bwd`.
/// When `x` tracks no gradient this is `value` itself. CPU only (the caller checks).
pub fn with_backward(x: &Tensor, value: Tensor, bwd: Backward) -> Result<Tensor> {
    if !x.track_op() {
        return Ok(value);
    }
    x.apply_op1(Hook {
        value: Mutex::new(Some(value)),
        bwd,
    })
}

/// Whether the hooked path can run on `x`'s device (the op has a CPU forward only; elsewhere the
/// callers fall back to candle's ops, which are exact but keep more).
pub fn supported(x: &Tensor) -> bool {
    x.device().is_cpu()
}

/// `x · wᵀ` (x: (N, in), w: (out, in) → (N, out)) for a weight that does not train: the
/// backward gives x its gradient and computes nothing for w. `stream`: as
/// [`super::linear_or_matmul`].
pub fn frozen_linear(x: &Tensor, w: &Tensor, stream: bool) -> Result<Tensor> {
    let lin = |x: &Tensor| super::linear_or_matmul(x, w, stream);
    if !x.track_op() || w.track_op() || !supported(x) {
        return lin(x);
    }
    let y = lin(&x.detach())?; // (N, out)
    let w = w.clone();
    with_backward(x, y, Arc::new(move |g: &Tensor| g.matmul(&w))) // (N, out)·(out, in)
}
