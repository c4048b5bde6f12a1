//! RQ-VAE (TIGER, arXiv:2305.05065; as LC-Rec and MiniOneRec train it), in candle with our AdamW.
//!
//! An MLP encoder maps x to a latent z; L codebooks of K vectors quantize it residually
//! (r₀ = z, z_l = argmin_k ‖r_l − e_{l,k}‖, r_{l+1} = r_l − e_{l,z_l}); an MLP decoder maps
//! ẑ = Σ_l e_{l,z_l} back to x̂. Loss, as LC-Rec's `rq.py`/`vq.py`:
//! `MSE(x̂, x) + mean_l [MSE(e_l, sg r_l) + β·MSE(r_l, sg e_l)]`, β = 0.25, with the
//! straight-through estimator (the decoder reads z + sg(ẑ − z), so the reconstruction's gradient
//! reaches the encoder unchanged). As LC-Rec the residual chain carries no gradient: only r₀ = z
//! is committed to the encoder.
//!
//! Default sizes are TIGER's (`rqvae_amazon.gin`, Botta's re-implementation): encoder
//! dim → 512 → 256 → 128 → latent 32, ReLU between layers, decoder mirrored. MiniOneRec's
//! 2048 … 64 → 32 suits its 2560–4096-d LLM embeddings, not MiniLM's 384. Codebooks are
//! k-means-initialised on the first batch's latents, level by level (LC-Rec `kmeans_init`).
//! A code no item used in an epoch is moved onto the residual its level quantizes worst (the
//! simple form of MiniOneRec's dead-code recovery, `rq/CODEBOOK_BALANCE.md`); off with
//! `reset_dead_codes = false`. Final codes are the plain argmin (no Sinkhorn: that belongs to
//! collision handling, `collisions.rs`).
//!
//! Everything random (weights, k-means seeds, batch order) comes from `seed`.

use std::time::Instant;

use anyhow::{ensure, Result};
use candle_core::{DType, Device, Tensor, Var, D};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use super::kmeans::{kmeans, KMeansConfig};
use super::{Quantized, TrainingLog};
use crate::optim::{AdamW, AdamWConfig};
use crate::progress::Reporter;

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RqVaeConfig {
    /// Codes per level.
    pub sizes: Vec<usize>,
    /// Encoder hidden widths (the decoder mirrors them).
    pub hidden: Vec<usize>,
    /// Latent (and codebook vector) width.
    pub latent: usize,
    /// Commitment weight.
    pub beta: f64,
    pub learning_rate: f64,
    pub weight_decay: f64,
    pub epochs: usize,
    pub batch_size: usize,
    /// Lloyd iterations of the codebooks' k-means initialisation.
    pub kmeans_iters: usize,
    pub reset_dead_codes: bool,
    pub seed: u64,
}

impl Default for RqVaeConfig {
    /// TIGER's architecture and β; MiniOneRec's AdamW lr 1e-3 without weight decay; 3 × 256;
    /// 200 epochs of batch 1024 (about a minute for MovieLens-100K's 1682 × 384 on 2 cores).
    fn default() -> Self {
        Self {
            sizes: vec![256; 3],
            hidden: vec![512, 256, 128],
            latent: 32,
            beta: 0.25,
            learning_rate: 1e-3,
            weight_decay: 0.0,
            epochs: 200,
            batch_size: 1024,
            kmeans_iters: 100,
            reset_dead_codes: true,
            seed: 0,
        }
    }
}

