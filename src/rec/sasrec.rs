//! SASRec (Kang & McAuley 2018, "Self-Attentive Sequential Recommendation"), the classic
//! sequential baseline, trained in candle with our AdamW.
//!
//! The model: item embeddings (row 0 = padding) scaled by √d plus learned position embeddings,
//! dropout, then `layers` pre-LayerNorm blocks of causal multi-head self-attention and a
//! position-wise ReLU feed-forward (width d, as the paper), a final LayerNorm; the last
//! position's state scores every item by a dot product with the (shared) item embeddings.
//! Histories are left-padded to `max_len`; pad positions are zeroed after every block and only the
//! last (always real) position is read, so a pad query's output never reaches the loss.
//!
//! Trained on the split's next-item examples (history ≤ `max_len` → target), the same examples
//! the generative models see, with either full-softmax cross-entropy over the catalogue (default)
//! or the paper's binary cross-entropy against `negatives` uniformly sampled items per example.
//! Early stopping on the valid split's NDCG@10 (under the evaluation's history rule); the best
//! epoch is kept as a safetensors checkpoint and restored at the end.
//!
//! Everything random (initialisation, shuffling, dropout masks, negatives) comes from one ChaCha
//! stream seeded by `seed`, so a run repeats exactly on the same machine. The forward uses only
//! candle ops with a backward (composite LayerNorm and softmax; candle-nn's fused `layer_norm`
//! and `softmax_last_dim` drop gradients, ARCHITECTURE.md decision 2).
//!
//! Not here: the paper's shared-embedding ablations, per-user negatives excluding the whole
//! history, and learning-rate schedules (constant lr, as the paper).

use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;

use anyhow::{ensure, Context, Result};
use candle_core::{DType, Device, Tensor, Var, D};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::baselines::{self, Ranker};
use super::metrics::HistoryRule;
use super::sequences::Example;
use crate::optim::{AdamW, AdamWConfig};

/// How the next item is scored in training.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "name", rename_all = "snake_case", deny_unknown_fields)]
pub enum SasRecLoss {
    /// Cross-entropy of the softmax over the whole catalogue.
    Softmax,
    /// Binary cross-entropy: the target against `negatives` uniformly sampled other items.
    Bce { negatives: usize },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SasRecConfig {
    pub hidden: usize,
    pub layers: usize,
    pub heads: usize,
    pub dropout: f64,
    /// Positions (= the longest history used).
    pub max_len: usize,
    pub loss: SasRecLoss,
    pub learning_rate: f64,
    pub weight_decay: f64,
    pub batch_size: usize,
    pub max_epochs: usize,
    /// Epochs without a better valid NDCG@10 before stopping.
    pub patience: usize,
    pub seed: u64,
}

impl Default for SasRecConfig {
    /// The paper's ML-1M settings where they fit (2 blocks, 1 head, dropout 0.2, lr 1e-3,
    /// batch 128), d = 64 and max_len = 10 to match the other rankers' history.
    fn default() -> Self {
        Self {
            hidden: 64,
            layers: 2,
            heads: 1,
            dropout: 0.2,
            max_len: super::sequences::DEFAULT_MAX_HISTORY,
            loss: SasRecLoss::Softmax,
            learning_rate: 1e-3,
            weight_decay: 0.0,
            batch_size: 128,
            max_epochs: 200,
            patience: 5,
            seed: 0,
        }
    }
}

impl SasRecConfig {
    pub fn validate(&self) -> Result<()> {
        ensure!(
            self.hidden >= 1 && self.heads >= 1 && self.hidden.is_multiple_of(self.heads),
            "sasrec hidden = {} must be a positive multiple of heads = {}",
            self.hidden,
            self.heads
        );
        ensure!(self.layers >= 1, "sasrec needs at least one layer");
        ensure!(
            (0.0..1.0).contains(&self.dropout),
            "sasrec dropout = {} must be in [0, 1)",
            self.dropout
        );
        ensure!(self.max_len >= 1, "sasrec max_len must be at least 1");
        ensure!(
            self.batch_size >= 1 && self.max_epochs >= 1,
            "sasrec batch_size and max_epochs must be at least 1"
        );
        ensure!(
            self.learning_rate > 0.0 && self.learning_rate.is_finite(),
            "sasrec learning_rate = {} must be positive",
            self.learning_rate
        );
        if let SasRecLoss::Bce { negatives } = self.loss {
            ensure!(negatives >= 1, "sasrec bce needs at least one negative");
        }
        Ok(())
    }
}

/// The model: named parameters in a fixed order plus the config.
pub struct SasRec {
    pub cfg: SasRecConfig,
    n_items: usize,
    params: Vec<(String, Var)>,
    by_name: HashMap<String, Var>,
    device: Device,
}

/// Draws dropout masks (and negatives) from the run's seeded stream.
struct Noise<'a> {
    rng: &'a mut ChaCha8Rng,
    p: f64,
}

