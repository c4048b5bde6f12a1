//! The statistical voter S: a click model trained on the logs. Logistic matrix factorization
//! with biases, p(like | u, i) = σ(b + b_u + b_i + p_u·q_i), fitted in candle with AdamW on
//! binary labels (rating ≥ the like threshold) by binary cross-entropy plus an L2 penalty on the
//! batch's rows, early-stopped on the valid split's log-loss. Vote = p ≥ 0.5 (the official
//! threshold). Inference is plain Rust over the fitted numbers.
//!
//! MF rather than the official SASRec (history length 2): on ratings with a user's whole
//! history known, the user factor carries the taste the 2-item window would; the episode's own
//! history enters through the logical voters.
//!
//! A user unknown to the model (not in its training log) is folded in when a history is given:
//! p_u is fitted to the history's labels with the item factors fixed (gradient steps on the same
//! loss), b_u = 0; with no history, or no known item in it, S answers from the item alone
//! (p_u = 0). An unknown item has q_i = 0, b_i = 0. The reason says which fallback was used.

use std::collections::HashMap;

use anyhow::{ensure, Result};
use candle_core::{Device, Tensor, Var, D};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::voters::Vote;
use crate::optim::{AdamW, AdamWConfig};
use crate::progress::Reporter;

/// How S is fitted.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MfConfig {
    pub dim: usize,
    pub learning_rate: f64,
    /// L2 weight on the batch's user and item rows (per row, averaged over the batch).
    pub l2: f64,
    pub batch_size: usize,
    pub max_epochs: usize,
    /// Epochs without a better valid log-loss before stopping.
    pub patience: usize,
    pub seed: u64,
}

impl Default for MfConfig {
    fn default() -> Self {
        Self {
            dim: 32,
            learning_rate: 0.01,
            l2: 0.05,
            batch_size: 1024,
            max_epochs: 40,
            patience: 3,
            seed: 0,
        }
    }
}

/// One labelled pair.
#[derive(Clone, Debug, PartialEq)]
pub struct Label {
    pub user: String,
    pub item: String,
    pub liked: bool,
}

