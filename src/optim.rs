//! Optimizer (AdamW with saved state), gradient clipping and learning-rate schedules.
//!
//! - [`AdamW`] is `torch.optim.AdamW` (bias-corrected, decoupled weight decay, per-parameter step
//!   counts, parameters without a gradient skipped entirely), with its state saved to and restored
//!   from a safetensors file so that a resumed run continues bit for bit. On CPU the update runs in
//!   place over the parameter buffers in parallel chunks (rayon), with the moments kept as plain
//!   `Vec<f32>`; candle-nn's `AdamW` builds a dozen temporaries per tensor and took 5.8 s per step
//!   on 135M parameters (feasibility.md) against torch's 0.7 s; this one takes 0.11-0.19 s on the
//!   2-core box (`bench_135m`), after a one-off ~3 s first step that faults in the moment pages.
//!   On other devices the same update runs as tensor ops with f32 moment tensors on the device.
//! - [`clip_grad_norm`] is `torch.nn.utils.clip_grad_norm_` (global L2 norm, scale by
//!   `max_norm / (norm + 1e-6)` when above `max_norm`); a non-finite norm is returned untouched so
//!   the trainer can skip the step, as HF's Trainer does.
//! - [`LrSchedule`] follows `transformers.optimization`: constant/linear/cosine with linear warmup,
//!   evaluated at the number of optimizer steps already taken (so the first step of a warmup uses
//!   lr 0, exactly like HF's `LambdaLR`).
//!
//! Deliberately not here: other optimizers, AMSGrad/maximize/foreach variants, parameter groups
//! (one learning rate and weight decay for all parameters), and gradient accumulation (the trainer
//! sums micro-batch gradients before calling [`AdamW::step`]).

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::path::Path;

use anyhow::{bail, ensure, Context as _};
use candle_core::backend::BackendStorage as _;
use candle_core::backprop::GradStore;
use candle_core::{CpuStorage, DType, InplaceOp1, InplaceOp2, Layout, Storage, Tensor, Var};
use candle_core::{Error, Result};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// Elements per rayon task: large enough to amortize scheduling, small enough to balance two to
/// a few dozen cores on the 49152x576 embedding.
const CHUNK: usize = 1 << 15;

/// Identifies our optimizer-state files (safetensors metadata key `format`).
const STATE_FORMAT: &str = "llmrl.adamw";
const STATE_VERSION: u32 = 1;

// ------------------------------------------------------------------------------------------------
// Configuration

/// AdamW hyper-parameters; defaults are `torch.optim.AdamW`'s except `weight_decay`
/// (torch 0.01, HF `TrainingArguments` and TRL 0.0).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdamWConfig {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    /// Decoupled weight decay: `p -= lr * weight_decay * p` before the Adam update.
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        Self {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
        }
    }
}

impl AdamWConfig {
    /// Checks ranges; call when resolving a recipe.
    pub fn validate(&self) -> anyhow::Result<()> {
        for (name, b) in [("beta1", self.beta1), ("beta2", self.beta2)] {
            ensure!(
                (0.0..1.0).contains(&b),
                "optimizer {name} = {b} is out of range; hint: use a value in [0, 1), e.g. 0.9 / 0.999"
            );
        }
        ensure!(
            self.eps > 0.0 && self.eps.is_finite(),
            "optimizer eps = {} must be positive; hint: the usual value is 1e-8",
            self.eps
        );
        ensure!(
            self.weight_decay >= 0.0 && self.weight_decay.is_finite(),
            "optimizer weight_decay = {} must be >= 0; hint: 0.0 (TRL default) or 0.01 (torch default)",
            self.weight_decay
        );
        Ok(())
    }
}

// ------------------------------------------------------------------------------------------------
// AdamW

/// First and second moments of one parameter, always f32 (also for bf16 parameters).
enum Moments {
    /// CPU: updated in place by [`AdamWKernel`].
    Host { m: Vec<f32>, v: Vec<f32> },
    /// Any other device: f32 tensors on the parameter's device, replaced each step.
    Device { m: Tensor, v: Tensor },
}

struct ParamState {
    /// Updates applied to this parameter (torch keeps one per parameter: a parameter that missed
    /// a gradient has a different bias correction afterwards).
    step: u64,
    moments: Moments,
}

/// What one [`AdamW::step`] did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StepReport {
    /// Parameters that had a gradient and were updated.
    pub updated: usize,
    /// HF names of parameters without a gradient (left unchanged, moments untouched). Usually a
    /// sign of a forward that does not use them or an op that drops gradients (feasibility.md).
    pub without_grad: Vec<String>,
}

/// `torch.optim.AdamW` over named candle variables, with savable state.
pub struct AdamW {
    params: Vec<(String, Var)>,
    state: Vec<ParamState>,
    cfg: AdamWConfig,
    /// Calls to [`AdamW::step`].
    step: u64,
}

impl AdamW {
    /// Zero moments for every parameter. Names must be unique (they key the saved state).
    pub fn new(params: Vec<(String, Var)>, cfg: AdamWConfig) -> anyhow::Result<Self> {
        Self::with_host_moments(params, cfg, true)
    }

    /// `host == false` forces the tensor-op path on CPU too (tests compare the two paths).
    fn with_host_moments(
        params: Vec<(String, Var)>,
        cfg: AdamWConfig,
        host: bool,
    ) -> anyhow::Result<Self> {
        cfg.validate()?;
        let mut seen = HashSet::new();
        let mut state = Vec::with_capacity(params.len());
        for (name, var) in &params {
            ensure!(
                seen.insert(name.as_str()),
                "parameter name `{name}` given twice to AdamW"
            );
            ensure!(
                var.dtype().is_float(),
                "parameter `{name}` has dtype {:?}; AdamW needs a float parameter",
                var.dtype()
            );
            let n = var.elem_count();
            let moments = if host && var.device().is_cpu() {
                Moments::Host {
                    m: vec![0.0; n],
                    v: vec![0.0; n],
                }
            } else {
                let z = Tensor::zeros(var.shape(), DType::F32, var.device())?;
                Moments::Device { m: z.clone(), v: z }
            };
            state.push(ParamState { step: 0, moments });
        }
        Ok(Self {
            params,
            state,
            cfg,
            step: 0,
        })
    }

    pub fn config(&self) -> &AdamWConfig {
        &self.cfg
    }

    pub fn params(&self) -> &[(String, Var)] {
        &self.params
    }