impl Noise<'_> {
    /// Inverted dropout: zero with probability p, scale the rest by 1/(1-p).
    fn dropout(&mut self, x: &Tensor) -> Result<Tensor> {
        if self.p == 0.0 {
            return Ok(x.clone());
        }
        let keep = 1.0 / (1.0 - self.p) as f32;
        let n = x.elem_count();
        let mask: Vec<f32> = (0..n)
            .map(|_| {
                if self.rng.random::<f64>() < self.p {
                    0.0
                } else {
                    keep
                }
            })
            .collect();
        let mask = Tensor::from_vec(mask, x.shape(), x.device())?;
        Ok(x.mul(&mask)?)
    }
}

/// LayerNorm over the last dim from differentiable ops (candle-nn's fused one has no backward).
fn layer_norm(x: &Tensor, w: &Tensor, b: &Tensor) -> Result<Tensor> {
    let mean = x.mean_keepdim(D::Minus1)?;
    let xc = x.broadcast_sub(&mean)?;
    let var = xc.sqr()?.mean_keepdim(D::Minus1)?;
    let xn = xc.broadcast_div(&(var + 1e-8)?.sqrt()?)?;
    Ok(xn.broadcast_mul(w)?.broadcast_add(b)?)
}

impl SasRec {
    /// Fresh parameters: embeddings uniform with std 0.02, linear weights as torch's `Linear`,
    /// biases 0, LayerNorm weights 1; the padding row is 0.
    pub fn new(
        cfg: &SasRecConfig,
        n_items: usize,
        rng: &mut ChaCha8Rng,
        device: &Device,
    ) -> Result<Self> {
        cfg.validate()?;
        ensure!(n_items >= 1, "sasrec needs a non-empty catalogue");
        let d = cfg.hidden;
        let mut params = Vec::new();
        let mut add = |name: String, shape: (usize, usize), init: Init| -> Result<()> {
            let n = shape.0 * shape.1;
            let vals: Vec<f32> = match init {
                Init::Zeros => vec![0.0; n],
                Init::Ones => vec![1.0; n],
                // Uniform on ±a has std a/√3.
                Init::Small(std) => (0..n)
                    .map(|_| (rng.random::<f32>() * 2.0 - 1.0) * std * 3f32.sqrt())
                    .collect(),
            };
            let t = Tensor::from_vec(vals, shape, device)?;
            let t = if shape.0 == 1 { t.squeeze(0)? } else { t };
            params.push((name, Var::from_tensor(&t)?));
            Ok(())
        };
        add("item_emb".into(), (n_items + 1, d), Init::Small(0.02))?;
        add("pos_emb".into(), (cfg.max_len, d), Init::Small(0.02))?;
        // torch's Linear default: uniform on ±1/√d, i.e. std 1/√(3d).
        let lin = (1.0 / (3.0 * d as f32)).sqrt();
        for l in 0..cfg.layers {
            let p = format!("layers.{l}");
            for ln in ["ln1", "ln2"] {
                add(format!("{p}.{ln}.weight"), (1, d), Init::Ones)?;
                add(format!("{p}.{ln}.bias"), (1, d), Init::Zeros)?;
            }
            for m in ["q", "k", "v", "o", "ff1", "ff2"] {
                // (in, out) so that x @ w needs no transpose.
                add(format!("{p}.{m}.weight"), (d, d), Init::Small(lin))?;
                // A key bias adds q·b to every logit of a row: softmax ignores it (zero gradient).
                if m != "k" {
                    add(format!("{p}.{m}.bias"), (1, d), Init::Zeros)?;
                }
            }
        }
        add("ln.weight".into(), (1, d), Init::Ones)?;
        add("ln.bias".into(), (1, d), Init::Zeros)?;
        // The padding row starts (and, having no gradient from masked positions, mostly stays) 0.
        let emb = &params[0].1;
        let zero_row = Tensor::zeros((1, d), DType::F32, device)?;
        emb.set(&Tensor::cat(
            &[&zero_row, &emb.as_tensor().narrow(0, 1, n_items)?],
            0,
        )?)?;
        Ok(Self::from_params(cfg.clone(), n_items, params, device))
    }