/// The fitted model.
#[derive(Clone, Debug)]
pub struct Mf {
    users: HashMap<String, usize>,
    items: HashMap<String, usize>,
    pu: Vec<f32>,
    qi: Vec<f32>,
    bu: Vec<f32>,
    bi: Vec<f32>,
    b0: f32,
    dim: usize,
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// Mean log-loss of probabilities against labels (clipped away from 0 and 1).
pub fn log_loss(p: &[f64], y: &[bool]) -> f64 {
    let n = p.len().max(1) as f64;
    p.iter()
        .zip(y)
        .map(|(&p, &y)| {
            let p = p.clamp(1e-7, 1.0 - 1e-7);
            if y {
                -p.ln()
            } else {
                -(1.0 - p).ln()
            }
        })
        .sum::<f64>()
        / n
}

/// Per-epoch figures.
#[derive(Clone, Debug, Serialize)]
pub struct MfEpoch {
    pub epoch: usize,
    pub train_loss: f64,
    pub valid_log_loss: f64,
}

impl Mf {
    /// Fits S on `train`, early-stopped on `valid` (which may be empty: then every epoch runs).
    pub fn fit(
        train: &[Label],
        valid: &[Label],
        cfg: &MfConfig,
        reporter: &dyn Reporter,
    ) -> Result<(Self, Vec<MfEpoch>)> {
        ensure!(
            !train.is_empty(),
            "the statistical model needs training ratings"
        );
        ensure!(
            cfg.dim > 0 && cfg.batch_size > 0,
            "mf: dim and batch size must be positive"
        );
        let mut users = HashMap::new();
        let mut items = HashMap::new();
        for l in train {
            let n = users.len();
            users.entry(l.user.clone()).or_insert(n);
            let n = items.len();
            items.entry(l.item.clone()).or_insert(n);
        }
        let (nu, ni, d) = (users.len(), items.len(), cfg.dim);
        let dev = Device::Cpu;
        let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
        let mut init = |n: usize| -> Vec<f32> {
            (0..n)
                .map(|_| (rng.random::<f32>() * 2.0 - 1.0) * 0.05)
                .collect()
        };
        let prior = train.iter().filter(|l| l.liked).count() as f64 / train.len() as f64;
        let b0_init = (prior.clamp(0.01, 0.99) / (1.0 - prior.clamp(0.01, 0.99))).ln() as f32;
        let vars = [
            (
                "pu",
                Var::from_tensor(&Tensor::from_vec(init(nu * d), (nu, d), &dev)?)?,
            ),
            (
                "qi",
                Var::from_tensor(&Tensor::from_vec(init(ni * d), (ni, d), &dev)?)?,
            ),
            (
                "bu",
                Var::from_tensor(&Tensor::zeros(nu, candle_core::DType::F32, &dev)?)?,
            ),
            (
                "bi",
                Var::from_tensor(&Tensor::zeros(ni, candle_core::DType::F32, &dev)?)?,
            ),
            ("b0", Var::from_tensor(&Tensor::new(&[b0_init], &dev)?)?),
        ];
        let params: Vec<(String, Var)> = vars
            .iter()
            .map(|(n, v)| (n.to_string(), v.clone()))
            .collect();
        let mut opt = AdamW::new(
            params,
            AdamWConfig {
                weight_decay: 0.0,
                ..AdamWConfig::default()
            },
        )?;
        let rows: Vec<(u32, u32, f32)> = train
            .iter()
            .map(|l| {
                (
                    users[&l.user] as u32,
                    items[&l.item] as u32,
                    f32::from(u8::from(l.liked)),
                )
            })
            .collect();
        let snapshot = |vars: &[(&str, Var); 5]| -> Result<Self> {
            Ok(Self {
                users: users.clone(),
                items: items.clone(),
                pu: vars[0].1.as_tensor().flatten_all()?.to_vec1()?,
                qi: vars[1].1.as_tensor().flatten_all()?.to_vec1()?,
                bu: vars[2].1.as_tensor().to_vec1()?,
                bi: vars[3].1.as_tensor().to_vec1()?,
                b0: vars[4].1.as_tensor().to_vec1::<f32>()?[0],
                dim: d,
            })
        };
        let mut order: Vec<usize> = (0..rows.len()).collect();
        let (mut best, mut best_loss, mut since) = (snapshot(&vars)?, f64::INFINITY, 0usize);
        let mut logs = Vec::new();
        reporter.begin("stat model", cfg.max_epochs as u64, 0);
        for epoch in 1..=cfg.max_epochs {
            for i in (1..order.len()).rev() {
                order.swap(i, rng.random_range(0..=i));
            }
            let (mut sum, mut batches) = (0.0, 0usize);
            for chunk in order.chunks(cfg.batch_size) {
                let u: Vec<u32> = chunk.iter().map(|&k| rows[k].0).collect();
                let i: Vec<u32> = chunk.iter().map(|&k| rows[k].1).collect();
                let y: Vec<f32> = chunk.iter().map(|&k| rows[k].2).collect();
                let b = chunk.len();
                let u = Tensor::from_vec(u, b, &dev)?;
                let i = Tensor::from_vec(i, b, &dev)?;
                let y = Tensor::from_vec(y, b, &dev)?;
                let pu = vars[0].1.as_tensor().index_select(&u, 0)?; // (B, d)
                let qi = vars[1].1.as_tensor().index_select(&i, 0)?; // (B, d)
                let x = ((pu.mul(&qi)?.sum(D::Minus1)? // (B,)
                    + vars[2].1.as_tensor().index_select(&u, 0)?)?
                    + vars[3].1.as_tensor().index_select(&i, 0)?)?
                .broadcast_add(vars[4].1.as_tensor())?; // (B,)
                                                        // BCE with logits, stable: max(x, 0) − x·y + log(1 + e^{−|x|}).
                let bce = ((x.relu()? - x.mul(&y)?)? + (x.abs()?.neg()?.exp()? + 1.0)?.log()?)?;
                let reg = (pu.sqr()?.sum(D::Minus1)? + qi.sqr()?.sum(D::Minus1)?)?;
                let loss = (bce.mean_all()? + (reg.mean_all()? * cfg.l2)?)?;
                let grads = loss.backward()?;
                opt.step(&grads, cfg.learning_rate)?;
                sum += loss.to_scalar::<f32>()? as f64;
                batches += 1;
            }
            let now = snapshot(&vars)?;
            let vl = if valid.is_empty() {
                f64::NAN
            } else {
                let p: Vec<f64> = valid
                    .iter()
                    .map(|l| now.prob(&l.user, &l.item, &[]).0)
                    .collect();
                let y: Vec<bool> = valid.iter().map(|l| l.liked).collect();
                log_loss(&p, &y)
            };
            let log = MfEpoch {
                epoch,
                train_loss: sum / batches.max(1) as f64,
                valid_log_loss: vl,
            };
            reporter.progress(
                epoch as u64,
                &[("loss", log.train_loss), ("valid_logloss", vl)],
            );
            logs.push(log);
            if valid.is_empty() || vl < best_loss {
                (best, best_loss, since) = (now, vl, 0);
            } else {
                since += 1;
                if since >= cfg.patience {
                    break;
                }
            }
        }
        reporter.end();
        Ok((best, logs))
    }

