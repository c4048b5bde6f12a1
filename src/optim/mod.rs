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
//! - A trainable subset ([`AdamW::with_trainable`], a [`Trainable`]): frozen parameters get no
//!   moments and no update; of a partially trainable tensor (rows along dim 0, e.g. only the new
//!   tokens' rows of the embedding) only those rows are read and written, so frozen rows stay
//!   bit-identical also under weight decay, and the moments hold just the trainable rows.
//!   [`AdamW::clip_grad_norm`] measures the same elements.
//!
//! Deliberately not here: other optimizers, AMSGrad/maximize/foreach variants, parameter groups
//! (one learning rate and weight decay for all parameters), and gradient accumulation (the trainer
//! sums micro-batch gradients before calling [`AdamW::step`]).
//!
//! Layout: [`AdamW`] and its configuration here; the update arithmetic in `kernel`, the state
//! file in `state`, gradient clipping in `clip`, and learning-rate schedules in `schedule`.

mod clip;
mod kernel;
mod schedule;
mod state;
#[cfg(test)]
mod test_util;

pub use clip::{clip_grad_norm, grad_norm};
pub use schedule::LrSchedule;

use std::cell::RefCell;
use std::collections::HashSet;
use std::ops::Range;

use anyhow::ensure;
use candle_core::backprop::GradStore;
use candle_core::{DType, Tensor, Var};
use candle_core::{Error, Result};
use serde::{Deserialize, Serialize};

use crate::model::trainable::{Part, Trainable};
use kernel::{update_tensors, AdamWKernel, Coeffs};

/// Elements per rayon task: large enough to amortize scheduling, small enough to balance two to
/// a few dozen cores on the 49152x576 embedding.
const CHUNK: usize = 1 << 15;

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

/// First and second moments of the trainable elements of one parameter, always f32 (also for
/// bf16 parameters).
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
    /// The trainable rows (dim 0); `None`: the whole tensor.
    rows: Option<Vec<Range<usize>>>,
    moments: Moments,
}

impl ParamState {
    /// Element ranges of the parameter this state updates (row-major: rows are contiguous).
    fn segments(&self, dims: &[usize]) -> Vec<Range<usize>> {
        match &self.rows {
            None => Part::All.element_ranges(dims),
            Some(r) => Part::Rows(r.clone()).element_ranges(dims),
        }
    }

    /// Shape of the moments: the parameter's, with dim 0 cut to the trainable rows.
    fn moment_dims(&self, dims: &[usize]) -> Vec<usize> {
        let mut d = dims.to_vec();
        if let (Some(rows), Some(d0)) = (&self.rows, d.first_mut()) {
            *d0 = rows.iter().map(|r| r.len()).sum();
        }
        d
    }
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
    /// The trainable parameters (wholly or in part), each with its state.
    params: Vec<(String, Var)>,
    state: Vec<ParamState>,
    /// Names of the parameters given but frozen.
    frozen: Vec<String>,
    cfg: AdamWConfig,
    /// Calls to [`AdamW::step`].
    step: u64,
}

impl AdamW {
    /// Zero moments for every parameter. Names must be unique (they key the saved state).
    pub fn new(params: Vec<(String, Var)>, cfg: AdamWConfig) -> anyhow::Result<Self> {
        Self::build(params, &Trainable::All, cfg, true)
    }

    /// Only the `trainable` part of `params` is updated (and has moments); the rest is frozen.
    /// Names in `trainable` that are not among `params`, or rows out of range, are an error.
    pub fn with_trainable(
        params: Vec<(String, Var)>,
        trainable: &Trainable,
        cfg: AdamWConfig,
    ) -> anyhow::Result<Self> {
        Self::build(params, trainable, cfg, true)
    }

    /// `host == false` forces the tensor-op path on CPU too (tests compare the two paths).
    fn build(
        params: Vec<(String, Var)>,
        trainable: &Trainable,
        cfg: AdamWConfig,
        host: bool,
    ) -> anyhow::Result<Self> {
        cfg.validate()?;
        trainable.validate(&params)?;
        let mut seen = HashSet::new();
        let mut state = Vec::with_capacity(params.len());
        let mut kept = Vec::with_capacity(params.len());
        let mut frozen = Vec::new();
        for (name, var) in params {
            ensure!(
                seen.insert(name.clone()),
                "parameter name `{name}` given twice to AdamW"
            );
            ensure!(
                var.dtype().is_float(),
                "parameter `{name}` has dtype {:?}; AdamW needs a float parameter",
                var.dtype()
            );
            let rows = match trainable.part(&name) {
                None => {
                    frozen.push(name);
                    continue;
                }
                Some(Part::All) => None,
                Some(Part::Rows(r)) if r.is_empty() => {
                    frozen.push(name);
                    continue;
                }
                Some(Part::Rows(r)) => Some(r),
            };
            let mut st = ParamState {
                step: 0,
                rows,
                moments: Moments::Host {
                    m: vec![],
                    v: vec![],
                },
            };
            let dims = st.moment_dims(var.dims());
            st.moments = if host && var.device().is_cpu() {
                let n = dims.iter().product();
                Moments::Host {
                    m: vec![0.0; n],
                    v: vec![0.0; n],
                }
            } else {
                let z = Tensor::zeros(dims, DType::F32, var.device())?;
                Moments::Device { m: z.clone(), v: z }
            };
            state.push(st);
            kept.push((name, var));
        }
        Ok(Self {
            params: kept,
            state,
            frozen,
            cfg,
            step: 0,
        })
    }