impl RqVaeConfig {
    pub fn validate(&self) -> Result<()> {
        ensure!(
            !self.sizes.is_empty() && self.sizes.iter().all(|&k| k >= 1),
            "rq-vae: every level needs ≥ 1 code"
        );
        ensure!(
            self.latent >= 1 && self.hidden.iter().all(|&h| h >= 1),
            "rq-vae: layer widths must be ≥ 1"
        );
        ensure!(self.epochs >= 1, "rq-vae: epochs must be ≥ 1");
        ensure!(self.batch_size >= 1, "rq-vae: batch size must be ≥ 1");
        ensure!(
            self.learning_rate > 0.0 && self.learning_rate.is_finite(),
            "rq-vae: learning rate must be positive"
        );
        ensure!(
            self.beta >= 0.0 && self.beta.is_finite(),
            "rq-vae: beta must be ≥ 0"
        );
        Ok(())
    }
}

/// Linear layers; ReLU after all but the last.
struct Mlp {
    layers: Vec<(Var, Var)>,
}

impl Mlp {
    /// torch's `Linear` initialisation: weight and bias uniform on ±1/√fan_in.
    fn new(
        widths: &[usize],
        name: &str,
        rng: &mut ChaCha8Rng,
        params: &mut Vec<(String, Var)>,
    ) -> Result<Self> {
        let mut layers = Vec::new();
        for (i, w) in widths.windows(2).enumerate() {
            let (fan_in, fan_out) = (w[0], w[1]);
            let bound = 1.0 / (fan_in as f32).sqrt();
            let mut draw = |len: usize| -> Vec<f32> {
                (0..len).map(|_| rng.random_range(-bound..bound)).collect()
            };
            let weight = Var::from_tensor(&Tensor::from_vec(
                draw(fan_in * fan_out),
                (fan_out, fan_in),
                &Device::Cpu,
            )?)?;
            let bias = Var::from_tensor(&Tensor::from_vec(draw(fan_out), fan_out, &Device::Cpu)?)?;
            params.push((format!("{name}.{i}.weight"), weight.clone()));
            params.push((format!("{name}.{i}.bias"), bias.clone()));
            layers.push((weight, bias));
        }
        Ok(Self { layers })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut h = x.clone();
        for (i, (w, b)) in self.layers.iter().enumerate() {
            h = h
                .matmul(&w.as_tensor().t()?)?
                .broadcast_add(b.as_tensor())?; // [b, out]
            if i + 1 < self.layers.len() {
                h = h.relu()?;
            }
        }
        Ok(h)
    }
}

struct Model {
    enc: Mlp,
    dec: Mlp,
    /// `[K_l, latent]` each.
    codebooks: Vec<Var>,
    params: Vec<(String, Var)>,
}

/// One batch through the quantizer: per level the codes, residual entering it (detached) and
/// the codebook rows picked (with gradient to the codebook).
struct Quant {
    codes: Vec<Vec<u32>>,
    residuals: Vec<Tensor>,
    picked: Vec<Tensor>,
}

/// Nearest codebook row of each residual row: `[b]` u32.
fn nearest(r: &Tensor, e: &Tensor) -> Result<Tensor> {
    let r2 = r.sqr()?.sum_keepdim(1)?; // [b, 1]
    let e2 = e.sqr()?.sum_keepdim(1)?.t()?; // [1, K]
    let d = r
        .matmul(&e.t()?)?
        .affine(-2.0, 0.0)?
        .broadcast_add(&r2)?
        .broadcast_add(&e2)?; // [b, K]
    Ok(d.argmin_keepdim(D::Minus1)?.squeeze(D::Minus1)?)
}

impl Model {
    fn quantize(&self, z: &Tensor) -> Result<Quant> {
        let mut r = z.detach();
        let mut q = Quant {
            codes: Vec::new(),
            residuals: Vec::new(),
            picked: Vec::new(),
        };
        for cb in &self.codebooks {
            let idx = nearest(&r, &cb.as_tensor().detach())?; // [b]
            let e = cb.as_tensor().index_select(&idx, 0)?; // [b, latent]
            q.codes.push(idx.to_vec1::<u32>()?);
            q.residuals.push(r.clone());
            r = (&r - e.detach())?;
            q.picked.push(e);
        }
        Ok(q)
    }

