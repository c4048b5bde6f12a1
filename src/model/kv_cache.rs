//! Key/value cache for generation, kept outside the model (llama.rs style).
//!
//! Buffers are preallocated per layer as (B, Hkv, capacity, D) and filled in place, so a decode
//! step costs no copy of the past. Slots are shared by all rows; which slots hold real tokens is
//! tracked per row (`valid`), so left-padded ragged prompts decode together with exact positions.
//! Rows that finish are dropped in place ([`KvCache::retain_rows`]): the live rows are the first
//! `rows` of each buffer, so dropping one moves one row instead of reallocating the whole cache.
//! Beam search reorders rows in place ([`KvCache::reorder_rows`]: a beam continues from any
//! parent, possibly several beams from one), within the rows allocated up front
//! ([`KvCache::select_rows_into`]).

use candle_core::{DType, Device, Result, Tensor};

pub struct KvCache {
    k: Vec<Tensor>, // per layer (B, Hkv, cap, D); rows ≥ `rows` are stale
    v: Vec<Tensor>,
    rows: usize,
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
            rows: batch,
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
        // The first `rows` rows of a contiguous buffer are contiguous: written in place.
        let kb = self.k[layer].narrow(0, 0, self.rows)?; // (rows, Hkv, cap, D)
        let vb = self.v[layer].narrow(0, 0, self.rows)?;
        kb.slice_set(k, 2, self.len)?;
        vb.slice_set(v, 2, self.len)?;
        Ok((
            kb.narrow(2, 0, self.len + t)?,
            vb.narrow(2, 0, self.len + t)?,
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

    /// Live rows.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Keep the rows whose flag is set and drop the others, in place. A dropped row's slot is
    /// refilled by a live row from the end, so the cost is one row copy per dropped row (not a
    /// new cache). Returns the new order: new row i is old row `order[i]`.
    pub fn retain_rows(&mut self, keep: &[bool]) -> Result<Vec<usize>> {
        if keep.len() != self.rows {
            candle_core::bail!("retain_rows: {} flags for {} rows", keep.len(), self.rows);
        }
        let n = keep.iter().filter(|&&k| k).count();
        // As many live rows sit at or above n as there are dropped rows below it.
        let mut movers = (n..self.rows).filter(|&r| keep[r]);
        let mut order: Vec<usize> = (0..n).collect();
        for (i, slot) in order.iter_mut().enumerate() {
            if keep[i] {
                continue;
            }
            let Some(src) = movers.next() else {
                candle_core::bail!("retain_rows: no live row left to move")
            };
            for buf in self.k.iter().chain(&self.v) {
                // slice_set refuses a source sharing the destination's storage: copy the row out.
                let row = buf.narrow(0, src, 1)?.force_contiguous()?; // (1, Hkv, cap, D)
                buf.slice_set(&row, 0, i)?;
            }
            *slot = src;
        }
        let mut old = std::mem::take(&mut self.valid);
        self.valid = order.iter().map(|&r| std::mem::take(&mut old[r])).collect();
        self.rows = n;
        Ok(order)
    }

    /// Rows allocated in the buffers (live rows can grow up to this by [`Self::reorder_rows`]).
    pub fn row_capacity(&self) -> usize {
        self.k.first().map_or(self.rows, |t| t.dims()[0])
    }

    /// New row i becomes old row `src[i]`, in place: rows may repeat or be dropped, and there may
    /// be more new rows than old ones, up to [`Self::row_capacity`]. Costs one gather and one
    /// copy of the live rows per buffer (nothing when `src` keeps a prefix in order).
    pub fn reorder_rows(&mut self, src: &[usize]) -> Result<()> {
        if src.len() > self.row_capacity() {
            candle_core::bail!(
                "reorder_rows: {} rows exceed the {} allocated",
                src.len(),
                self.row_capacity()
            );
        }
        if let Some(&r) = src.iter().find(|&&r| r >= self.rows) {
            candle_core::bail!("reorder_rows: row {r} of {}", self.rows);
        }
        let prefix = src.iter().enumerate().all(|(i, &r)| i == r);
        if let (false, Some(first)) = (prefix || src.is_empty(), self.k.first()) {
            let dev = first.device().clone();
            let idx: Vec<u32> = src.iter().map(|&r| r as u32).collect();
            let idx = Tensor::from_vec(idx, src.len(), &dev)?;
            for buf in self.k.iter().chain(&self.v) {
                // The gather reads the old rows into new storage before any is overwritten.
                let rows = buf.narrow(0, 0, self.rows)?.index_select(&idx, 0)?; // (n, Hkv, cap, D)
                buf.slice_set(&rows, 0, 0)?;
            }
        }
        self.valid = src.iter().map(|&r| self.valid[r].clone()).collect();
        self.rows = src.len();
        Ok(())
    }

    /// [`Self::select_rows`] into a cache with `row_capacity` rows allocated (≥ `rows.len()`), so
    /// that [`Self::reorder_rows`] can later grow it.
    pub fn select_rows_into(&self, rows: &[u32], row_capacity: usize) -> Result<Self> {
        let mut out = self.select_rows(rows)?;
        if row_capacity > rows.len() {
            let grow = |t: &Tensor| -> Result<Tensor> {
                let (_, h, c, d) = t.dims4()?;
                let pad =
                    Tensor::zeros((row_capacity - rows.len(), h, c, d), t.dtype(), t.device())?;
                Tensor::cat(&[t, &pad], 0) // (row_capacity, Hkv, cap, D)
            };
            out.k = out.k.iter().map(grow).collect::<Result<_>>()?;
            out.v = out.v.iter().map(grow).collect::<Result<_>>()?;
        }
        Ok(out)
    }

    /// A cache whose row i is row `rows[i]` of this one (fan a prefilled prompt out to n samples).
    pub fn select_rows(&self, rows: &[u32]) -> Result<Self> {
        if let Some(&r) = rows.iter().find(|&&r| r as usize >= self.rows) {
            candle_core::bail!("select_rows: row {r} of {}", self.rows);
        }
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
            rows: rows.len(),
            len: self.len,
            cap: self.cap,
            valid: rows
                .iter()
                .map(|&r| self.valid[r as usize].clone())
                .collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 2-layer cache of `b` rows with 3 filled slots whose values say (layer, k/v, row).
    fn filled(b: usize) -> (KvCache, Vec<Vec<Tensor>>) {
        let dev = Device::Cpu;
        let mut c = KvCache::new(2, b, 2, 5, 4, DType::F32, &dev).unwrap();
        let mut written = vec![];
        for layer in 0..2 {
            let k = Tensor::arange(0f32, (b * 2 * 3 * 5) as f32, &dev)
                .unwrap()
                .reshape((b, 2, 3, 5))
                .unwrap();
            let v = ((&k * -1.0).unwrap() + layer as f64 * 1000.0).unwrap();
            let (ka, va) = c.append(layer, &k, &v).unwrap();
            assert_eq!(ka.dims(), [b, 2, 3, 5]);
            written.push(vec![ka.contiguous().unwrap(), va.contiguous().unwrap()]);
        }
        c.advance(3);
        let flags: Vec<Vec<bool>> = (0..b).map(|r| vec![r % 2 == 0, true, true]).collect();
        c.push_valid(&flags);
        (c, written)
    }

    #[test]
    fn retain_rows_keeps_live_rows_in_place_and_appends_after() {
        let (mut c, written) = filled(5);
        let keep = [false, true, false, true, true];
        let order = c.retain_rows(&keep).unwrap();
        // Dropped slots 0 and 2 are refilled from the end (rows 3 and 4); row 1 stays.
        assert_eq!(order, vec![3, 1, 4]);
        assert_eq!(c.rows(), 3);
        let idx = Tensor::new(&[3u32, 1, 4], &Device::Cpu).unwrap();
        for (layer, kv) in written.iter().enumerate() {
            // Appending one more slot returns the retained rows' past plus the new slot.
            let k1 = Tensor::ones((3, 2, 1, 5), DType::F32, &Device::Cpu).unwrap();
            let (ka, va) = c.append(layer, &k1, &k1).unwrap();
            assert_eq!(ka.dims(), [3, 2, 4, 5]);
            for (got, want) in [(ka, &kv[0]), (va, &kv[1])] {
                let want = want.index_select(&idx, 0).unwrap();
                let past = got.narrow(2, 0, 3).unwrap();
                let diff = (past - want).unwrap().abs().unwrap().max_all().unwrap();
                assert_eq!(diff.to_scalar::<f32>().unwrap(), 0.0);
                let new = got.narrow(2, 3, 1).unwrap().sum_all().unwrap();
                assert_eq!(new.to_scalar::<f32>().unwrap(), 3.0 * 2.0 * 5.0);
            }
        }
        assert_eq!(
            c.valid,
            vec![
                vec![false, true, true],
                vec![false, true, true],
                vec![true, true, true]
            ]
        );
        // Row selection (fan-out) reads live rows only.
        assert!(c.select_rows(&[3]).is_err());
        assert_eq!(c.select_rows(&[2, 2]).unwrap().rows(), 2);
    }

    #[test]
    fn reorder_rows_repeats_drops_and_grows() {
        let (c0, written) = filled(3);
        let mut c = c0.select_rows_into(&[0, 1, 2], 5).unwrap();
        assert_eq!((c.rows(), c.row_capacity()), (3, 5));
        // Grow to 5 rows, repeating and permuting: new i = old src[i].
        let src = [2usize, 0, 2, 1, 0];
        c.reorder_rows(&src).unwrap();
        assert_eq!(c.rows(), 5);
        let want_valid: Vec<Vec<bool>> = src.iter().map(|&r| c0.valid[r].clone()).collect();
        assert_eq!(c.valid, want_valid);
        let idx = Tensor::new(&[2u32, 0, 2, 1, 0], &Device::Cpu).unwrap();
        for (layer, kv) in written.iter().enumerate() {
            let k1 = Tensor::zeros((5, 2, 1, 5), DType::F32, &Device::Cpu).unwrap();
            let (ka, va) = c.append(layer, &k1, &k1).unwrap();
            for (got, want) in [(ka, &kv[0]), (va, &kv[1])] {
                let want = want.index_select(&idx, 0).unwrap();
                let past = got.narrow(2, 0, 3).unwrap();
                let diff = (past - want).unwrap().abs().unwrap().max_all().unwrap();
                assert_eq!(diff.to_scalar::<f32>().unwrap(), 0.0);
            }
        }
        // Shrink to a prefix (no copy), then errors.
        c.reorder_rows(&[0, 1]).unwrap();
        assert_eq!(c.rows(), 2);
        assert!(c.reorder_rows(&[2]).is_err());
        assert!(c.reorder_rows(&[0; 6]).is_err());
    }

    #[test]
    fn retain_rows_edge_cases() {
        let (mut c, _) = filled(3);
        assert_eq!(c.retain_rows(&[true, true, true]).unwrap(), vec![0, 1, 2]);
        assert!(c.retain_rows(&[true]).is_err());
        assert_eq!(
            c.retain_rows(&[false, false, false]).unwrap(),
            Vec::<usize>::new()
        );
        assert_eq!(c.rows(), 0);
    }
}