    pub fn config(&self) -> &AdamWConfig {
        &self.cfg
    }

    /// The parameters this optimizer updates (wholly or in part); frozen ones are not here.
    pub fn params(&self) -> &[(String, Var)] {
        &self.params
    }

    /// Names of the parameters given to it but frozen.
    pub fn frozen(&self) -> &[String] {
        &self.frozen
    }

    /// Calls to [`AdamW::step`] so far (restored by [`AdamW::load`]).
    pub fn step_count(&self) -> u64 {
        self.step
    }

    /// One update with learning rate `lr` from the gradients in `grads`. Trainable parameters
    /// without a gradient are left unchanged and listed in the report; frozen ones (and frozen
    /// rows) are never touched, whatever their gradient.
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
            let segments = st.segments(var.dims());
            match (&mut st.moments, &st.rows) {
                (Moments::Host { m, v }, _) => {
                    let grad = grad.contiguous()?;
                    let kernel = AdamWKernel {
                        m: RefCell::new(m),
                        v: RefCell::new(v),
                        segments,
                        c,
                    };
                    var.as_tensor().inplace_op2(&grad, &kernel)?;
                }
                (Moments::Device { m, v }, None) => {
                    let (new_p, new_m, new_v) = update_tensors(var.as_tensor(), grad, m, v, &c)?;
                    var.set(&new_p)?;
                    *m = new_m;
                    *v = new_v;
                }
                (Moments::Device { m, v }, Some(rows)) => {
                    // Gather the trainable rows, update them, scatter them back: frozen rows are
                    // copied, never computed on.
                    let p_rows = gather_rows(var.as_tensor(), rows)?; // (R, ...)
                    let g_rows = gather_rows(grad, rows)?; // (R, ...)
                    let (new_rows, new_m, new_v) = update_tensors(&p_rows, &g_rows, m, v, &c)?;
                    let mut full = var.as_tensor().detach();
                    let mut off = 0;
                    for r in rows {
                        full = full.slice_scatter0(&new_rows.narrow(0, off, r.len())?, r.start)?;
                        off += r.len();
                    }
                    var.set(&full)?;
                    *m = new_m;
                    *v = new_v;
                }
            }
            report.updated += 1;
        }
        Ok(report)
    }
}