    /// (total loss, reconstruction MSE, quantization) of a batch `[b, dim]`.
    fn loss(&self, x: &Tensor, beta: f64) -> Result<(Tensor, Tensor, Quant)> {
        let z = self.enc.forward(x)?; // [b, latent]
        let q = self.quantize(&z)?;
        let mut quant_loss = Vec::new();
        let mut zhat = z.zeros_like()?;
        for (l, (r, e)) in q.residuals.iter().zip(&q.picked).enumerate() {
            // Level 0's residual is z itself: the only commitment the encoder feels.
            let r_in = if l == 0 { z.clone() } else { r.clone() };
            let codebook = (e - r_in.detach())?.sqr()?.mean_all()?;
            let commit = (&r_in - e.detach())?.sqr()?.mean_all()?;
            quant_loss.push((codebook + commit.affine(beta, 0.0)?)?);
            zhat = (zhat + e.detach())?;
        }
        let quant = (Tensor::stack(&quant_loss, 0)?.mean_all())?;
        let st = (&z + (zhat - &z)?.detach())?; // straight-through: value ẑ, gradient to z
        let recon = (self.dec.forward(&st)? - x)?.sqr()?.mean_all()?;
        Ok(((&recon + quant)?, recon, q))
    }
}

/// Trains on the `[n, dim]` rows of `data` and codes every row.
pub fn rq_vae(
    data: &[f32],
    dim: usize,
    cfg: &RqVaeConfig,
    rep: &dyn Reporter,
) -> Result<Quantized> {
    cfg.validate()?;
    let n = data.len() / dim;
    let t0 = Instant::now();
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    let mut params = Vec::new();
    let mut widths = vec![dim];
    widths.extend(&cfg.hidden);
    widths.push(cfg.latent);
    let enc = Mlp::new(&widths, "encoder", &mut rng, &mut params)?;
    widths.reverse();
    let dec = Mlp::new(&widths, "decoder", &mut rng, &mut params)?;
    let mut codebooks = Vec::new();
    for (l, &k) in cfg.sizes.iter().enumerate() {
        let v = Var::zeros((k, cfg.latent), DType::F32, &Device::Cpu)?;
        params.push((format!("codebook.{l}"), v.clone()));
        codebooks.push(v);
    }
    let model = Model {
        enc,
        dec,
        codebooks,
        params,
    };
    let mut opt = AdamW::new(
        model.params.clone(),
        AdamWConfig {
            weight_decay: cfg.weight_decay,
            ..AdamWConfig::default()
        },
    )?;
    let all = Tensor::from_slice(data, (n, dim), &Device::Cpu)?;
    let mut order: Vec<u32> = (0..n as u32).collect();
    let mut log = TrainingLog {
        epochs: cfg.epochs,
        ..TrainingLog::default()
    };
    let mut initialised = false;
    rep.begin("rq-vae", cfg.epochs as u64, 0);
    for epoch in 0..cfg.epochs {
        for i in (1..order.len()).rev() {
            order.swap(i, rng.random_range(0..=i));
        }
        let mut used: Vec<Vec<bool>> = cfg.sizes.iter().map(|&k| vec![false; k]).collect();
        let (mut sum_loss, mut sum_recon, mut batches) = (0.0, 0.0, 0usize);
        let mut last = None;
        for chunk in order.chunks(cfg.batch_size) {
            let x = all.index_select(&Tensor::from_slice(chunk, chunk.len(), &Device::Cpu)?, 0)?; // [b, dim]
            if !initialised {
                init_codebooks(&model, &x, cfg)?;
                initialised = true;
            }
            let (loss, recon, q) = model.loss(&x, cfg.beta)?;
            let grads = loss.backward()?;
            opt.step(&grads, cfg.learning_rate)?;
            sum_loss += loss.to_scalar::<f32>()? as f64;
            sum_recon += recon.to_scalar::<f32>()? as f64;
            batches += 1;
            for (u, c) in used.iter_mut().zip(&q.codes) {
                for &k in c {
                    u[k as usize] = true;
                }
            }
            last = Some(q);
        }
        log.steps += batches;
        log.loss.push(sum_loss / batches as f64);
        log.reconstruction.push(sum_recon / batches as f64);
        if cfg.reset_dead_codes && epoch + 1 < cfg.epochs {
            if let Some(q) = &last {
                log.dead_code_resets += reset_dead(&model, q, &used)?;
            }
        }
        rep.progress(
            epoch as u64 + 1,
            &[
                ("loss", sum_loss / batches as f64),
                ("recon", sum_recon / batches as f64),
            ],
        );
    }
    rep.end();
    log.seconds = t0.elapsed().as_secs_f64();
    encode_all(&model, &all, cfg, log)
}

