//! Gradient norm and clipping.

use candle_core::backend::BackendStorage as _;
use candle_core::backprop::GradStore;
use candle_core::{CpuStorage, DType, InplaceOp1, Layout, Storage, Tensor, Var};
use candle_core::{Error, Result};
use rayon::prelude::*;

use super::kernel::contiguous_range;
use super::{AdamW, CHUNK};

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
    scale_to(params, grads, norm, max_norm)?;
    Ok(norm)
}

impl AdamW {
    /// Global L2 norm of the gradients over what this optimizer trains: frozen parameters and
    /// frozen rows do not count (with everything trainable, [`grad_norm`] of the same parameters).
    pub fn grad_norm(&self, grads: &GradStore) -> Result<f64> {
        let mut sum_sq = 0f64;
        for ((_, var), st) in self.params.iter().zip(&self.state) {
            let Some(g) = grads.get(var.as_tensor()) else {
                continue;
            };
            match &st.rows {
                None => sum_sq += sum_sq_of(g)?,
                Some(rows) => {
                    for r in rows {
                        sum_sq += sum_sq_of(&g.narrow(0, r.start, r.len())?)?;
                    }
                }
            }
        }
        Ok(sum_sq.sqrt())
    }

    /// [`clip_grad_norm`] over what this optimizer trains (see [`AdamW::grad_norm`]); the
    /// gradients of its parameters are scaled whole (frozen rows are ignored by the step anyway).
    pub fn clip_grad_norm(&self, grads: &mut GradStore, max_norm: f64) -> Result<f64> {
        let norm = self.grad_norm(grads)?;
        scale_to(&self.params, grads, norm, max_norm)?;
        Ok(norm)
    }
}

/// Scales the gradients of `params` by `max_norm / (norm + 1e-6)` when `norm` is above `max_norm`.
fn scale_to(
    params: &[(String, Var)],
    grads: &mut GradStore,
    norm: f64,
    max_norm: f64,
) -> Result<()> {
    if !(norm.is_finite() && max_norm > 0.0 && max_norm.is_finite()) {
        return Ok(());
    }
    let coef = max_norm / (norm + 1e-6);
    if coef >= 1.0 {
        return Ok(());
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
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::optim::test_util::{assert_close, grads, var};
    use candle_core::Device;

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
}