    /// Calls to [`AdamW::step`] so far (restored by [`AdamW::load`]).
    pub fn step_count(&self) -> u64 {
        self.step
    }

    /// One update with learning rate `lr` from the gradients in `grads`. Parameters without a
    /// gradient are left unchanged and listed in the report.
    pub fn step(&mut self, grads: &GradStore, lr: f64) -> Result<StepReport> {
        // Check every gradient first so a mismatch never leaves a half-applied update.
        for (name, var) in &self.params {
            if let Some(grad) = grads.get(var.as_tensor()) {
                if grad.shape() != var.shape() || grad.dtype() != var.dtype() {
                    return Err(Error::Msg(format!(
                        "gradient of `{name}` is {:?} {:?}, parameter is {:?} {:?}",
                        grad.dtype(),
                        grad.shape(),
                        var.dtype(),
                        var.shape()
                    )));
                }
            }
        }
        self.step += 1;
        let mut report = StepReport::default();
        for ((name, var), st) in self.params.iter().zip(self.state.iter_mut()) {
            let Some(grad) = grads.get(var.as_tensor()) else {
                report.without_grad.push(name.clone());
                continue;
            };
            st.step += 1;
            let c = Coeffs::new(&self.cfg, lr, st.step);
            match &mut st.moments {
                Moments::Host { m, v } => {
                    let grad = grad.contiguous()?;
                    let kernel = AdamWKernel {
                        m: RefCell::new(m),
                        v: RefCell::new(v),
                        c,
                    };
                    var.as_tensor().inplace_op2(&grad, &kernel)?;
                }
                Moments::Device { m, v } => {
                    let (new_p, new_m, new_v) = update_tensors(var.as_tensor(), grad, m, v, &c)?;
                    var.set(&new_p)?;
                    *m = new_m;
                    *v = new_v;
                }
            }
            report.updated += 1;
        }
        Ok(report)
    }

    /// Writes the state to a safetensors file: `{name}.exp_avg` and `{name}.exp_avg_sq` (f32, the
    /// parameter's shape) per parameter, and JSON metadata with the step counts and config.
    /// Written to `path` + `.tmp` first and renamed, so a crash never leaves a torn file.
    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        let meta = StateMeta {
            format: STATE_FORMAT.into(),
            version: STATE_VERSION,
            step: self.step,
            config: self.cfg.clone(),
            params: self
                .params
                .iter()
                .zip(&self.state)
                .map(|((name, var), st)| ParamMeta {
                    name: name.clone(),
                    shape: var.dims().to_vec(),
                    step: st.step,
                })
                .collect(),
        };
        let mut tensors = Vec::with_capacity(2 * self.params.len());
        for ((name, var), st) in self.params.iter().zip(&self.state) {
            let shape = var.dims().to_vec();
            let (m, v) = match &st.moments {
                Moments::Host { m, v } => (F32View::Borrowed(m), F32View::Borrowed(v)),
                Moments::Device { m, v } => (
                    F32View::Owned(m.flatten_all()?.to_vec1::<f32>()?),
                    F32View::Owned(v.flatten_all()?.to_vec1::<f32>()?),
                ),
            };
            tensors.push((
                format!("{name}.exp_avg"),
                ShapedF32 {
                    shape: shape.clone(),
                    data: m,
                },
            ));
            tensors.push((format!("{name}.exp_avg_sq"), ShapedF32 { shape, data: v }));
        }
        let info = HashMap::from([
            ("format".to_string(), STATE_FORMAT.to_string()),
            ("state".to_string(), serde_json::to_string(&meta)?),
        ]);
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = std::path::PathBuf::from(tmp);
        safetensors::serialize_to_file(tensors, Some(info), &tmp)
            .with_context(|| format!("writing optimizer state {}", tmp.display()))?;
        std::fs::rename(&tmp, path)
            .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))?;
        Ok(())
    }

    /// Restores a state written by [`AdamW::save`] exactly. Everything is checked before anything
    /// is changed, so on error the optimizer is as it was.
    pub fn load(&mut self, path: &Path) -> anyhow::Result<()> {
        let ctx = || format!("loading optimizer state {}", path.display());
        let file = std::fs::File::open(path).with_context(ctx)?;
        // SAFETY: the map is read-only and lives only inside this call; like every safetensors
        // reader we assume nobody truncates the checkpoint while it is being read.
        let mmap = unsafe { memmap2::Mmap::map(&file) }.with_context(ctx)?;
        let st = safetensors::SafeTensors::deserialize(&mmap)
            .map_err(|e| anyhow::anyhow!("{e:?}"))
            .with_context(ctx)?;
        let (_, header) = safetensors::SafeTensors::read_metadata(&mmap)
            .map_err(|e| anyhow::anyhow!("{e:?}"))
            .with_context(ctx)?;
        let info = header.metadata().as_ref();
        let Some(json) = info.and_then(|m| m.get("state")) else {
            bail!("{}: no llmrl AdamW metadata; hint: pass the `optimizer.safetensors` of an llmrl checkpoint", ctx());
        };
        let meta: StateMeta = serde_json::from_str(json).with_context(ctx)?;
        ensure!(
            meta.format == STATE_FORMAT && meta.version == STATE_VERSION,
            "{}: format {} v{} is not {STATE_FORMAT} v{STATE_VERSION}",
            ctx(),
            meta.format,
            meta.version
        );
        ensure!(
            meta.config == self.cfg,
            "{}: saved with {:?} but this run uses {:?}; hint: resume with the optimizer settings of the checkpoint's recipe",
            ctx(),
            meta.config,
            self.cfg
        );
        let saved: HashMap<&str, &ParamMeta> =
            meta.params.iter().map(|p| (p.name.as_str(), p)).collect();
        let ours: HashSet<&str> = self.params.iter().map(|(n, _)| n.as_str()).collect();
        let missing: Vec<&str> = self
            .params
            .iter()
            .map(|(n, _)| n.as_str())
            .filter(|n| !saved.contains_key(n))
            .collect();
        let extra: Vec<&str> = meta
            .params
            .iter()
            .map(|p| p.name.as_str())
            .filter(|n| !ours.contains(n))
            .collect();
        if !missing.is_empty() || !extra.is_empty() {
            bail!(
                "{}: parameter names differ (not in file: {}; only in file: {}); hint: the checkpoint is for another model or trainable-parameter set",
                ctx(),
                preview(&missing),
                preview(&extra)
            );
        }
        // Check every shape and tensor before touching any state.
        let mut staged = Vec::with_capacity(self.params.len());
        for (name, var) in &self.params {
            let pm = saved[name.as_str()];
            ensure!(
                pm.shape == var.dims(),
                "{}: `{name}` was saved with shape {:?}, the model has {:?}; hint: the checkpoint is for another model size",
                ctx(),
                pm.shape,
                var.dims()
            );
            let read = |suffix: &str| -> anyhow::Result<&[u8]> {
                let key = format!("{name}.{suffix}");
                let t = st
                    .tensor(&key)
                    .map_err(|e| anyhow::anyhow!("{key}: {e:?}"))
                    .with_context(ctx)?;
                ensure!(
                    t.dtype() == safetensors::Dtype::F32 && t.shape() == var.dims(),
                    "{}: tensor {key} is {:?} {:?}, expected F32 {:?}",
                    ctx(),
                    t.dtype(),
                    t.shape(),
                    var.dims()
                );
                Ok(t.data())
            };
            staged.push((pm.step, read("exp_avg")?, read("exp_avg_sq")?));
        }
        for (((_, var), st), (step, m_bytes, v_bytes)) in
            self.params.iter().zip(self.state.iter_mut()).zip(staged)
        {
            st.step = step;
            match &mut st.moments {
                Moments::Host { m, v } => {
                    fill_f32(m, m_bytes);
                    fill_f32(v, v_bytes);
                }
                Moments::Device { m, v } => {
                    let mut buf = vec![0f32; var.elem_count()];
                    fill_f32(&mut buf, m_bytes);
                    *m = Tensor::from_slice(&buf, var.shape(), var.device())?;
                    fill_f32(&mut buf, v_bytes);
                    *v = Tensor::from_slice(&buf, var.shape(), var.device())?;
                }
            }
        }
        self.step = meta.step;
        Ok(())
    }
}

