//! Key/value cache for generation, kept outside the model (llama.rs style).
//!
//! Buffers are preallocated per layer as (B, Hkv, capacity, D) and filled in place, so a decode
//! step costs no copy of the past. Slots are shared by all rows; which slots hold real tokens is
//! tracked per row (`valid`), so left-padded ragged prompts decode together with exact positions.

use candle_core::{DType, Device, Result, Tensor};

pub struct KvCache {
    k: Vec<Tensor>, // per layer (B, Hkv, cap, D)
    v: Vec<Tensor>,
    len: usize,
    cap: usize,
    /// Per row, per slot: whether the slot holds a real token (false for padding).
    pub valid: Vec<Vec<bool>>,
}

impl KvCache {
    pub fn new(
        layers: usize,
        batch: usize,
        kv_heads: usize,
        head_dim: usize,
        capacity: usize,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        let mk = || Tensor::zeros((batch, kv_heads, capacity, head_dim), dtype, device);
        Ok(Self {
            k: (0..layers).map(|_| mk()).collect::<Result<_>>()?,
            v: (0..layers).map(|_| mk()).collect::<Result<_>>()?,
            len: 0,
            cap: capacity,
            valid: vec![Vec::new(); batch],
        })
    }

    /// Slots filled so far (the same for every row).
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn capacity(&self) -> usize {
        self.cap
    }

    /// Write this call's k/v (B, Hkv, T, D) after the filled slots of layer `layer` and return
    /// views over all filled slots (B, Hkv, len+T, D). `advance` commits the length once every
    /// layer has appended.
    pub fn append(&mut self, layer: usize, k: &Tensor, v: &Tensor) -> Result<(Tensor, Tensor)> {
        let t = k.dim(2)?;
        if self.len + t > self.cap {
            candle_core::bail!(
                "kv cache capacity {} exceeded ({} + {t})",
                self.cap,
                self.len
            );
        }
        self.k[layer].slice_set(k, 2, self.len)?;
        self.v[layer].slice_set(v, 2, self.len)?;
        Ok((
            self.k[layer].narrow(2, 0, self.len + t)?,
            self.v[layer].narrow(2, 0, self.len + t)?,
        ))
    }

    pub fn advance(&mut self, t: usize) {
        self.len += t;
    }

    /// Record which of the `t` slots just fed are real tokens, per row.
    pub fn push_valid(&mut self, new: &[Vec<bool>]) {
        for (row, flags) in self.valid.iter_mut().zip(new) {
            row.extend_from_slice(flags);
        }
    }

    /// A cache whose row i is row `rows[i]` of this one (fan a prefilled prompt out to n samples).
    pub fn select_rows(&self, rows: &[u32]) -> Result<Self> {
        let dev = self
            .k
            .first()
            .map(|t| t.device().clone())
            .unwrap_or(Device::Cpu);
        let idx = Tensor::from_vec(rows.to_vec(), rows.len(), &dev)?;
        Ok(Self {
            k: self
                .k
                .iter()
                .map(|t| t.index_select(&idx, 0))
                .collect::<Result<_>>()?,
            v: self
                .v
                .iter()
                .map(|t| t.index_select(&idx, 0))
                .collect::<Result<_>>()?,
            len: self.len,
            cap: self.cap,
            valid: rows
                .iter()
                .map(|&r| self.valid[r as usize].clone())
                .collect(),
        })
    }
}
