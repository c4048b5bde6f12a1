//! Saving and restoring the AdamW state as a safetensors file.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use anyhow::{bail, ensure, Context as _};
use candle_core::Tensor;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::{AdamW, AdamWConfig, Moments, CHUNK};

/// Identifies our optimizer-state files (safetensors metadata key `format`).
const STATE_FORMAT: &str = "llmrl.adamw";
const STATE_VERSION: u32 = 1;

impl AdamW {
    /// Writes the state to a safetensors file: `{name}.exp_avg` and `{name}.exp_avg_sq` (f32, the
    /// parameter's shape, or its trainable rows' when only some rows train) per parameter, and JSON metadata with the step counts and config.
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
                    rows: st
                        .rows
                        .as_ref()
                        .map(|rs| rs.iter().map(|r| [r.start, r.end]).collect()),
                })
                .collect(),
        };
        let mut tensors = Vec::with_capacity(2 * self.params.len());
        for ((name, var), st) in self.params.iter().zip(&self.state) {
            let shape = st.moment_dims(var.dims());
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
        for ((name, var), ours) in self.params.iter().zip(&self.state) {
            let pm = saved[name.as_str()];
            ensure!(
                pm.shape == var.dims(),
                "{}: `{name}` was saved with shape {:?}, the model has {:?}; hint: the checkpoint is for another model size",
                ctx(),
                pm.shape,
                var.dims()
            );
            let our_rows: Option<Vec<[usize; 2]>> = ours
                .rows
                .as_ref()
                .map(|rs| rs.iter().map(|r| [r.start, r.end]).collect());
            ensure!(
                pm.rows == our_rows,
                "{}: `{name}` was saved training rows {:?}, this run trains {:?}; hint: resume with the checkpoint's trainable-parameter settings",
                ctx(),
                pm.rows,
                our_rows
            );
            let dims = ours.moment_dims(var.dims());
            let read = |suffix: &str| -> anyhow::Result<&[u8]> {
                let key = format!("{name}.{suffix}");
                let t = st
                    .tensor(&key)
                    .map_err(|e| anyhow::anyhow!("{key}: {e:?}"))
                    .with_context(ctx)?;
                ensure!(
                    t.dtype() == safetensors::Dtype::F32 && t.shape() == dims.as_slice(),
                    "{}: tensor {key} is {:?} {:?}, expected F32 {:?}",
                    ctx(),
                    t.dtype(),
                    t.shape(),
                    dims
                );
                Ok(t.data())
            };
            staged.push((pm.step, read("exp_avg")?, read("exp_avg_sq")?));
        }
        for (((_, var), st), (step, m_bytes, v_bytes)) in
            self.params.iter().zip(self.state.iter_mut()).zip(staged)
        {
            st.step = step;
            let dims = st.moment_dims(var.dims());
            match &mut st.moments {
                Moments::Host { m, v } => {
                    fill_f32(m, m_bytes);
                    fill_f32(v, v_bytes);
                }
                Moments::Device { m, v } => {
                    let mut buf = vec![0f32; dims.iter().product()];
                    fill_f32(&mut buf, m_bytes);
                    *m = Tensor::from_slice(&buf, dims.as_slice(), var.device())?;
                    fill_f32(&mut buf, v_bytes);
                    *v = Tensor::from_slice(&buf, dims.as_slice(), var.device())?;
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
    /// Trainable rows `[start, end)` when only some rows train (absent: the whole tensor, and
    /// files from before trainable subsets).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    rows: Option<Vec<[usize; 2]>>,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::optim::test_util::{grads, values, var, P0};
    use candle_core::Var;

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
    #[allow(clippy::single_range_in_vec_init)]
    fn row_subset_state_round_trips_and_must_match() {
        use crate::model::trainable::{Part, Trainable};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("opt.safetensors");
        let mk = |rows: Vec<std::ops::Range<usize>>| {
            let w = Var::from_tensor(
                &candle_core::Tensor::arange(0f32, 8., &candle_core::Device::Cpu)
                    .unwrap()
                    .reshape((4, 2))
                    .unwrap(),
            )
            .unwrap();
            let t = Trainable::Only([("w".to_string(), Part::rows(rows))].into_iter().collect());
            let opt =
                AdamW::with_trainable(vec![("w".into(), w.clone())], &t, AdamWConfig::default())
                    .unwrap();
            (w, opt)
        };
        let g = |w: &Var| {
            let mut g = candle_core::backprop::GradStore::default();
            g.insert(w.as_tensor(), w.as_tensor().ones_like().unwrap());
            g
        };
        let (w, mut opt) = mk(vec![2..4]);
        opt.step(&g(&w), 0.1).unwrap();
        opt.save(&path).unwrap();
        let (w2, mut resumed) = mk(vec![2..4]);
        w2.set(w.as_tensor()).unwrap();
        resumed.load(&path).unwrap();
        opt.step(&g(&w), 0.1).unwrap();
        resumed.step(&g(&w2), 0.1).unwrap();
        let flat = |w: &Var| {
            w.as_tensor()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
        };
        assert_eq!(flat(&w), flat(&w2));
        let (_, mut other) = mk(vec![1..4]);
        let e = format!("{:#}", other.load(&path).unwrap_err());
        assert!(e.contains("rows") && e.contains("hint"), "{e}");
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
}