/// Rows `rows` of `t` along dim 0, concatenated: (sum of lengths, ...).
fn gather_rows(t: &Tensor, rows: &[Range<usize>]) -> Result<Tensor> {
    let parts = rows
        .iter()
        .map(|r| t.narrow(0, r.start, r.len()))
        .collect::<Result<Vec<_>>>()?;
    Tensor::cat(&parts, 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::optim::test_util::{assert_close, grads, values, var, P0};
    use candle_core::Device;

    const G1: [f32; 5] = [0.1, -0.2, 0.3, 0.0, -1e-3];
    const G2: [f32; 5] = [-0.05, 0.4, 0.3, 1.0, 2.0];

    /// Runs two steps (G1, G2) at lr 1e-2 and returns the params after each.
    fn two_steps(cfg: AdamWConfig, host: bool) -> (Vec<f32>, Vec<f32>) {
        let p = var(&P0);
        let mut opt =
            AdamW::build(vec![("w".into(), p.clone())], &Trainable::All, cfg, host).unwrap();
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

    /// A (4, 3) parameter whose rows 1 and 3 train; `host` picks the update path.
    fn rows_setup(host: bool, wd: f64) -> (Var, Var, AdamW) {
        let w = Var::from_tensor(
            &Tensor::arange(0f32, 12., &Device::Cpu)
                .unwrap()
                .affine(0.1, -0.5)
                .unwrap()
                .reshape((4, 3))
                .unwrap(),
        )
        .unwrap();
        let frozen = var(&[1.0, -2.0]);
        let t = Trainable::Only(
            [("w".to_string(), Part::rows([1..2, 3..4]))]
                .into_iter()
                .collect(),
        );
        let cfg = AdamWConfig {
            weight_decay: wd,
            ..Default::default()
        };
        let params = vec![
            ("f".to_string(), frozen.clone()),
            ("w".to_string(), w.clone()),
        ];
        (w, frozen, AdamW::build(params, &t, cfg, host).unwrap())
    }

    fn row_grads(w: &Var, frozen: &Var, k: usize) -> GradStore {
        let mut g = GradStore::default();
        let gw: Vec<f32> = (0..12)
            .map(|i| ((i * 5 + k * 3) % 7) as f32 * 0.2 - 0.6)
            .collect();
        g.insert(
            w.as_tensor(),
            Tensor::from_vec(gw, (4, 3), &Device::Cpu).unwrap(),
        );
        g.insert(
            frozen.as_tensor(),
            Tensor::new(&[5f32, 5.], &Device::Cpu).unwrap(),
        );
        g
    }

    #[test]
    fn frozen_rows_and_params_stay_bit_identical_with_weight_decay() {
        for host in [true, false] {
            let (w, frozen, mut opt) = rows_setup(host, 0.1);
            assert_eq!(opt.frozen(), ["f".to_string()]);
            let before = w.as_tensor().to_vec2::<f32>().unwrap();
            // The trainable rows alone, as a (2, 3) parameter under plain AdamW: the reference.
            let alone = Var::from_tensor(
                &Tensor::from_vec(
                    [before[1].clone(), before[3].clone()].concat(),
                    (2, 3),
                    &Device::Cpu,
                )
                .unwrap(),
            )
            .unwrap();
            let cfg = opt.config().clone();
            let mut reference = AdamW::build(
                vec![("r".into(), alone.clone())],
                &Trainable::All,
                cfg,
                host,
            )
            .unwrap();
            for k in 0..5 {
                let g = row_grads(&w, &frozen, k);
                let report = opt.step(&g, 1e-2).unwrap();
                assert_eq!((report.updated, report.without_grad.len()), (1, 0));
                let gw = g.get(w.as_tensor()).unwrap();
                let mut gr = GradStore::default();
                gr.insert(alone.as_tensor(), gather_rows(gw, &[1..2, 3..4]).unwrap());
                reference.step(&gr, 1e-2).unwrap();
            }
            let after = w.as_tensor().to_vec2::<f32>().unwrap();
            let bits = |r: &[f32]| r.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            for r in [0, 2] {
                assert_eq!(
                    bits(&after[r]),
                    bits(&before[r]),
                    "frozen row {r} (host {host})"
                );
            }
            assert_eq!(values(&frozen), vec![1.0, -2.0]);
            let want = alone.as_tensor().to_vec2::<f32>().unwrap();
            assert_ne!(after[1], before[1]);
            assert_eq!(bits(&after[1]), bits(&want[0]), "host {host}");
            assert_eq!(bits(&after[3]), bits(&want[1]), "host {host}");
        }
    }

    #[test]
    fn grad_norm_counts_trainable_rows_only() {
        let (w, frozen, opt) = rows_setup(true, 0.0);
        let mut g = GradStore::default();
        let gw = Tensor::new(
            &[[9f32, 9., 9.], [3., 0., 0.], [9., 9., 9.], [0., 4., 0.]],
            &Device::Cpu,
        )
        .unwrap();
        g.insert(w.as_tensor(), gw);
        g.insert(
            frozen.as_tensor(),
            Tensor::new(&[100f32, 100.], &Device::Cpu).unwrap(),
        );
        assert_eq!(opt.grad_norm(&g).unwrap(), 5.0);
        assert_eq!(opt.clip_grad_norm(&mut g, 1.0).unwrap(), 5.0);
        assert!((opt.grad_norm(&g).unwrap() - 1.0).abs() < 1e-6);
        // Everything trainable: the same as the free function over the same parameters.
        let all = AdamW::new(vec![("w".into(), w.clone())], AdamWConfig::default()).unwrap();
        let named = vec![("w".to_string(), w.clone())];
        assert_eq!(all.grad_norm(&g).unwrap(), grad_norm(&named, &g).unwrap());
    }

    #[test]
    fn trainable_names_are_checked() {
        let t = Trainable::names(["nope"]);
        let e = AdamW::with_trainable(vec![("w".into(), var(&[1.0]))], &t, AdamWConfig::default());
        assert!(format!("{:#}", e.err().unwrap()).contains("`nope`"));
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