/// k-means of the first batch's latents, level by level on the residuals (LC-Rec).
fn init_codebooks(model: &Model, x: &Tensor, cfg: &RqVaeConfig) -> Result<()> {
    let z = model.enc.forward(x)?.detach();
    let e = cfg.latent;
    let mut r: Vec<f32> = z.flatten_all()?.to_vec1()?;
    for (l, (cb, &k)) in model.codebooks.iter().zip(&cfg.sizes).enumerate() {
        let c = kmeans(
            &r,
            e,
            &KMeansConfig {
                k,
                max_iter: cfg.kmeans_iters,
                balanced: false,
                seed: cfg.seed.wrapping_add(1000 + l as u64),
            },
        );
        cb.set(&Tensor::from_slice(&c.centroids, (k, e), &Device::Cpu)?)?;
        for (row, &a) in r.chunks_exact_mut(e).zip(&c.assign) {
            for (v, &m) in row.iter_mut().zip(c.centroid(a as usize, e)) {
                *v -= m;
            }
        }
    }
    Ok(())
}

/// Moves the codes of each level no item used this epoch onto the residuals of the last batch
/// that the level quantized worst (one residual per dead code, worst first). Returns how many.
fn reset_dead(model: &Model, q: &Quant, used: &[Vec<bool>]) -> Result<usize> {
    let mut resets = 0;
    for (l, cb) in model.codebooks.iter().enumerate() {
        let dead: Vec<usize> = (0..used[l].len()).filter(|&k| !used[l][k]).collect();
        if dead.is_empty() {
            continue;
        }
        let r: Vec<Vec<f32>> = q.residuals[l].to_vec2()?;
        let e: Vec<Vec<f32>> = q.picked[l].detach().to_vec2()?;
        let mut err: Vec<(f32, usize)> = r
            .iter()
            .zip(&e)
            .enumerate()
            .map(|(i, (a, b))| (super::kmeans::sq_dist(a, b), i))
            .collect();
        err.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        let mut book: Vec<Vec<f32>> = cb.as_tensor().to_vec2()?;
        for (&k, &(_, i)) in dead.iter().zip(&err) {
            book[k] = r[i].clone();
            resets += 1;
        }
        let (rows, cols) = (book.len(), book[0].len());
        cb.set(&Tensor::from_vec(
            book.concat(),
            (rows, cols),
            &Device::Cpu,
        )?)?;
    }
    Ok(resets)
}