    fn from_params(
        cfg: SasRecConfig,
        n_items: usize,
        params: Vec<(String, Var)>,
        device: &Device,
    ) -> Self {
        let by_name = params.iter().cloned().collect();
        Self {
            cfg,
            n_items,
            params,
            by_name,
            device: device.clone(),
        }
    }

    pub fn params(&self) -> &[(String, Var)] {
        &self.params
    }

    fn p(&self, name: &str) -> Result<&Tensor> {
        Ok(self
            .by_name
            .get(name)
            .with_context(|| format!("sasrec parameter `{name}` missing"))?
            .as_tensor())
    }

    /// Left-padded input ids (item index + 1, 0 = pad) of the last `max_len` history items.
    fn batch_ids(&self, histories: &[&[u32]]) -> Result<(Tensor, Tensor)> {
        let l = self.cfg.max_len;
        let mut ids = vec![0u32; histories.len() * l];
        for (row, h) in histories.iter().enumerate() {
            let h = &h[h.len().saturating_sub(l)..];
            for (j, &it) in h.iter().enumerate() {
                ids[row * l + (l - h.len()) + j] = it + 1;
            }
        }
        let pad: Vec<f32> = ids.iter().map(|&i| (i != 0) as u32 as f32).collect();
        let b = histories.len();
        Ok((
            Tensor::from_vec(ids, (b, l), &self.device)?,
            Tensor::from_vec(pad, (b, l, 1), &self.device)?,
        ))
    }

    /// The last position's state for each history. `noise` = Some in training (dropout on).
    fn encode(&self, histories: &[&[u32]], mut noise: Option<&mut Noise>) -> Result<Tensor> {
        let (b, l, d) = (histories.len(), self.cfg.max_len, self.cfg.hidden);
        let (h, dh) = (self.cfg.heads, self.cfg.hidden / self.cfg.heads);
        let (ids, keep) = self.batch_ids(histories)?; // (B, L), (B, L, 1)
        let mut dropout = |x: &Tensor| -> Result<Tensor> {
            match noise.as_deref_mut() {
                Some(n) => n.dropout(x),
                None => Ok(x.clone()),
            }
        };
        let emb = self.p("item_emb")?.index_select(&ids.flatten_all()?, 0)?; // (B·L, D)
        let x = (emb.reshape((b, l, d))? * (d as f64).sqrt())?; // (B, L, D)
        let x = x.broadcast_add(&self.p("pos_emb")?.unsqueeze(0)?)?;
        let mut x = dropout(&x)?.broadcast_mul(&keep)?;
        // Additive causal mask (L, L): a large negative rather than −inf keeps pad rows finite.
        let causal: Vec<f32> = (0..l * l)
            .map(|i| if i % l > i / l { -1e9 } else { 0.0 })
            .collect();
        let causal = Tensor::from_vec(causal, (1, 1, l, l), &self.device)?;
        let key_pad = ((keep.reshape((b, 1, 1, l))? - 1.0)? * 1e9)?; // (B, 1, 1, L): −1e9 at pads
        let mask = causal.broadcast_add(&key_pad)?; // (B, 1, L, L)
        for layer in 0..self.cfg.layers {
            let p = |n: &str| self.p(&format!("layers.{layer}.{n}"));
            // (B, L, D) @ (D, D) as one (B·L, D) matmul.
            let lin = |x: &Tensor, m: &str| -> Result<Tensor> {
                let y = x
                    .reshape((b * l, d))?
                    .matmul(p(&format!("{m}.weight"))?)?
                    .reshape((b, l, d))?;
                match m {
                    "k" => Ok(y),
                    _ => Ok(y.broadcast_add(p(&format!("{m}.bias"))?)?),
                }
            };
            let heads = |t: Tensor| -> Result<Tensor> {
                Ok(t.reshape((b, l, h, dh))?.transpose(1, 2)?.contiguous()?) // (B, H, L, Dh)
            };
            let hn = layer_norm(&x, p("ln1.weight")?, p("ln1.bias")?)?;
            let (q, k, v) = (
                heads(lin(&hn, "q")?)?,
                heads(lin(&hn, "k")?)?,
                heads(lin(&hn, "v")?)?,
            );
            let att = (q.matmul(&k.t()?)? / (dh as f64).sqrt())?.broadcast_add(&mask)?; // (B, H, L, L)
            let att = dropout(&candle_nn::ops::softmax(&att, D::Minus1)?)?;
            let o = att.matmul(&v)?.transpose(1, 2)?.reshape((b, l, d))?; // (B, L, D)
            x = (x + dropout(&lin(&o, "o")?)?)?;
            let hn = layer_norm(&x, p("ln2.weight")?, p("ln2.bias")?)?;
            let f = lin(&dropout(&lin(&hn, "ff1")?.relu()?)?, "ff2")?;
            x = (x + dropout(&f)?)?.broadcast_mul(&keep)?;
        }
        let x = layer_norm(&x, self.p("ln.weight")?, self.p("ln.bias")?)?;
        Ok(x.narrow(1, l - 1, 1)?.squeeze(1)?) // (B, D)
    }