/// The first few names of a list, for error messages.
fn preview(names: &[&str]) -> String {
    match names.len() {
        0 => "none".into(),
        n if n <= 4 => names.join(", "),
        n => format!("{}, ... ({n} in all)", names[..4].join(", ")),
    }
}

fn fill_f32(dst: &mut [f32], bytes: &[u8]) {
    debug_assert_eq!(dst.len() * 4, bytes.len());
    dst.par_chunks_mut(CHUNK)
        .zip(bytes.par_chunks(4 * CHUNK))
        .for_each(|(d, b)| {
            for (x, c) in d.iter_mut().zip(b.chunks_exact(4)) {
                *x = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            }
        });
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StateMeta {
    format: String,
    version: u32,
    step: u64,
    config: AdamWConfig,
    params: Vec<ParamMeta>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ParamMeta {
    name: String,
    shape: Vec<usize>,
    step: u64,
}

enum F32View<'a> {
    Borrowed(&'a [f32]),
    Owned(Vec<f32>),
}

/// A safetensors view over f32 moments; bytes are produced one tensor at a time while writing,
/// so saving never holds a second copy of the whole state.
struct ShapedF32<'a> {
    shape: Vec<usize>,
    data: F32View<'a>,
}

impl safetensors::View for ShapedF32<'_> {
    fn dtype(&self) -> safetensors::Dtype {
        safetensors::Dtype::F32
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> std::borrow::Cow<'_, [u8]> {
        let xs = match &self.data {
            F32View::Borrowed(x) => *x,
            F32View::Owned(x) => x.as_slice(),
        };
        xs.iter()
            .flat_map(|x| x.to_le_bytes())
            .collect::<Vec<u8>>()
            .into()
    }
    fn data_len(&self) -> usize {
        4 * self.shape.iter().product::<usize>()
    }
}

/// Per-parameter scalars of one update, rounded to f32 the way torch applies Python floats to
/// f32 tensors.
#[derive(Clone, Copy, Debug)]
struct Coeffs {
    /// `1 - lr * weight_decay`; `None` when weight decay is off (torch skips the multiply).
    decay: Option<f32>,
    /// `1 - beta1`, the `lerp` weight.
    w1: f32,
    beta2: f32,
    one_minus_beta2: f32,
    /// `sqrt(1 - beta2^t)`.
    bc2_sqrt: f32,
    eps: f32,
    /// `-lr / (1 - beta1^t)`.
    neg_step_size: f32,
}

impl Coeffs {
    fn new(cfg: &AdamWConfig, lr: f64, t: u64) -> Self {
        let t = t.min(i32::MAX as u64) as i32;
        let bc1 = 1.0 - cfg.beta1.powi(t);
        let bc2 = 1.0 - cfg.beta2.powi(t);
        Self {
            decay: (cfg.weight_decay != 0.0).then_some((1.0 - lr * cfg.weight_decay) as f32),
            w1: (1.0 - cfg.beta1) as f32,
            beta2: cfg.beta2 as f32,
            one_minus_beta2: (1.0 - cfg.beta2) as f32,
            bc2_sqrt: bc2.sqrt() as f32,
            eps: cfg.eps as f32,
            neg_step_size: (-lr / bc1) as f32,
        }
    }
}

/// The AdamW update over one contiguous chunk, in torch's order of operations
/// (`_single_tensor_adamw`): decay, `lerp_` for m, `mul_`+`addcmul_` for v, then `addcdiv_`.
#[inline]
fn update_chunk<T: Copy>(
    p: &mut [T],
    g: &[T],
    m: &mut [f32],
    v: &mut [f32],
    c: &Coeffs,
    load: impl Fn(T) -> f32,
    store: impl Fn(f32) -> T,
) {
    for (((p, &g), m), v) in p.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut()) {
        let g = load(g);
        let mut x = load(*p);
        if let Some(d) = c.decay {
            x *= d;
        }
        // torch's lerp uses `self + w * (end - self)` for weights below 0.5.
        *m += c.w1 * (g - *m);
        *v = *v * c.beta2 + c.one_minus_beta2 * g * g;
        let denom = v.sqrt() / c.bc2_sqrt + c.eps;
        x += c.neg_step_size * (*m / denom);
        *p = store(x);
    }
}