/// Codes of every item, the reconstruction error through the decoder, and what collision
/// handling needs (last residual and codebook).
fn encode_all(
    model: &Model,
    all: &Tensor,
    cfg: &RqVaeConfig,
    log: TrainingLog,
) -> Result<Quantized> {
    let (n, dim) = all.dims2()?;
    let levels = cfg.sizes.len();
    let mut codes = vec![Vec::with_capacity(levels); n];
    let mut last_residual = Vec::with_capacity(n * cfg.latent);
    let (mut sq, mut norm) = (0f64, 0f64);
    for start in (0..n).step_by(cfg.batch_size) {
        let len = cfg.batch_size.min(n - start);
        let x = all.narrow(0, start, len)?;
        let z = model.enc.forward(&x)?.detach();
        let q = model.quantize(&z)?;
        for (l, c) in q.codes.iter().enumerate() {
            for (i, &k) in c.iter().enumerate() {
                codes[start + i].push(k);
            }
            if l + 1 == levels {
                last_residual.extend(q.residuals[l].flatten_all()?.to_vec1::<f32>()?);
            }
        }
        let mut zhat = z.zeros_like()?;
        for e in &q.picked {
            zhat = (zhat + e.detach())?;
        }
        let xhat = model.dec.forward(&zhat)?;
        sq += (xhat - &x)?.sqr()?.sum_all()?.to_scalar::<f32>()? as f64;
        norm += x.sqr()?.sum_all()?.to_scalar::<f32>()? as f64;
    }
    let last_codebook: Vec<f32> = model.codebooks[levels - 1]
        .as_tensor()
        .flatten_all()?
        .to_vec1()?;
    Ok(Quantized {
        codes,
        sizes: cfg.sizes.clone(),
        latent_dim: cfg.latent,
        last_residual,
        last_codebook,
        reconstruction_mse: sq / (n * dim) as f64,
        relative_error: if norm > 0.0 { sq / norm } else { 0.0 },
        training: Some(log),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::progress::Silent;
    use crate::rec::sid::report::level_stats;

    /// 8 well-separated cluster centres in 16-d (±1 patterns), 24 points each with noise 0.05.
    fn clustered(seed: u64) -> Vec<f32> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let centres: Vec<Vec<f32>> = (0..8)
            .map(|_| {
                (0..16)
                    .map(|_| if rng.random::<bool>() { 1.0 } else { -1.0 })
                    .collect()
            })
            .collect();
        let mut v = Vec::new();
        for c in &centres {
            for _ in 0..24 {
                v.extend(c.iter().map(|&x| x + rng.random_range(-0.05..0.05)));
            }
        }
        v
    }

    #[test]
    fn loss_falls_and_no_codebook_collapses() {
        let data = clustered(5);
        let cfg = RqVaeConfig {
            sizes: vec![8, 4],
            hidden: vec![32],
            latent: 8,
            epochs: 300,
            batch_size: 64,
            kmeans_iters: 20,
            seed: 11,
            ..RqVaeConfig::default()
        };
        let q = rq_vae(&data, 16, &cfg, &Silent).unwrap();
        let log = q.training.clone().unwrap();
        assert_eq!(log.loss.len(), cfg.epochs);
        // The quantization terms rise first (the encoder moves faster than the codebooks can
        // follow: 1.02 → 2.05 around epoch 60 with this seed), then everything settles.
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
        let (first, last) = (mean(&log.loss[..10]), mean(&log.loss[290..]));
        assert!(last < 0.1 * first, "loss {first} → {last}");
        // Every code of every level used by at least one item: no collapse.
        for s in level_stats(&q.codes, &q.sizes) {
            assert_eq!(s.used, s.size, "level {}: {s:?}", s.level);
        }
        // The coarse level recovers the 8 clusters: each cluster on one code.
        for c in 0..8 {
            let codes: Vec<u32> = q.codes[c * 24..(c + 1) * 24].iter().map(|x| x[0]).collect();
            assert!(
                codes.iter().all(|&x| x == codes[0]),
                "cluster {c}: {codes:?}"
            );
        }
        assert!(q.reconstruction_mse < 0.1, "{}", q.reconstruction_mse);
        assert_eq!(q.last_residual.len(), 192 * 8);
        assert_eq!(q.last_codebook.len(), 4 * 8);
        // Seeded: the same run gives the same codes.
        let again = rq_vae(&data, 16, &cfg, &Silent).unwrap();
        assert_eq!(again.codes, q.codes);
    }
}