    /// Catalogue item embeddings (without the padding row): (N, D).
    fn items(&self) -> Result<Tensor> {
        Ok(self.p("item_emb")?.narrow(0, 1, self.n_items)?)
    }

    /// Mean training loss of a batch (with dropout and, for BCE, sampled negatives).
    fn loss(&self, batch: &[&Example], rng: &mut ChaCha8Rng) -> Result<Tensor> {
        let hist: Vec<&[u32]> = batch.iter().map(|e| e.history.as_slice()).collect();
        let targets: Vec<u32> = batch.iter().map(|e| e.target).collect();
        let mut noise = Noise {
            rng,
            p: self.cfg.dropout,
        };
        let s = self.encode(&hist, Some(&mut noise))?; // (B, D)
        let b = batch.len();
        match self.cfg.loss {
            SasRecLoss::Softmax => {
                let logits = s.matmul(&self.items()?.t()?)?; // (B, N)
                let t = Tensor::new(targets.as_slice(), &self.device)?;
                Ok(candle_nn::loss::cross_entropy(&logits, &t)?)
            }
            SasRecLoss::Bce { negatives } => {
                let n = self.n_items as u32;
                let mut ids = Vec::with_capacity(b * (1 + negatives));
                for &t in &targets {
                    ids.push(t + 1);
                    for _ in 0..negatives {
                        // Uniform over the other items (n = 1 leaves no other item: reuse t).
                        let mut j = noise.rng.random_range(0..n.max(1));
                        if n > 1 && j == t {
                            j = (j + 1 + noise.rng.random_range(0..n - 1)) % n;
                        }
                        ids.push(j + 1);
                    }
                }
                let ids = Tensor::from_vec(ids, b * (1 + negatives), &self.device)?;
                let e = self.p("item_emb")?.index_select(&ids, 0)?; // (B·(1+M), D)
                let e = e.reshape((b, 1 + negatives, self.cfg.hidden))?;
                let z = e.broadcast_mul(&s.unsqueeze(1)?)?.sum(D::Minus1)?; // (B, 1+M)
                                                                            // −log σ(z) for the target, −log(1 − σ(z)) = softplus(z) for each negative.
                let sign: Vec<f32> = (0..1 + negatives)
                    .map(|j| if j == 0 { -1.0 } else { 1.0 })
                    .collect();
                let sz =
                    z.broadcast_mul(&Tensor::from_vec(sign, (1, 1 + negatives), &self.device)?)?;
                let softplus = (sz.relu()? + ((sz.abs()?.neg()?.exp()? + 1.0)?.log()?))?;
                Ok(softplus.sum(D::Minus1)?.mean_all()?)
            }
        }
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        let map: HashMap<String, Tensor> = self
            .params
            .iter()
            .map(|(n, v)| (n.clone(), v.as_tensor().clone()))
            .collect();
        candle_core::safetensors::save(&map, path)
            .with_context(|| format!("writing checkpoint {}", path.display()))
    }

    /// Restores every parameter from a checkpoint written by [`SasRec::save`].
    pub fn load(&self, path: &Path) -> Result<()> {
        let map = candle_core::safetensors::load(path, &self.device)
            .with_context(|| format!("reading SASRec checkpoint {}", path.display()))?;
        for (name, var) in &self.params {
            let t = map.get(name).with_context(|| {
                format!(
                    "{} has no tensor `{name}`; hint: it was written by another SASRec config",
                    path.display()
                )
            })?;
            ensure!(
                t.shape() == var.shape(),
                "{}: `{name}` is {:?}, the model expects {:?}; hint: same hidden/max_len/catalogue?",
                path.display(),
                t.shape(),
                var.shape()
            );
            var.set(t)?;
        }
        Ok(())
    }
}