fn update_parallel<T: Copy + Send + Sync>(
    p: &mut [T],
    g: &[T],
    m: &mut [f32],
    v: &mut [f32],
    c: &Coeffs,
    load: impl Fn(T) -> f32 + Sync + Send + Copy,
    store: impl Fn(f32) -> T + Sync + Send + Copy,
) {
    p.par_chunks_mut(CHUNK)
        .zip(g.par_chunks(CHUNK))
        .zip(m.par_chunks_mut(CHUNK))
        .zip(v.par_chunks_mut(CHUNK))
        .for_each(|(((p, g), m), v)| update_chunk(p, g, m, v, c, load, store));
}

/// In-place CPU update of one parameter (dst) from its gradient (src); the moments ride along in
/// `RefCell`s because candle hands the op to us by shared reference.
struct AdamWKernel<'a> {
    m: RefCell<&'a mut Vec<f32>>,
    v: RefCell<&'a mut Vec<f32>>,
    c: Coeffs,
}

fn contiguous_range(l: &Layout, what: &str) -> Result<(usize, usize)> {
    l.contiguous_offsets()
        .ok_or_else(|| Error::Msg(format!("AdamW: {what} is not contiguous")))
}

impl InplaceOp2 for AdamWKernel<'_> {
    fn name(&self) -> &'static str {
        "llmrl-adamw"
    }

    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<()> {
        let (p0, p1) = contiguous_range(l1, "parameter")?;
        let (g0, g1) = contiguous_range(l2, "gradient")?;
        let mut m = self.m.borrow_mut();
        let mut v = self.v.borrow_mut();
        if p1 - p0 != m.len() || g1 - g0 != m.len() {
            return Err(Error::Msg(
                "AdamW: moment and parameter sizes differ".into(),
            ));
        }
        let c = &self.c;
        match (s1, s2) {
            (CpuStorage::F32(p), CpuStorage::F32(g)) => {
                update_parallel(&mut p[p0..p1], &g[g0..g1], &mut m, &mut v, c, |x| x, |x| x)
            }
            (CpuStorage::BF16(p), CpuStorage::BF16(g)) => update_parallel(
                &mut p[p0..p1],
                &g[g0..g1],
                &mut m,
                &mut v,
                c,
                |x| x.to_f32(),
                half::bf16::from_f32,
            ),
            (CpuStorage::F16(p), CpuStorage::F16(g)) => update_parallel(
                &mut p[p0..p1],
                &g[g0..g1],
                &mut m,
                &mut v,
                c,
                |x| x.to_f32(),
                half::f16::from_f32,
            ),
            (p, g) => {
                return Err(Error::Msg(format!(
                    "AdamW: unsupported parameter/gradient dtypes {:?}/{:?}",
                    p.dtype(),
                    g.dtype()
                )))
            }
        }
        Ok(())
    }
}

/// The same update as tensor ops (devices other than CPU): returns new (param, m, v).
fn update_tensors(
    p: &Tensor,
    g: &Tensor,
    m: &Tensor,
    v: &Tensor,
    c: &Coeffs,
) -> Result<(Tensor, Tensor, Tensor)> {
    let g = g.to_dtype(DType::F32)?;
    let mut x = p.to_dtype(DType::F32)?;
    if let Some(d) = c.decay {
        x = x.affine(d as f64, 0.0)?;
    }
    let m = (m + (g.sub(m)?.affine(c.w1 as f64, 0.0)?))?;
    let v = (v.affine(c.beta2 as f64, 0.0)? + g.sqr()?.affine(c.one_minus_beta2 as f64, 0.0)?)?;
    let denom = v.sqrt()?.affine(1.0 / c.bc2_sqrt as f64, c.eps as f64)?;
    let x = (x + m.div(&denom)?.affine(c.neg_step_size as f64, 0.0)?)?;
    Ok((x.to_dtype(p.dtype())?, m, v))
}

// ------------------------------------------------------------------------------------------------
// Gradient clipping

/// Global L2 norm of the gradients of `params` (parameters without a gradient count as zero),
/// accumulated in f64.
pub fn grad_norm(params: &[(String, Var)], grads: &GradStore) -> Result<f64> {
    let mut sum_sq = 0f64;
    for (_, var) in params {
        let Some(g) = grads.get(var.as_tensor()) else {
            continue;
        };
        sum_sq += sum_sq_of(g)?;
    }
    Ok(sum_sq.sqrt())
}

fn sum_sq_of(g: &Tensor) -> Result<f64> {
    fn par_sum<T: Copy + Sync>(xs: &[T], load: impl Fn(T) -> f32 + Sync) -> f64 {
        xs.par_chunks(CHUNK)
            .map(|c| c.iter().map(|&x| (load(x) as f64).powi(2)).sum::<f64>())
            .sum()
    }
    let (storage, layout) = g.storage_and_layout();
    if let (Storage::Cpu(cpu), Some((a, b))) = (&*storage, layout.contiguous_offsets()) {
        match cpu {
            CpuStorage::F32(x) => return Ok(par_sum(&x[a..b], |x| x)),
            CpuStorage::BF16(x) => return Ok(par_sum(&x[a..b], |x| x.to_f32())),
            CpuStorage::F16(x) => return Ok(par_sum(&x[a..b], |x| x.to_f32())),
            _ => {}
        }
    }
    drop(storage);
    g.to_dtype(DType::F64)?.sqr()?.sum_all()?.to_scalar::<f64>()
}

/// `torch.nn.utils.clip_grad_norm_`: returns the global L2 norm before clipping and, when it is
/// above `max_norm`, scales every gradient by `max_norm / (norm + 1e-6)` (in place on CPU, so a
/// clone of a gradient tensor held elsewhere sees the scaled values, as in torch).
/// A non-finite norm is returned without touching the gradients: the caller should skip the step.
/// `max_norm <= 0` or infinite only measures.
pub fn clip_grad_norm(
    params: &[(String, Var)],
    grads: &mut GradStore,
    max_norm: f64,
) -> Result<f64> {
    let norm = grad_norm(params, grads)?;
    if !(norm.is_finite() && max_norm > 0.0 && max_norm.is_finite()) {
        return Ok(norm);
    }
    let coef = max_norm / (norm + 1e-6);
    if coef >= 1.0 {
        return Ok(norm);
    }
    for (_, var) in params {
        let Some(g) = grads.get(var.as_tensor()) else {
            continue;
        };
        let in_place = g.device().is_cpu()
            && g.layout().is_contiguous()
            && matches!(g.dtype(), DType::F32 | DType::BF16 | DType::F16);
        if in_place {
            g.inplace_op1(&Scale(coef as f32))?;
        } else {
            let scaled = g.affine(coef, 0.0)?;
            grads.insert(var.as_tensor(), scaled);
        }
    }
    Ok(norm)
}