    fn user_row(&self, u: usize) -> &[f32] {
        &self.pu[u * self.dim..(u + 1) * self.dim]
    }

    fn item_row(&self, i: usize) -> &[f32] {
        &self.qi[i * self.dim..(i + 1) * self.dim]
    }

    /// Whether the model was trained on this item.
    pub fn knows_item(&self, item: &str) -> bool {
        self.items.contains_key(item)
    }

    /// Whether the model was trained on this user.
    pub fn knows_user(&self, user: &str) -> bool {
        self.users.contains_key(user)
    }

    /// p(like) and how it was computed. `hist` (item id, liked) is used only to fold in a user
    /// the model does not know.
    pub fn prob(&self, user: &str, item: &str, hist: &[(&str, bool)]) -> (f64, String) {
        let zero = vec![0f32; self.dim];
        let (q, bi, item_note) = match self.items.get(item) {
            Some(&i) => (self.item_row(i).to_vec(), self.bi[i], ""),
            None => (zero.clone(), 0.0, "; item unknown to S: user terms only"),
        };
        let (p, bu, user_note) = match self.users.get(user) {
            Some(&u) => (self.user_row(u).to_vec(), self.bu[u], String::new()),
            None => {
                let known: Vec<(usize, bool)> = hist
                    .iter()
                    .filter_map(|(h, l)| self.items.get(*h).map(|&i| (i, *l)))
                    .collect();
                if known.is_empty() {
                    (
                        zero,
                        0.0,
                        "; user unknown to S, no known history: item prior".into(),
                    )
                } else {
                    let n = known.len();
                    (
                        self.fold_in(&known),
                        0.0,
                        format!("; user unknown to S: folded in from {n} history items"),
                    )
                }
            }
        };
        let x = self.b0 + bu + bi + p.iter().zip(&q).map(|(a, b)| a * b).sum::<f32>();
        let pr = sigmoid(x as f64);
        (pr, format!("p(like) {pr:.3}{user_note}{item_note}"))
    }

    /// A user vector fitted to `(item row, liked)` labels with item factors fixed: 100 gradient
    /// steps of the training loss (fixed step size, from zero).
    fn fold_in(&self, hist: &[(usize, bool)]) -> Vec<f32> {
        let mut p = vec![0f32; self.dim];
        let lr = 0.5 / hist.len() as f32;
        for _ in 0..100 {
            let mut g = vec![0f32; self.dim];
            for &(i, liked) in hist {
                let q = self.item_row(i);
                let x = self.b0 + self.bi[i] + p.iter().zip(q).map(|(a, b)| a * b).sum::<f32>();
                let err = sigmoid(x as f64) as f32 - f32::from(u8::from(liked));
                for (gk, qk) in g.iter_mut().zip(q) {
                    *gk += err * qk;
                }
            }
            for (pk, gk) in p.iter_mut().zip(&g) {
                *pk -= lr * (gk + 2.0 * 0.05 * *pk * hist.len() as f32);
            }
        }
        p
    }

    /// S's vote: p ≥ 0.5; score = p.
    pub fn vote(&self, user: &str, item: &str, hist: &[(&str, bool)]) -> Vote {
        let (p, reason) = self.prob(user, item, hist);
        Vote {
            vote: Some(p >= 0.5),
            score: p,
            reason,
        }
    }
}
