//! Parameter store: the model's weights as named candle `Var`s under their HF names.
//!
//! One store serves both paths: the trainable forward reads the `Var`s (gradients flow), the
//! rollout path reads detached views of the same storage (no autograd graph is kept, and the
//! optimizer's in-place updates are seen at once without copying).

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor, Var};

use super::lora::Lora;

#[derive(Clone)]
pub struct Params {
    /// Names in a stable order (the order the loader produced, sorted), for optimizers and saving.
    names: Vec<String>,
    vars: HashMap<String, Var>,
    /// The dtype forwards compute in (bf16 on CUDA over f32 master weights); defaults to the
    /// variables' own.
    compute_dtype: Option<DType>,
    /// The LoRA adapter these weights carry (its tensors are among `vars`), if any.
    lora: Option<Arc<Lora>>,
}

impl Params {
    pub fn from_tensors(tensors: Vec<(String, Tensor)>) -> Result<Self> {
        let mut names = Vec::with_capacity(tensors.len());
        let mut vars = HashMap::with_capacity(tensors.len());
        for (name, t) in tensors {
            if vars.contains_key(&name) {
                bail!("duplicate weight `{name}`");
            }
            vars.insert(name.clone(), Var::from_tensor(&t)?);
            names.push(name);
        }
        names.sort();
        Ok(Self {
            names,
            vars,
            compute_dtype: None,
            lora: None,
        })
    }

    pub fn names(&self) -> &[String] {
        &self.names
    }

    pub fn contains(&self, name: &str) -> bool {
        self.vars.contains_key(name)
    }

    pub fn var(&self, name: &str) -> Result<&Var> {
        self.vars
            .get(name)
            .with_context(|| format!("weight `{name}` not found in the checkpoint"))
    }

    /// All (name, var) pairs in stable order.
    pub fn named_vars(&self) -> Vec<(String, Var)> {
        self.names
            .iter()
            .map(|n| (n.clone(), self.vars[n].clone()))
            .collect()
    }

    pub fn num_elements(&self) -> usize {
        self.vars.values().map(|v| v.elem_count()).sum()
    }

    pub fn dtype(&self) -> DType {
        self.vars
            .values()
            .next()
            .map(|v| v.dtype())
            .unwrap_or(DType::F32)
    }

    /// Forwards cast the weights to `dtype` (the variables, and so the optimizer, stay as they are).
    pub fn with_compute_dtype(mut self, dtype: DType) -> Self {
        self.compute_dtype = Some(dtype);
        self
    }

    pub fn compute_dtype(&self) -> DType {
        self.compute_dtype.unwrap_or_else(|| self.dtype())
    }

    pub fn device(&self) -> Device {
        self.vars
            .values()
            .next()
            .map(|v| v.device().clone())
            .unwrap_or(Device::Cpu)
    }

    /// Replaces the weight `name` by a new variable holding `t` (e.g. a resized embedding); its
    /// shape may differ. Decoders and optimizers built before hold the old variable, so build them
    /// after any replacement.
    pub fn replace(&mut self, name: &str, t: &Tensor) -> Result<()> {
        let slot = self
            .vars
            .get_mut(name)
            .with_context(|| format!("weight `{name}` not found in the checkpoint"))?;
        // `detach` so that a tensor which is itself a variable is copied, never shared.
        *slot = Var::from_tensor(&t.detach())?;
        Ok(())
    }

    /// Adds a new weight `name` holding a copy of `t` (e.g. an adapter tensor).
    pub fn insert(&mut self, name: &str, t: &Tensor) -> Result<()> {
        if self.vars.contains_key(name) {
            bail!("duplicate weight `{name}`");
        }
        self.vars
            .insert(name.to_string(), Var::from_tensor(&t.detach())?);
        let at = self.names.partition_point(|n| n.as_str() < name);
        self.names.insert(at, name.to_string());
        Ok(())
    }

    /// The LoRA adapter these weights carry.
    pub fn lora(&self) -> Option<Arc<Lora>> {
        self.lora.clone()
    }

    pub fn set_lora(&mut self, lora: Option<Arc<Lora>>) {
        self.lora = lora;
    }

    /// The base model without its adapter, as it is now: the adapter tensors dropped, the frozen
    /// weights shared (no copy), the `modules_to_save` tensors copied (they train on). The KL
    /// reference of a LoRA run, and the start of a merge.
    pub fn base_only(&self) -> Result<Self> {
        let Some(lora) = &self.lora else {
            return Ok(self.clone());
        };
        let mut out = self.clone();
        out.lora = None;
        out.names.retain(|n| !super::lora::is_adapter(n));
        out.vars.retain(|n, _| !super::lora::is_adapter(n));
        for name in &lora.modules_to_save {
            let t = self.var(name)?.as_tensor().copy()?;
            out.replace(name, &t)?;
        }
        Ok(out)
    }

    /// A deep copy (new storage): a frozen reference model or a snapshot for tests.
    pub fn deep_clone(&self) -> Result<Self> {
        let tensors = self
            .named_vars()
            .into_iter()
            .map(|(n, v)| Ok((n, v.as_tensor().copy()?)))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            compute_dtype: self.compute_dtype,
            lora: self.lora.clone(),
            ..Self::from_tensors(tensors)?
        })
    }
}