struct Scale(f32);

impl InplaceOp1 for Scale {
    fn name(&self) -> &'static str {
        "llmrl-scale"
    }

    fn cpu_fwd(&self, s: &mut CpuStorage, l: &Layout) -> Result<()> {
        fn go<T: Copy + Send + Sync>(xs: &mut [T], f: impl Fn(T) -> T + Sync) {
            xs.par_chunks_mut(CHUNK)
                .for_each(|c| c.iter_mut().for_each(|x| *x = f(*x)));
        }
        let (a, b) = contiguous_range(l, "gradient")?;
        let k = self.0;
        match s {
            CpuStorage::F32(x) => go(&mut x[a..b], |x| x * k),
            CpuStorage::BF16(x) => go(&mut x[a..b], |x| half::bf16::from_f32(x.to_f32() * k)),
            CpuStorage::F16(x) => go(&mut x[a..b], |x| half::f16::from_f32(x.to_f32() * k)),
            other => {
                return Err(Error::Msg(format!(
                    "scale: unsupported dtype {:?}",
                    other.dtype()
                )))
            }
        }
        Ok(())
    }
}

// ------------------------------------------------------------------------------------------------
// Learning-rate schedules

/// Learning-rate schedule with linear warmup, as in `transformers.optimization`. Warmup is
/// `warmup_steps` if > 0, else `ceil(warmup_ratio * total_steps)` (HF `get_warmup_steps`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "name", rename_all = "snake_case", deny_unknown_fields)]
pub enum LrSchedule {
    /// `get_constant_schedule_with_warmup`.
    Constant {
        #[serde(default)]
        warmup_steps: u64,
        #[serde(default)]
        warmup_ratio: f64,
    },
    /// `get_linear_schedule_with_warmup`, decaying to `final_lr_ratio * base_lr` (HF: 0).
    Linear {
        #[serde(default)]
        warmup_steps: u64,
        #[serde(default)]
        warmup_ratio: f64,
        #[serde(default)]
        final_lr_ratio: f64,
    },
    /// `get_cosine_with_min_lr_schedule_with_warmup` (half a cosine), ending at
    /// `min_lr_ratio * base_lr` (HF's `min_lr_rate`).
    Cosine {
        #[serde(default)]
        warmup_steps: u64,
        #[serde(default)]
        warmup_ratio: f64,
        #[serde(default)]
        min_lr_ratio: f64,
    },
}

impl Default for LrSchedule {
    fn default() -> Self {
        LrSchedule::Constant {
            warmup_steps: 0,
            warmup_ratio: 0.0,
        }
    }
}

impl LrSchedule {
    /// Checks ranges; call when resolving a recipe.
    pub fn validate(&self) -> anyhow::Result<()> {
        let (steps, ratio, floor) = self.parts();
        ensure!(
            (0.0..=1.0).contains(&ratio),
            "lr_schedule warmup_ratio = {ratio} is out of range; hint: a fraction of training in [0, 1], e.g. 0.05"
        );
        ensure!(
            steps == 0 || ratio == 0.0,
            "lr_schedule sets both warmup_steps = {steps} and warmup_ratio = {ratio}; hint: keep one of them"
        );
        if let Some((field, r)) = floor {
            ensure!(
                (0.0..=1.0).contains(&r),
                "lr_schedule {field} = {r} is out of range; hint: a fraction of the base lr in [0, 1], e.g. 0.1"
            );
        }
        Ok(())
    }