enum Init {
    Zeros,
    Ones,
    Small(f32),
}

impl Ranker for SasRec {
    fn n_items(&self) -> usize {
        self.n_items
    }
    fn score(&self, histories: &[&[u32]]) -> Result<Vec<Vec<f32>>> {
        let s = self.encode(histories, None)?; // (B, D)
        let logits = s.detach().matmul(&self.items()?.detach().t()?)?; // (B, N)
        Ok(logits.to_vec2::<f32>()?)
    }
}

/// One epoch's record.
#[derive(Clone, Debug, Serialize)]
pub struct EpochLog {
    pub epoch: usize,
    pub train_loss: f64,
    pub valid_ndcg10: f64,
    pub seconds: f64,
    pub best: bool,
}

/// What SASRec is fitted to: the split's train and valid examples over `n_items` items, valid
/// NDCG@10 measured under `rule` (the evaluation's history rule).
pub struct Fit<'a> {
    pub n_items: usize,
    pub train: &'a [Example],
    pub valid: &'a [Example],
    pub rule: HistoryRule,
}

/// Trains from scratch; returns the model restored to its best valid epoch and every epoch's log.
/// `checkpoint` is where the best epoch's safetensors go; `on_epoch` sees each epoch as it ends.
pub fn train(
    cfg: &SasRecConfig,
    data: &Fit<'_>,
    checkpoint: &Path,
    device: &Device,
    on_epoch: &mut dyn FnMut(&EpochLog),
) -> Result<(SasRec, Vec<EpochLog>)> {
    let Fit {
        n_items,
        train,
        valid,
        rule,
    } = *data;
    ensure!(!train.is_empty(), "sasrec: the train split is empty");
    ensure!(
        !valid.is_empty(),
        "sasrec: the valid split is empty (early stopping needs it)"
    );
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    let model = SasRec::new(cfg, n_items, &mut rng, device)?;
    let mut opt = AdamW::new(
        model.params().to_vec(),
        AdamWConfig {
            weight_decay: cfg.weight_decay,
            ..AdamWConfig::default()
        },
    )?;
    let mut logs = Vec::new();
    let (mut best, mut since_best) = (f64::NEG_INFINITY, 0usize);
    let mut order: Vec<usize> = (0..train.len()).collect();
    for epoch in 1..=cfg.max_epochs {
        let t0 = Instant::now();
        // Fisher–Yates from the run's stream.
        for i in (1..order.len()).rev() {
            order.swap(i, rng.random_range(0..=i));
        }
        let (mut sum, mut batches) = (0.0, 0usize);
        for chunk in order.chunks(cfg.batch_size) {
            let batch: Vec<&Example> = chunk.iter().map(|&i| &train[i]).collect();
            let loss = model.loss(&batch, &mut rng)?;
            let grads = loss.backward()?;
            opt.step(&grads, cfg.learning_rate)?;
            sum += loss.to_scalar::<f32>()? as f64;
            batches += 1;
        }
        let seconds = t0.elapsed().as_secs_f64();
        let ndcg = baselines::evaluate(&model, valid, rule, 256)?
            .summary
            .ndcg(10);
        let improved = ndcg > best;
        if improved {
            best = ndcg;
            since_best = 0;
            model.save(checkpoint)?;
        } else {
            since_best += 1;
        }
        let log = EpochLog {
            epoch,
            train_loss: sum / batches.max(1) as f64,
            valid_ndcg10: ndcg,
            seconds,
            best: improved,
        };
        on_epoch(&log);
        logs.push(log);
        if since_best >= cfg.patience {
            break;
        }
    }
    model.load(checkpoint)?;
    Ok((model, logs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rec::baselines::{evaluate, Popularity};
    use crate::rec::sequences::{Interaction, Log, Split};

    /// Users walk the catalogue in steps of +1 (mod n) from a random start: the next item is
    /// always the last one plus one, which popularity cannot see and SASRec should learn.
    fn successor_log(n: usize, users: usize, len: usize) -> Log {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let mut log = Log {
            timed: true,
            ..Log::default()
        };
        for i in 0..n {
            log.items.intern(&i.to_string());
        }
        for u in 0..users {
            let start = rng.random_range(0..n);
            for t in 0..len {
                log.interactions.push(Interaction {
                    user: format!("u{u}"),
                    item: ((start + t) % n) as u32,
                    timestamp: t as f64,
                    row: 0,
                });
            }
        }
        log
    }

    fn small(loss: SasRecLoss) -> SasRecConfig {
        SasRecConfig {
            hidden: 16,
            heads: 2,
            dropout: 0.1,
            max_len: 4,
            loss,
            learning_rate: 1e-2,
            batch_size: 32,
            max_epochs: 25,
            patience: 25,
            ..SasRecConfig::default()
        }
    }

    #[test]
    fn learns_the_successor_pattern_and_beats_popularity() {
        let n = 15;
        let s = successor_log(n, 40, 8).split(Split::Loo, 4).unwrap();
        let dir = tempfile::tempdir().unwrap();
        for loss in [SasRecLoss::Softmax, SasRecLoss::Bce { negatives: 2 }] {
            let ckpt = dir.path().join("s.safetensors");
            let fit = Fit {
                n_items: n,
                train: &s.train,
                valid: &s.valid,
                rule: HistoryRule::Allow,
            };
            let (model, logs) =
                train(&small(loss), &fit, &ckpt, &Device::Cpu, &mut |_| {}).unwrap();
            let (first, last) = (logs[0].train_loss, logs[logs.len() - 1].train_loss);
            assert!(last < 0.5 * first, "{loss:?}: loss {first} -> {last}");
            let sas = evaluate(&model, &s.test, HistoryRule::Allow, 16)
                .unwrap()
                .summary;
            let pop = Popularity::fit(&s.train, n);
            let pop = evaluate(&pop, &s.test, HistoryRule::Allow, 16)
                .unwrap()
                .summary;
            assert!(
                sas.ndcg(10) > pop.ndcg(10) + 0.3,
                "{loss:?}: sasrec {sas:?} pop {pop:?}"
            );
            assert!(sas.hr(1) > 0.8, "{loss:?}: {sas:?}");
        }
    }

    #[test]
    fn every_parameter_gets_a_finite_gradient() {
        let n = 9;
        let s = successor_log(n, 6, 6).split(Split::Loo, 4).unwrap();
        let batch: Vec<&Example> = s.train.iter().collect();
        for loss in [SasRecLoss::Softmax, SasRecLoss::Bce { negatives: 3 }] {
            let mut rng = ChaCha8Rng::seed_from_u64(0);
            let model = SasRec::new(&small(loss), n, &mut rng, &Device::Cpu).unwrap();
            let l = model.loss(&batch, &mut rng).unwrap();
            assert!(l.to_scalar::<f32>().unwrap().is_finite());
            let grads = l.backward().unwrap();
            assert_eq!(model.params().len(), 4 + 2 * 15);
            for (name, var) in model.params() {
                let g = grads
                    .get(var.as_tensor())
                    .unwrap_or_else(|| panic!("{name}: no gradient"));
                let g: Vec<f32> = g.flatten_all().unwrap().to_vec1().unwrap();
                assert!(
                    g.iter().all(|x| x.is_finite()),
                    "{name}: non-finite gradient"
                );
                assert!(g.iter().any(|&x| x != 0.0), "{name}: all-zero gradient");
            }
        }
    }

    #[test]
    fn checkpoint_round_trips_and_seed_repeats() {
        let n = 9;
        let dev = Device::Cpu;
        let cfg = small(SasRecLoss::Softmax);
        let a = SasRec::new(&cfg, n, &mut ChaCha8Rng::seed_from_u64(5), &dev).unwrap();
        let b = SasRec::new(&cfg, n, &mut ChaCha8Rng::seed_from_u64(5), &dev).unwrap();
        let c = SasRec::new(&cfg, n, &mut ChaCha8Rng::seed_from_u64(6), &dev).unwrap();
        let h: [&[u32]; 2] = [&[1, 2], &[3, 4, 5, 6, 7, 8]];
        assert_eq!(a.score(&h).unwrap(), b.score(&h).unwrap());
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.safetensors");
        a.save(&p).unwrap();
        c.load(&p).unwrap();
        assert_eq!(a.score(&h).unwrap(), c.score(&h).unwrap());
        let other = SasRec::new(
            &SasRecConfig { hidden: 8, ..cfg },
            n,
            &mut ChaCha8Rng::seed_from_u64(5),
            &dev,
        )
        .unwrap();
        assert!(other.load(&p).unwrap_err().to_string().contains("expects"));
    }
}