    /// (warmup_steps, warmup_ratio, final-ratio field and value).
    fn parts(&self) -> (u64, f64, Option<(&'static str, f64)>) {
        match *self {
            LrSchedule::Constant {
                warmup_steps,
                warmup_ratio,
            } => (warmup_steps, warmup_ratio, None),
            LrSchedule::Linear {
                warmup_steps,
                warmup_ratio,
                final_lr_ratio,
            } => (
                warmup_steps,
                warmup_ratio,
                Some(("final_lr_ratio", final_lr_ratio)),
            ),
            LrSchedule::Cosine {
                warmup_steps,
                warmup_ratio,
                min_lr_ratio,
            } => (
                warmup_steps,
                warmup_ratio,
                Some(("min_lr_ratio", min_lr_ratio)),
            ),
        }
    }

    /// Warmup length for a run of `total_steps` optimizer steps.
    pub fn warmup_steps(&self, total_steps: u64) -> u64 {
        let (steps, ratio, _) = self.parts();
        if steps > 0 {
            steps
        } else {
            (ratio * total_steps as f64).ceil() as u64
        }
    }

    /// Learning rate for the update that follows `step` completed optimizer steps (0 for the
    /// first update) out of `total_steps`.
    pub fn lr(&self, base_lr: f64, step: u64, total_steps: u64) -> f64 {
        let warmup = self.warmup_steps(total_steps);
        if step < warmup {
            return base_lr * step as f64 / warmup.max(1) as f64;
        }
        let progress = || (step - warmup) as f64 / total_steps.saturating_sub(warmup).max(1) as f64;
        let factor = match *self {
            LrSchedule::Constant { .. } => 1.0,
            LrSchedule::Linear { final_lr_ratio, .. } => {
                let decay = (1.0 - progress()).max(0.0);
                final_lr_ratio + (1.0 - final_lr_ratio) * decay
            }
            LrSchedule::Cosine { min_lr_ratio, .. } => {
                let cos = 0.5 * (1.0 + (std::f64::consts::PI * progress().min(1.0)).cos());
                min_lr_ratio + (1.0 - min_lr_ratio) * cos
            }
        };
        base_lr * factor
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn var(xs: &[f32]) -> Var {
        Var::from_slice(xs, xs.len(), &Device::Cpu).unwrap()
    }

    fn values(v: &Var) -> Vec<f32> {
        v.as_tensor().to_vec1::<f32>().unwrap()
    }

    fn grads(pairs: &[(&Var, &[f32])]) -> GradStore {
        let mut g = GradStore::default();
        for (v, xs) in pairs {
            g.insert(
                v.as_tensor(),
                Tensor::from_slice(xs, xs.len(), &Device::Cpu).unwrap(),
            );
        }
        g
    }

    fn assert_close(got: &[f32], want: &[f64], tol: f64) {
        assert_eq!(got.len(), want.len());
        for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
            assert!((g as f64 - w).abs() <= tol, "[{i}] got {g}, want {w}");
        }
    }

    const P0: [f32; 5] = [0.5, -1.0, 2.0, 0.0, 3.0];
    const G1: [f32; 5] = [0.1, -0.2, 0.3, 0.0, -1e-3];
    const G2: [f32; 5] = [-0.05, 0.4, 0.3, 1.0, 2.0];

    /// Runs two steps (G1, G2) at lr 1e-2 and returns the params after each.
    fn two_steps(cfg: AdamWConfig, host: bool) -> (Vec<f32>, Vec<f32>) {
        let p = var(&P0);
        let mut opt = AdamW::with_host_moments(vec![("w".into(), p.clone())], cfg, host).unwrap();
        opt.step(&grads(&[(&p, &G1)]), 1e-2).unwrap();
        let after1 = values(&p);
        opt.step(&grads(&[(&p, &G2)]), 1e-2).unwrap();
        (after1, values(&p))
    }

    #[test]
    fn first_step_moves_by_lr_times_sign() {
        // After bias correction m_hat = g and v_hat = g^2, so p -= lr * g / (|g| + eps);
        // a zero gradient gives 0 / eps = 0.
        let (after1, _) = two_steps(AdamWConfig::default(), true);
        let want: Vec<f64> = P0
            .iter()
            .zip(G1)
            .map(|(&p, g)| p as f64 - 1e-2 * g as f64 / ((g as f64).abs() + 1e-8))
            .collect();
        assert_close(&after1, &want, 1e-6);
        assert_eq!(after1[3], 0.0);
    }

    // Reference values from torch 2.x (float32):
    //   import torch
    //   p = torch.nn.Parameter(torch.tensor([0.5, -1.0, 2.0, 0.0, 3.0]))
    //   opt = torch.optim.AdamW([p], lr=1e-2, betas=(0.9, 0.999), eps=1e-8, weight_decay=WD)
    //   for g in ([0.1, -0.2, 0.3, 0.0, -1e-3], [-0.05, 0.4, 0.3, 1.0, 2.0]):
    //       p.grad = torch.tensor(g); opt.step(); print([float(x) for x in p.detach()])
    // By hand, element 3 (g = 0 then 1): m2 = 0.1, v2 = 0.001, m_hat = 0.1/0.19, v_hat = 0.001/0.001999,
    // step = 1e-2 * 0.526316 / 0.707284 = 0.0074414.
    #[test]
    fn two_steps_match_torch() {
        let (after1, after2) = two_steps(AdamWConfig::default(), true);
        assert_close(
            &after1,
            &[
                0.49000000953674316,
                -0.9900000095367432,
                1.9900000095367432,
                0.0,
                3.009999990463257,
            ],
            0.0,
        );
        assert_close(
            &after2,
            &[
                0.4873366355895996,
                -0.9936610460281372,
                1.9800000190734863,
                -0.007441367954015732,
                3.0025620460510254,
            ],
            0.0,
        );
    }

    #[test]
    fn weight_decay_matches_torch() {
        let cfg = AdamWConfig {
            weight_decay: 0.1,
            ..Default::default()
        };
        let (after1, after2) = two_steps(cfg, true);
        // Step 1 by hand: 0.5 * (1 - 1e-2 * 0.1) - 1e-2 = 0.4895.
        assert_close(
            &after1,
            &[
                0.4895000159740448,
                -0.9890000224113464,
                1.9880000352859497,
                0.0,
                3.006999969482422,
            ],
            0.0,
        );
        assert_close(
            &after2,
            &[
                0.48634713888168335,
                -0.9916720986366272,
                1.976012110710144,
                -0.007441367954015732,
                2.9965550899505615,
            ],
            0.0,
        );
    }

    #[test]
    fn tensor_op_path_matches_in_place_path() {
        let cfg = AdamWConfig {
            weight_decay: 0.1,
            ..Default::default()
        };
        let (h1, h2) = two_steps(cfg.clone(), true);
        let (d1, d2) = two_steps(cfg, false);
        let f = |x: &[f32]| x.iter().map(|&v| v as f64).collect::<Vec<_>>();
        assert_close(&d1, &f(&h1), 1e-6);
        assert_close(&d2, &f(&h2), 1e-6);
    }

    #[test]
    fn bf16_params_keep_f32_moments() {
        let p = Var::from_tensor(
            &Tensor::new(&[1.0f32, -1.0], &Device::Cpu)
                .unwrap()
                .to_dtype(DType::BF16)
                .unwrap(),
        )
        .unwrap();
        let mut opt = AdamW::new(vec![("w".into(), p.clone())], AdamWConfig::default()).unwrap();
        let mut g = GradStore::default();
        g.insert(
            p.as_tensor(),
            Tensor::new(&[0.5f32, -0.5], &Device::Cpu)
                .unwrap()
                .to_dtype(DType::BF16)
                .unwrap(),
        );
        opt.step(&g, 0.125).unwrap();
        let got = p
            .as_tensor()
            .to_dtype(DType::F32)
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert_eq!(got, vec![0.875, -0.875]); // exact in bf16
    }

    #[test]
    fn params_without_grad_are_skipped_and_reported() {
        let (a, b) = (var(&[1.0, 2.0]), var(&[3.0]));
        let params = vec![("a".to_string(), a.clone()), ("b".to_string(), b.clone())];
        let mut opt = AdamW::new(params, AdamWConfig::default()).unwrap();
        let report = opt.step(&grads(&[(&a, &[1.0, -1.0])]), 0.1).unwrap();
        assert_eq!(
            report,
            StepReport {
                updated: 1,
                without_grad: vec!["b".into()]
            }
        );
        assert_eq!(values(&b), vec![3.0]);
        assert_close(&values(&a), &[0.9, 2.1], 1e-6);
        // `b` gets its first update at global step 2 with its own bias correction (torch), so it
        // moves by exactly lr * sign(g).
        opt.step(&grads(&[(&a, &[1.0, -1.0]), (&b, &[2.0])]), 0.1)
            .unwrap();
        assert_close(&values(&b), &[2.9], 1e-6);
        assert_eq!(
            (opt.step_count(), opt.state[0].step, opt.state[1].step),
            (2, 2, 1)
        );
    }

    #[test]
    fn mismatched_gradient_is_an_error_and_changes_nothing() {
        let (a, b) = (var(&[1.0, 2.0]), var(&[3.0]));
        let params = vec![("a".to_string(), a.clone()), ("b".to_string(), b.clone())];
        let mut opt = AdamW::new(params, AdamWConfig::default()).unwrap();
        let e = opt.step(&grads(&[(&a, &[1.0, 1.0]), (&b, &[1.0, 1.0])]), 0.1);
        assert!(e.unwrap_err().to_string().contains("gradient of `b`"));
        assert_eq!((values(&a), opt.step_count()), (vec![1.0, 2.0], 0));
    }

    fn grad_seq(k: usize) -> [f32; 5] {
        std::array::from_fn(|i| ((i * 7 + k * 3) % 5) as f32 * 0.3 - 0.6)
    }

    #[test]
    fn save_load_continue_is_bit_identical() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("optimizer.safetensors");
        let cfg = AdamWConfig {
            weight_decay: 0.01,
            ..Default::default()
        };
        let (p, q) = (var(&P0), var(&[0.25, -0.5]));
        let named =
            |p: &Var, q: &Var| vec![("p".to_string(), p.clone()), ("q".to_string(), q.clone())];
        let mut opt = AdamW::new(named(&p, &q), cfg.clone()).unwrap();
        for k in 0..3 {
            // q misses a gradient at k == 1, so per-parameter steps differ in the saved state.
            let gs = grad_seq(k);
            let g = if k == 1 {
                grads(&[(&p, &gs)])
            } else {
                grads(&[(&p, &gs), (&q, &gs[..2])])
            };
            opt.step(&g, 1e-2).unwrap();
        }
        opt.save(&path).unwrap();
        let (p2, q2) = (var(&values(&p)), var(&values(&q)));
        let mut resumed = AdamW::new(named(&p2, &q2), cfg).unwrap();
        resumed.load(&path).unwrap();
        assert_eq!(resumed.step_count(), 3);
        for k in 3..6 {
            let gs = grad_seq(k);
            opt.step(&grads(&[(&p, &gs), (&q, &gs[..2])]), 1e-2)
                .unwrap();
            resumed
                .step(&grads(&[(&p2, &gs), (&q2, &gs[..2])]), 1e-2)
                .unwrap();
        }
        assert_eq!(
            values(&p).iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
            values(&p2).iter().map(|x| x.to_bits()).collect::<Vec<_>>()
        );
        assert_eq!(
            values(&q).iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
            values(&q2).iter().map(|x| x.to_bits()).collect::<Vec<_>>()
        );
    }

    #[test]
    fn load_rejects_mismatches_without_changing_state() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("opt.safetensors");
        let p = var(&[1.0, 2.0]);
        let mut opt = AdamW::new(vec![("p".into(), p.clone())], AdamWConfig::default()).unwrap();
        opt.step(&grads(&[(&p, &[1.0, 1.0])]), 0.1).unwrap();
        opt.save(&path).unwrap();

        let err = |params: Vec<(String, Var)>, cfg: AdamWConfig| {
            let mut o = AdamW::new(params, cfg).unwrap();
            let e = format!("{:#}", o.load(&path).unwrap_err());
            assert_eq!(o.step_count(), 0, "state changed by a failed load");
            e
        };
        let e = err(
            vec![("other".into(), var(&[1.0, 2.0]))],
            AdamWConfig::default(),
        );
        assert!(
            e.contains("not in file: other") && e.contains("only in file: p") && e.contains("hint"),
            "{e}"
        );
        let e = err(
            vec![("p".into(), var(&[1.0, 2.0, 3.0]))],
            AdamWConfig::default(),
        );
        assert!(e.contains("shape [2]") && e.contains("hint"), "{e}");
        let e = err(
            vec![("p".into(), var(&[1.0, 2.0]))],
            AdamWConfig {
                beta1: 0.8,
                ..Default::default()
            },
        );
        assert!(e.contains("hint"), "{e}");
        std::fs::write(&path, b"not a safetensors file").unwrap();
        let _ = err(vec![("p".into(), var(&[1.0, 2.0]))], AdamWConfig::default());
    }

    #[test]
    fn new_rejects_bad_config_and_duplicate_names() {
        let bad = AdamWConfig {
            beta2: 1.0,
            ..Default::default()
        };
        assert!(format!("{:#}", AdamW::new(vec![], bad).err().unwrap()).contains("beta2"));
        let dup = vec![
            ("w".to_string(), var(&[1.0])),
            ("w".to_string(), var(&[2.0])),
        ];
        assert!(AdamW::new(dup, AdamWConfig::default()).is_err());
    }

    #[test]
    fn clip_grad_norm_scales_above_max_norm() {
        // |(3, 4, 12)| = 13.
        let (a, b, c) = (var(&[0.0, 0.0]), var(&[0.0]), var(&[0.0]));
        let params = vec![
            ("a".to_string(), a.clone()),
            ("b".to_string(), b.clone()),
            ("c".to_string(), c),
        ];
        let mut g = grads(&[(&a, &[3.0, 4.0]), (&b, &[12.0])]);
        assert_eq!(clip_grad_norm(&params, &mut g, 100.0).unwrap(), 13.0);
        assert_eq!(
            g.get(a.as_tensor()).unwrap().to_vec1::<f32>().unwrap(),
            vec![3.0, 4.0]
        );
        assert_eq!(clip_grad_norm(&params, &mut g, 1.0).unwrap(), 13.0);
        let k = 1.0 / (13.0 + 1e-6);
        assert_close(
            &g.get(a.as_tensor()).unwrap().to_vec1::<f32>().unwrap(),
            &[3.0 * k, 4.0 * k],
            1e-7,
        );
        assert_close(
            &g.get(b.as_tensor()).unwrap().to_vec1::<f32>().unwrap(),
            &[12.0 * k],
            1e-7,
        );
        assert!((grad_norm(&params, &g).unwrap() - 1.0).abs() < 1e-6);
        // max_norm 0 measures only.
        assert!((clip_grad_norm(&params, &mut g, 0.0).unwrap() - 1.0).abs() < 1e-6);
    }

    #[test]
    fn clip_grad_norm_reports_non_finite_and_leaves_grads() {
        let a = var(&[0.0, 0.0]);
        let params = vec![("a".to_string(), a.clone())];
        let mut g = grads(&[(&a, &[f32::NAN, 1.0])]);
        assert!(clip_grad_norm(&params, &mut g, 1.0).unwrap().is_nan());
        assert_eq!(
            g.get(a.as_tensor()).unwrap().to_vec1::<f32>().unwrap()[1],
            1.0
        );
        let mut g = grads(&[(&a, &[f32::INFINITY, 1.0])]);
        assert_eq!(clip_grad_norm(&params, &mut g, 1.0).unwrap(), f64::INFINITY);
    }

    #[test]
    fn clip_grad_norm_on_backward_grads() {
        // loss = sum(w * (3, 4)) => grad (3, 4), norm 5, clipped to norm 1.
        let w = var(&[1.0, 1.0]);
        let c = Tensor::new(&[3.0f32, 4.0], &Device::Cpu).unwrap();
        let mut g = (w.as_tensor() * c)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let params = vec![("w".to_string(), w.clone())];
        assert_eq!(clip_grad_norm(&params, &mut g, 1.0).unwrap(), 5.0);
        assert!((grad_norm(&params, &g).unwrap() - 1.0).abs() < 1e-6);
    }

    #[test]
    fn schedules_at_warmup_midpoint_and_end() {
        let b = 1e-3;
        let close = |a: f64, e: f64| assert!((a - e).abs() < 1e-12, "{a} vs {e}");
        let s = LrSchedule::Constant {
            warmup_steps: 10,
            warmup_ratio: 0.0,
        };
        close(s.lr(b, 0, 100), 0.0); // HF: the first update of a warmup uses lr 0
        close(s.lr(b, 5, 100), 0.5 * b);
        close(s.lr(b, 10, 100), b);
        close(s.lr(b, 100, 100), b);
        let s = LrSchedule::Linear {
            warmup_steps: 10,
            warmup_ratio: 0.0,
            final_lr_ratio: 0.0,
        };
        close(s.lr(b, 10, 110), b);
        close(s.lr(b, 60, 110), 0.5 * b);
        close(s.lr(b, 110, 110), 0.0);
        close(s.lr(b, 200, 110), 0.0);
        let s = LrSchedule::Linear {
            warmup_steps: 10,
            warmup_ratio: 0.0,
            final_lr_ratio: 0.1,
        };
        close(s.lr(b, 60, 110), 0.55 * b);
        close(s.lr(b, 110, 110), 0.1 * b);
        let s = LrSchedule::Cosine {
            warmup_steps: 0,
            warmup_ratio: 0.1,
            min_lr_ratio: 0.1,
        };
        assert_eq!(s.warmup_steps(100), 10);
        close(s.lr(b, 0, 100), 0.0);
        close(s.lr(b, 10, 100), b);
        close(s.lr(b, 55, 100), 0.55 * b); // cos(pi/2) = 0: halfway between 1 and 0.1
        close(s.lr(b, 100, 100), 0.1 * b);
        close(s.lr(b, 150, 100), 0.1 * b);
        // No warmup: full lr from the first step; ratio warmup rounds up like HF.
        close(LrSchedule::default().lr(b, 0, 10), b);
        assert_eq!(
            LrSchedule::Constant {
                warmup_steps: 0,
                warmup_ratio: 0.05
            }
            .warmup_steps(30),
            2
        );
    }

    #[test]
    fn configs_from_toml() {
        let s: LrSchedule =
            toml::from_str("name = \"cosine\"\nwarmup_ratio = 0.05\nmin_lr_ratio = 0.1").unwrap();
        assert_eq!(
            s,
            LrSchedule::Cosine {
                warmup_steps: 0,
                warmup_ratio: 0.05,
                min_lr_ratio: 0.1
            }
        );
        s.validate().unwrap();
        let e = toml::from_str::<LrSchedule>("name = \"cosine\"\nmin_lr = 0.1")
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown field `min_lr`"), "{e}");
        let e = toml::from_str::<LrSchedule>("name = \"step\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown variant `step`"), "{e}");
        let both = LrSchedule::Linear {
            warmup_steps: 5,
            warmup_ratio: 0.1,
            final_lr_ratio: 0.0,
        };
        assert!(both.validate().unwrap_err().to_string().contains("hint"));
        let c: AdamWConfig = toml::from_str("weight_decay = 0.01").unwrap();
        assert_eq!(
            c,
            AdamWConfig {
                weight_decay: 0.01,
                ..Default::default()
            }
        );
        assert!(toml::from_str::<AdamWConfig>("beta_1 = 0.9").is_err());
    }

    /// `cargo test --release --lib optim::tests::bench_135m -- --ignored --nocapture`
    #[test]
    #[ignore]
    fn bench_135m() {
        use std::time::Instant;
        let dev = Device::Cpu;
        let mut params = Vec::new();
        let mut gs = GradStore::default();
        // SmolLM2-135M: 30 layers of q, k, v, o, gate, up, down + 2 norms, embedding, final norm.
        let layer = [
            (576, 576),
            (192, 576),
            (192, 576),
            (576, 576),
            (1536, 576),
            (1536, 576),
            (576, 1536),
            (1, 576),
            (1, 576),
        ];
        let mut shapes: Vec<(usize, usize)> = (0..30).flat_map(|_| layer).collect();
        shapes.extend([(49152, 576), (1, 576)]);
        for (i, s) in shapes.into_iter().enumerate() {
            let v = Var::from_tensor(&Tensor::randn(0f32, 0.02, s, &dev).unwrap()).unwrap();
            gs.insert(v.as_tensor(), Tensor::randn(0f32, 1e-3, s, &dev).unwrap());
            params.push((format!("p{i}"), v));
        }
        let n: usize = params.iter().map(|(_, v)| v.elem_count()).sum();
        let mut opt = AdamW::new(
            params.clone(),
            AdamWConfig {
                weight_decay: 0.01,
                ..Default::default()
            },
        )
        .unwrap();
        for i in 0..4 {
            let t = Instant::now();
            let norm = clip_grad_norm(&params, &mut gs, 1e9).unwrap();
            let t_norm = t.elapsed();
            let t = Instant::now();
            opt.step(&gs, 1e-5).unwrap();
            println!(
                "iter {i}: {n} params, grad norm {norm:.4} in {t_norm:.2?}, AdamW step {:.2?}",
                t.elapsed()
            );
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("opt.safetensors");
        let t = Instant::now();
        opt.save(&path).unwrap();
        let t_save = t.elapsed();
        let t = Instant::now();
        opt.load(&path).unwrap();
        println!("save {t_save:.2?}, load {:.2?}", t.elapsed());
    }
}
