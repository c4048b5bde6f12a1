//! i-MENTOR's trajectory-level exploration bonus (`reference/rover_imentor.md` §2; code
//! `Gaojingtong/iMENTOR` `main_iMENTOR.py` and `core_algos.py`), added to the advantages of any
//! advantage-based algorithm (GRPO family) or to ROVER's centered reward.
//!
//! Per rollout batch, in this order:
//! 1. **Novelty.** Random network distillation over whole trajectories: a fixed random target MLP
//!    and a trained predictor MLP of the same shape both read a padding-free n-gram projection of
//!    the prompt+response tokens ([`NgramProjection`], which says why it replaces the official
//!    padded-id input). The error `e_i = mean_k (target_k − predictor_k)²` is one scalar per
//!    sequence, computed *before* the predictor trains on the batch (as RND does).
//! 2. **Dynamic scaling** (official "error-conditioned reward allocation"): min-max normalization
//!    over the whole batch to `[0, max_bonus]`, zero for every sample when all errors are equal
//!    (the official code divides by zero there), times `decay / (decay + step)` (official
//!    `α / (γ_0 + k·t)` with `[α, γ_0, k] = [40, 40, 1]`), and kept only for incorrect samples
//!    unless `bonus_to = "all"`. The caller decides what "correct" means; the official rule is
//!    `score < 1.0` is incorrect, so a format-only 0.1 counts as incorrect, and a malformed
//!    completion can earn a bonus of up to `max_bonus`, five times Countdown's format score.
//!    `bonus_to = "incorrect_answered"` gives it only to wrong answers the verifier could read.
//! 3. **Integration after the group normalization**, as the official code does, so the extrinsic
//!    advantages keep their distribution; groups that are all wrong (advantage 0) still get a signal.
//!    - `additive`: `A_i += b_i`. This can turn a wrong sample's advantage positive: with G = 5
//!      and rewards {1,0,0,0,0}, GRPO gives the wrong ones −0.447 and a step-0 bonus of up to 0.5
//!      lifts one to +0.053, so the policy is pushed *towards* that wrong answer (in absolute
//!      terms; relative to the correct sample it is still pushed away). With a larger `max_bonus`
//!      or small reward gaps it can even rank a wrong sample above a correct one.
//!    - `bounded`: a wrong sample's bonus is squashed below the gap `g` to the smallest advantage
//!      of a correct sample in its group, so every correct sample keeps a strictly higher
//!      advantage than every wrong one (the pairwise preference "correct over wrong" never flips).
//!      The squashing is the identity up to `g/2` and `g/2 + g/2·(1 − exp(−(b − g/2)/(g/2)))`
//!      above: continuous, strictly increasing (so the novelty ranking among equally-rewarded
//!      wrong samples survives) and always below `g`. With binary rewards the gap is ≥ √2 under
//!      std normalization (1/std, std ≤ 0.71) and exactly 1 under mean-centering (ROVER), so
//!      with the default `max_bonus` ≤ g/2 `bounded` equals `additive` there. It
//!      does *not* keep a negative advantage negative (the G = 5 example above still ends at
//!      ≈ +0.05). Groups without a correct sample are treated exactly as by `additive`.
//! 4. **Training.** `predictor_steps` AdamW steps (lr `lr`, default 1e-3 and 1 step as in the
//!    official code) on the mean error over the whole batch, all samples included.
//!
//! Everything is deterministic from the seed (weights from ChaCha8, full-batch training, no
//! dropout), and [`Imentor::save`] / [`Imentor::load`] restore the exact state (weights, AdamW
//! moments and step counts), so a resumed run reproduces the bonuses of an uninterrupted one.
//!
//! Deliberately not here: the official trainable shared embedding and BatchNorm (they make the
//! target drift and a sample's bonus depend on its batch-mates), the sigmoid on the networks'
//! single output (we use `output_dim` linear outputs, as RND does), the PPO/GAE variant (bonus at
//! the EOS token, then whitening), and any GPU placement: the networks are a few thousand
//! parameters and run on the CPU in f32.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{bail, ensure, Context as _};
use candle_core::{DType, Device, Tensor, Var};
use rand::{Rng as _, SeedableRng as _};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::bonus::{decay_scale, integrate, normalize};
use super::features::NgramProjection;
use crate::algo::Metrics;
use crate::optim::{AdamW, AdamWConfig};

const LEAKY_SLOPE: f64 = 0.01;
const STATE_FORMAT: &str = "llmrl.imentor";
const STATE_VERSION: u32 = 1;
const WEIGHTS_FILE: &str = "imentor.safetensors";
const OPTIMIZER_FILE: &str = "imentor_optimizer.safetensors";
const META_FILE: &str = "imentor.json";

// ------------------------------------------------------------------------------------------------
// Configuration

/// How the bonus joins the group-normalized advantage (see the module docs).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Integration {
    /// `A_i += b_i` (official).
    #[default]
    Additive,
    /// Wrong samples stay strictly below the group's worst correct sample.
    Bounded,
}

/// Which samples may receive a bonus.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BonusTo {
    /// Only incorrect answers (official), malformed ones included.
    #[default]
    Incorrect,
    /// Only incorrect answers the verifier could read (it extracted an answer): exploring among
    /// real attempts without paying a malformed completion more than a format score would.
    IncorrectAnswered,
    All,
}

/// What the verifier said of one sample, as far as the bonus cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub correct: bool,
    /// An answer was extracted (right or wrong): the completion followed the format.
    pub answered: bool,
}

/// The `[exploration]` table with `name = "imentor"`. Defaults follow the official code where it
/// has the setting (`max_bonus`, `decay`, `lr`, one predictor step, torch AdamW weight decay).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ImentorConfig {
    /// Upper end of the batch min-max normalization (official 0.5).
    pub max_bonus: f64,
    /// Bonus scale at training step t is `decay / (decay + t)` (official 40).
    pub decay: f64,
    pub bonus_to: BonusTo,
    pub integration: Integration,
    /// Predictor learning rate (official 1e-3).
    pub lr: f64,
    /// AdamW weight decay of the predictor (torch default 0.01, as the official code uses).
    pub weight_decay: f64,
    /// Predictor updates per rollout batch, each on the whole batch (official 1).
    pub predictor_steps: usize,
    /// N-gram orders 1..=ngram_orders in the trajectory features.
    pub ngram_orders: usize,
    /// Feature values per n-gram order; a multiple of 64.
    pub dims_per_order: usize,
    /// Hidden widths of the target and predictor MLPs (LeakyReLU between layers).
    pub hidden_dims: Vec<usize>,
    /// Output width of both MLPs.
    pub output_dim: usize,
}

impl Default for ImentorConfig {
    fn default() -> Self {
        Self {
            max_bonus: 0.5,
            decay: 40.0,
            bonus_to: BonusTo::Incorrect,
            integration: Integration::Additive,
            lr: 1e-3,
            weight_decay: 0.01,
            predictor_steps: 1,
            ngram_orders: 2,
            dims_per_order: 64,
            hidden_dims: vec![64, 64],
            output_dim: 16,
        }
    }
}

impl ImentorConfig {
    /// Checks ranges; call when resolving a recipe.
    pub fn validate(&self) -> anyhow::Result<()> {
        let finite_pos = |name: &str, v: f64, hint: &str| {
            ensure!(
                v.is_finite() && v > 0.0,
                "exploration.{name} = {v} must be a positive number; hint: {hint}"
            );
            Ok(())
        };
        ensure!(
            self.max_bonus.is_finite() && self.max_bonus >= 0.0,
            "exploration.max_bonus = {} must be >= 0; hint: the official value is 0.5",
            self.max_bonus
        );
        finite_pos(
            "decay",
            self.decay,
            "the official value is 40; use a huge value for no decay",
        )?;
        finite_pos("lr", self.lr, "the official value is 1e-3")?;
        ensure!(
            self.weight_decay.is_finite() && self.weight_decay >= 0.0,
            "exploration.weight_decay = {} must be >= 0; hint: 0.01 (torch default)",
            self.weight_decay
        );
        ensure!(
            self.ngram_orders >= 1,
            "exploration.ngram_orders must be at least 1; hint: 2 = unigrams and bigrams"
        );
        ensure!(
            self.dims_per_order >= 64 && self.dims_per_order.is_multiple_of(64),
            "exploration.dims_per_order = {} must be a positive multiple of 64; hint: 64 or 128",
            self.dims_per_order
        );
        ensure!(
            self.output_dim >= 1 && self.hidden_dims.iter().all(|&h| h >= 1),
            "exploration.hidden_dims and output_dim must be >= 1; hint: hidden_dims = [64, 64], output_dim = 16"
        );
        Ok(())
    }

    /// The fields that shape the networks and features; a checkpoint must match them.
    fn architecture(&self) -> (usize, usize, &[usize], usize) {
        (
            self.ngram_orders,
            self.dims_per_order,
            &self.hidden_dims,
            self.output_dim,
        )
    }
}

// ------------------------------------------------------------------------------------------------
// Networks

/// A LeakyReLU MLP over (B, D) inputs; weights stored (in, out).
struct Mlp {
    layers: Vec<(Var, Var)>,
}

impl Mlp {
    /// He-uniform weights (bound √(6/fan_in); √(3/fan_in) for the linear output layer, so outputs
    /// are of unit scale), zero biases.
    fn new(dims: &[usize], rng: &mut ChaCha8Rng) -> candle_core::Result<Self> {
        let mut layers = Vec::with_capacity(dims.len() - 1);
        for (l, w) in dims.windows(2).enumerate() {
            let (fan_in, fan_out) = (w[0], w[1]);
            let last = l + 2 == dims.len();
            let bound = ((if last { 3.0 } else { 6.0 }) / fan_in as f64).sqrt() as f32;
            let data: Vec<f32> = (0..fan_in * fan_out)
                .map(|_| rng.random_range(-bound..bound))
                .collect();
            let weight = Var::from_vec(data, (fan_in, fan_out), &Device::Cpu)?;
            let bias = Var::zeros(fan_out, DType::F32, &Device::Cpu)?;
            layers.push((weight, bias));
        }
        Ok(Self { layers })
    }

    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let mut h = x.clone(); // (B, D)
        for (l, (w, b)) in self.layers.iter().enumerate() {
            h = h.matmul(w.as_tensor())?.broadcast_add(b.as_tensor())?; // (B, H_l)
            if l + 1 < self.layers.len() {
                h = candle_nn::ops::leaky_relu(&h, LEAKY_SLOPE)?;
            }
        }
        Ok(h) // (B, K)
    }

    fn named(&self, prefix: &str) -> Vec<(String, Var)> {
        let mut out = Vec::with_capacity(2 * self.layers.len());
        for (l, (w, b)) in self.layers.iter().enumerate() {
            out.push((format!("{prefix}.{l}.weight"), w.clone()));
            out.push((format!("{prefix}.{l}.bias"), b.clone()));
        }
        out
    }
}

// ------------------------------------------------------------------------------------------------
// i-MENTOR

/// What one [`Imentor::apply`] did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ImentorStats {
    /// Mean over all samples of the bonus added (zeros included).
    pub bonus_mean: f64,
    pub bonus_max: f64,
    /// Mean RND error over the batch before this batch's update (the predictor's training loss).
    pub predictor_loss: f64,
    /// Share of samples whose advantage got a positive bonus.
    pub bonus_share: f64,
    /// `decay / (decay + step)` at this step.
    pub bonus_scale: f64,
}

impl ImentorStats {
    /// The stats under `explore/...` metric names.
    pub fn metrics(&self) -> Metrics {
        Metrics::from([
            ("explore/bonus_mean".into(), self.bonus_mean),
            ("explore/bonus_max".into(), self.bonus_max),
            ("explore/predictor_loss".into(), self.predictor_loss),
            ("explore/bonus_share".into(), self.bonus_share),
            ("explore/bonus_scale".into(), self.bonus_scale),
        ])
    }
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct StateMeta {
    format: String,
    version: u32,
    seed: u64,
    /// Batches the predictor has been trained on.
    updates: u64,
    config: ImentorConfig,
}

/// Random network distillation over trajectories, with the bonus rules of i-MENTOR.
pub struct Imentor {
    cfg: ImentorConfig,
    seed: u64,
    features: NgramProjection,
    target: Mlp,
    predictor: Mlp,
    opt: AdamW,
    updates: u64,
}

impl Imentor {
    /// Fresh networks from `seed`. Any vocabulary works: token ids are hashed, not looked up.
    pub fn new(cfg: &ImentorConfig, seed: u64) -> anyhow::Result<Self> {
        cfg.validate()?;
        let features = NgramProjection::new(seed, cfg.ngram_orders, cfg.dims_per_order);
        let mut dims = vec![features.dim()];
        dims.extend(&cfg.hidden_dims);
        dims.push(cfg.output_dim);
        // Separate streams, so changing one network's shape does not reshuffle the other.
        let target = Mlp::new(&dims, &mut ChaCha8Rng::seed_from_u64(seed ^ 0x007a_76e7))?;
        let predictor = Mlp::new(&dims, &mut ChaCha8Rng::seed_from_u64(seed ^ 0x009e_3d1c))?;
        let opt = AdamW::new(
            predictor.named("predictor"),
            AdamWConfig {
                weight_decay: cfg.weight_decay,
                ..AdamWConfig::default()
            },
        )?;
        Ok(Self {
            cfg: cfg.clone(),
            seed,
            features,
            target,
            predictor,
            opt,
            updates: 0,
        })
    }

    pub fn config(&self) -> &ImentorConfig {
        &self.cfg
    }

    /// Batches the predictor has been trained on.
    pub fn updates(&self) -> u64 {
        self.updates
    }

    fn inputs(&self, sequences: &[Vec<u32>]) -> candle_core::Result<Tensor> {
        let d = self.features.dim();
        Tensor::from_vec(
            self.features.batch(sequences),
            (sequences.len(), d),
            &Device::Cpu,
        )
    }

    /// Per-sequence RND error with the predictor's graph attached: (B,).
    fn error_tensor(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let t = self.target.forward(x)?.detach(); // (B, K)
        let p = self.predictor.forward(x)?; // (B, K)
        (p - t)?.sqr()?.mean(1) // (B,)
    }

    /// RND errors of `sequences` under the current predictor, without training (for inspection
    /// and tests). Each depends only on its own token sequence.
    pub fn errors(&self, sequences: &[Vec<u32>]) -> anyhow::Result<Vec<f32>> {
        if sequences.is_empty() {
            return Ok(Vec::new());
        }
        let x = self.inputs(sequences)?;
        Ok(self.error_tensor(&x)?.to_vec1::<f32>()?)
    }

    /// Adds the exploration bonus to `adv` and trains the predictor on the batch.
    ///
    /// `sequences`: prompt+completion token ids per sample, without padding; `outcomes`: per
    /// sample; `adv`: advantages after the group normalization (or ROVER's centered rewards), laid
    /// out group by group with `group_size` samples per group; `step`: the training step (0 first).
    pub fn apply(
        &mut self,
        sequences: &[Vec<u32>],
        outcomes: &[Outcome],
        adv: &mut [f32],
        group_size: usize,
        step: u64,
    ) -> anyhow::Result<ImentorStats> {
        let n = sequences.len();
        ensure!(
            outcomes.len() == n && adv.len() == n,
            "i-MENTOR got {n} sequences, {} outcomes and {} advantages",
            outcomes.len(),
            adv.len()
        );
        ensure!(
            group_size >= 1 && n.is_multiple_of(group_size),
            "i-MENTOR got {n} samples, not a whole number of groups of {group_size}"
        );
        let bonus_scale = decay_scale(self.cfg.decay, step);
        if n == 0 {
            return Ok(ImentorStats {
                bonus_scale,
                ..ImentorStats::default()
            });
        }
        let x = self.inputs(sequences)?; // (B, D)
        let err = self.error_tensor(&x)?; // (B,)
        let errors = err.to_vec1::<f32>()?;
        if let Some(bad) = errors.iter().find(|e| !e.is_finite()) {
            bail!(
                "i-MENTOR predictor error is {bad} after {} updates; hint: lower exploration.lr",
                self.updates
            );
        }

        // Bonus from the pre-update predictor.
        let scale = bonus_scale as f32;
        let bonus: Vec<f32> = normalize(&errors, self.cfg.max_bonus)
            .into_iter()
            .zip(outcomes)
            .map(|(b, o)| {
                let eligible = match self.cfg.bonus_to {
                    BonusTo::Incorrect => !o.correct,
                    BonusTo::IncorrectAnswered => !o.correct && o.answered,
                    BonusTo::All => true,
                };
                if eligible {
                    b * scale
                } else {
                    0.0
                }
            })
            .collect();
        let correct: Vec<bool> = outcomes.iter().map(|o| o.correct).collect();
        let added = integrate(adv, &bonus, &correct, group_size, self.cfg.integration);

        // Train on the whole batch, all samples.
        let mut loss = err.mean_all()?;
        let predictor_loss = f64::from(loss.to_scalar::<f32>()?);
        for s in 0..self.cfg.predictor_steps {
            if s > 0 {
                loss = self.error_tensor(&x)?.mean_all()?;
            }
            let grads = loss.backward()?;
            self.opt.step(&grads, self.cfg.lr)?;
        }
        self.updates += 1;

        Ok(ImentorStats {
            bonus_mean: added.iter().map(|&b| f64::from(b)).sum::<f64>() / n as f64,
            bonus_max: added.iter().fold(0f64, |m, &b| m.max(f64::from(b))),
            predictor_loss,
            bonus_share: added.iter().filter(|&&b| b > 0.0).count() as f64 / n as f64,
            bonus_scale,
        })
    }

    /// Writes `imentor.safetensors` (target and predictor weights), `imentor_optimizer.safetensors`
    /// (AdamW state) and `imentor.json` (seed, config, update count) into `dir`.
    pub fn save(&self, dir: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating i-MENTOR state dir {}", dir.display()))?;
        let tensors: HashMap<String, Tensor> = self
            .target
            .named("target")
            .into_iter()
            .chain(self.predictor.named("predictor"))
            .map(|(name, v)| (name, v.as_tensor().clone()))
            .collect();
        let weights = dir.join(WEIGHTS_FILE);
        let tmp = dir.join(format!("{WEIGHTS_FILE}.tmp"));
        candle_core::safetensors::save(&tensors, &tmp)
            .with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, &weights)
            .with_context(|| format!("renaming {} to {}", tmp.display(), weights.display()))?;
        self.opt.save(&dir.join(OPTIMIZER_FILE))?;
        let meta = StateMeta {
            format: STATE_FORMAT.into(),
            version: STATE_VERSION,
            seed: self.seed,
            updates: self.updates,
            config: self.cfg.clone(),
        };
        let path = dir.join(META_FILE);
        std::fs::write(&path, serde_json::to_string_pretty(&meta)?)
            .with_context(|| format!("writing {}", path.display()))?;
        Ok(())
    }

    /// Restores a state written by [`Imentor::save`] exactly. The seed and the network/feature
    /// shape must match this instance's; the bonus settings (`max_bonus`, `decay`, ...) are this
    /// instance's, so a resumed run may change them. Everything is checked before anything changes.
    pub fn load(&mut self, dir: &Path) -> anyhow::Result<()> {
        let path = dir.join(META_FILE);
        let ctx = || format!("loading i-MENTOR state from {}", dir.display());
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))
            .with_context(ctx)?;
        let meta: StateMeta = serde_json::from_str(&text)
            .with_context(|| format!("parsing {}", path.display()))
            .with_context(ctx)?;
        ensure!(
            meta.format == STATE_FORMAT && meta.version == STATE_VERSION,
            "{}: format {} v{} is not {STATE_FORMAT} v{STATE_VERSION}",
            ctx(),
            meta.format,
            meta.version
        );
        ensure!(
            meta.seed == self.seed && meta.config.architecture() == self.cfg.architecture(),
            "{}: saved with seed {} and networks {:?}, this run has seed {} and {:?}; hint: resume with the checkpoint's recipe and seed",
            ctx(),
            meta.seed,
            meta.config.architecture(),
            self.seed,
            self.cfg.architecture()
        );
        let weights = dir.join(WEIGHTS_FILE);
        let mut saved = candle_core::safetensors::load(&weights, &Device::Cpu)
            .with_context(|| format!("reading {}", weights.display()))
            .with_context(ctx)?;
        let vars: Vec<(String, Var)> = self
            .target
            .named("target")
            .into_iter()
            .chain(self.predictor.named("predictor"))
            .collect();
        let mut staged = Vec::with_capacity(vars.len());
        for (name, var) in vars {
            let Some(t) = saved.remove(&name) else {
                bail!(
                    "{}: tensor `{name}` missing from {}",
                    ctx(),
                    weights.display()
                );
            };
            ensure!(
                t.dims() == var.dims() && t.dtype() == DType::F32,
                "{}: `{name}` is {:?} {:?}, expected F32 {:?}",
                ctx(),
                t.dtype(),
                t.dims(),
                var.dims()
            );
            staged.push((var, t));
        }
        // The optimizer checks its whole file before changing anything; after it, nothing fails.
        self.opt.load(&dir.join(OPTIMIZER_FILE)).with_context(ctx)?;
        for (var, t) in staged {
            var.set(&t)?;
        }
        self.updates = meta.updates;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Group normalization as GRPO does it (unbiased std, official ε 1e-10), or mean-centering
    /// only (ROVER, Dr. GRPO); kept here so these tests do not depend on `algo`.
    #[derive(Clone, Copy)]
    enum ScaleRewards {
        Group,
        None,
    }

    fn group_advantages(rewards: &[f32], g: usize, scale: ScaleRewards) -> Vec<f32> {
        rewards
            .chunks(g)
            .flat_map(|r| {
                let n = r.len() as f32;
                let mean = r.iter().sum::<f32>() / n;
                let var = r.iter().map(|x| (x - mean).powi(2)).sum::<f32>() / (n - 1.0).max(1.0);
                let div = match scale {
                    ScaleRewards::Group => var.sqrt() + 1e-10,
                    ScaleRewards::None => 1.0,
                };
                r.iter().map(move |x| (x - mean) / div).collect::<Vec<_>>()
            })
            .collect()
    }

    fn seqs(seed: u64, n: usize, len: usize) -> Vec<Vec<u32>> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        (0..n)
            .map(|_| (0..len).map(|_| rng.random_range(0..50_000u32)).collect())
            .collect()
    }

    fn fast() -> ImentorConfig {
        ImentorConfig {
            lr: 1e-2,
            ..ImentorConfig::default()
        }
    }

    /// Outcomes with an answer extracted from every sample.
    fn outcomes(correct: &[bool]) -> Vec<Outcome> {
        correct
            .iter()
            .map(|&correct| Outcome {
                correct,
                answered: true,
            })
            .collect()
    }

    fn mean(x: &[f32]) -> f32 {
        x.iter().sum::<f32>() / x.len() as f32
    }

    #[test]
    fn repeated_trajectories_lose_their_bonus_while_novel_ones_keep_it() {
        let mut im = Imentor::new(&fast(), 11).unwrap();
        let seen = seqs(1, 8, 120);
        let novel = seqs(2, 8, 120);
        let (seen0, novel0) = (im.errors(&seen).unwrap(), im.errors(&novel).unwrap());
        let wrong = vec![false; 8];
        for step in 0..100 {
            im.apply(&seen, &outcomes(&wrong), &mut [0.0; 8], 4, step)
                .unwrap();
        }
        let (seen1, novel1) = (im.errors(&seen).unwrap(), im.errors(&novel).unwrap());
        assert!(mean(&seen1) < 0.05 * mean(&seen0), "{seen0:?} -> {seen1:?}");
        // The novel ones lose only what the predictor learned about all trajectories (the
        // target's common offset): about half, measured 2.17 -> 0.98, against 1.92 -> 0.0002.
        assert!(
            mean(&novel1) > 0.3 * mean(&novel0),
            "{novel0:?} -> {novel1:?}"
        );
        assert!(mean(&novel1) > 100.0 * mean(&seen1), "{seen1:?} {novel1:?}");
        // In a mixed batch every novel sample outranks every repeated one.
        let mixed: Vec<Vec<u32>> = seen[..4].iter().chain(&novel[..4]).cloned().collect();
        let mut adv = [0f32; 8];
        im.apply(&mixed, &outcomes(&wrong), &mut adv, 4, 0).unwrap();
        let worst_novel = adv[4..].iter().fold(f32::INFINITY, |m, &a| m.min(a));
        assert!(adv[..4].iter().all(|&a| a < worst_novel), "{adv:?}");
    }

    #[test]
    fn errors_depend_only_on_the_sequence() {
        let im = Imentor::new(&ImentorConfig::default(), 5).unwrap();
        let a = vec![17u32, 4, 99, 4, 1000];
        let alone = im.errors(std::slice::from_ref(&a)).unwrap()[0];
        let in_batch = im.errors(&[vec![1, 2, 3], a.clone(), vec![]]).unwrap()[1];
        assert!(
            (alone - in_batch).abs() <= 1e-6 * alone.abs(),
            "{alone} {in_batch}"
        );
        // Same seed, same networks.
        let again = Imentor::new(&ImentorConfig::default(), 5).unwrap();
        assert_eq!(again.errors(std::slice::from_ref(&a)).unwrap()[0], alone);
        let other = Imentor::new(&ImentorConfig::default(), 6).unwrap();
        assert_ne!(other.errors(&[a]).unwrap()[0], alone);
    }

    #[test]
    fn normalization_spans_zero_to_max_and_guards_a_zero_range() {
        assert_eq!(
            normalize(&[1.0, 3.0, 2.0, 5.0], 0.5),
            vec![0.0, 0.25, 0.125, 0.5]
        );
        assert_eq!(normalize(&[2.0, 2.0, 2.0], 0.5), vec![0.0; 3]);
        // Equal up to float noise counts as equal; tiny but real differences do not.
        assert_eq!(normalize(&[1.0, 1.0 + 1e-7], 0.5), vec![0.0; 2]);
        assert_eq!(normalize(&[1e-8, 3e-8], 1.0), vec![0.0, 1.0]);
        assert!(normalize(&[], 0.5).is_empty());
        assert_eq!(normalize(&[4.0], 0.5), vec![0.0]);
    }

    #[test]
    fn decay_schedule_matches_the_official_one() {
        // α / (γ_0 + k t) with [α, γ_0, k] = [40, 40, 1], times max 0.5: 0.5, 0.25, 0.05.
        assert_eq!(decay_scale(40.0, 0), 1.0);
        assert_eq!(0.5 * decay_scale(40.0, 40), 0.25);
        assert!((0.5 * decay_scale(40.0, 360) - 0.05).abs() < 1e-12);
        // Through apply: the largest bonus of a batch is max_bonus times the scale.
        let mut im = Imentor::new(&ImentorConfig::default(), 3).unwrap();
        let s = seqs(4, 4, 30);
        let mut adv = [0f32; 4];
        let st = im
            .apply(&s, &outcomes(&[false; 4]), &mut adv, 4, 40)
            .unwrap();
        assert!((st.bonus_max - 0.25).abs() < 1e-6, "{st:?}");
        assert_eq!(st.bonus_scale, 0.5);
    }

    #[test]
    fn correct_answers_get_no_bonus_unless_configured() {
        let s = seqs(5, 6, 40);
        let correct = [true, false, false, true, false, false];
        let before = group_advantages(&[1., 0., 0., 1., 0., 0.], 3, ScaleRewards::Group);
        let mut im = Imentor::new(&ImentorConfig::default(), 9).unwrap();
        let mut adv = before.clone();
        let st = im.apply(&s, &outcomes(&correct), &mut adv, 3, 0).unwrap();
        for i in [0, 3] {
            assert_eq!(adv[i], before[i]);
        }
        assert!(
            st.bonus_share > 0.0 && st.bonus_share <= 4.0 / 6.0,
            "{st:?}"
        );

        let cfg = ImentorConfig {
            bonus_to: BonusTo::All,
            ..ImentorConfig::default()
        };
        let mut im = Imentor::new(&cfg, 9).unwrap();
        let mut adv_all = before.clone();
        im.apply(&s, &outcomes(&correct), &mut adv_all, 3, 0)
            .unwrap();
        // Same errors (same seed), so the incorrect samples get the same bonus either way.
        assert_eq!(adv_all[1], adv[1]);
        assert!((0..6).any(|i| correct[i] && adv_all[i] > before[i]));
    }

    #[test]
    fn incorrect_answered_skips_malformed_completions() {
        let s = seqs(6, 6, 40);
        let outs: Vec<Outcome> = [(true, true), (false, true), (false, false)]
            .iter()
            .cycle()
            .take(6)
            .map(|&(correct, answered)| Outcome { correct, answered })
            .collect();
        let before = group_advantages(&[1., 0.1, 0., 1., 0.1, 0.], 3, ScaleRewards::Group);
        let run = |bonus_to| {
            let cfg = ImentorConfig {
                bonus_to,
                ..ImentorConfig::default()
            };
            let mut adv = before.clone();
            Imentor::new(&cfg, 4)
                .unwrap()
                .apply(&s, &outs, &mut adv, 3, 0)
                .unwrap();
            adv
        };
        let (official, answered) = (run(BonusTo::Incorrect), run(BonusTo::IncorrectAnswered));
        for i in 0..6 {
            match (outs[i].correct, outs[i].answered) {
                (true, _) => assert_eq!(answered[i], before[i]),
                // Same seed, same errors: the wrong-but-answered get what the official rule gives.
                (false, true) => assert_eq!(answered[i], official[i]),
                (false, false) => assert_eq!(answered[i], before[i]),
            }
        }
        assert!((0..6).any(|i| !outs[i].answered && official[i] > before[i]));
    }

    #[test]
    fn additive_can_flip_a_wrong_answers_sign() {
        // Module-doc example: G = 5, rewards {1,0,0,0,0}; the wrong ones sit at −0.447.
        let mut adv = group_advantages(&[1., 0., 0., 0., 0.], 5, ScaleRewards::Group);
        assert!((adv[1] + 0.4472).abs() < 1e-4);
        let correct = [true, false, false, false, false];
        integrate(
            &mut adv,
            &[0., 0.5, 0., 0., 0.],
            &correct,
            5,
            Integration::Additive,
        );
        assert!(adv[1] > 0.05 && adv[1] < 0.06, "{adv:?}");
    }

    #[test]
    fn bounded_keeps_every_correct_sample_above_every_wrong_one() {
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        for _ in 0..500 {
            let g = rng.random_range(2..9usize);
            let rewards: Vec<f32> = (0..2 * g)
                .map(|_| [0.0, 0.1, 1.0][rng.random_range(0..3usize)])
                .collect();
            let correct: Vec<bool> = rewards.iter().map(|&r| r >= 1.0).collect();
            let bonus: Vec<f32> = (0..2 * g).map(|_| rng.random_range(0.0..5.0f32)).collect();
            let scale = [ScaleRewards::Group, ScaleRewards::None][rng.random_range(0..2usize)];
            let before = group_advantages(&rewards, g, scale);
            let mut bounded = before.clone();
            integrate(&mut bounded, &bonus, &correct, g, Integration::Bounded);
            let mut additive = before.clone();
            integrate(&mut additive, &bonus, &correct, g, Integration::Additive);
            for k in 0..2 {
                let r = k * g..(k + 1) * g;
                let worst_correct = r
                    .clone()
                    .filter(|&i| correct[i])
                    .map(|i| bounded[i])
                    .fold(f32::INFINITY, f32::min);
                let best_wrong = r
                    .clone()
                    .filter(|&i| !correct[i])
                    .map(|i| bounded[i])
                    .fold(f32::NEG_INFINITY, f32::max);
                if worst_correct.is_finite() {
                    assert!(
                        best_wrong < worst_correct,
                        "{rewards:?} {bonus:?} {bounded:?}"
                    );
                } else {
                    // No correct sample: bounded is additive.
                    assert_eq!(bounded[r.clone()], additive[r]);
                }
            }
        }
    }

    #[test]
    fn bounded_equals_additive_below_half_the_gap_and_keeps_the_novelty_ranking() {
        // Binary rewards, std-normalized: gap 2.236 ≥ 2 × 0.5, so nothing changes.
        let before = group_advantages(&[1., 0., 0., 0., 0.], 5, ScaleRewards::Group);
        let correct = [true, false, false, false, false];
        let bonus = [0.0, 0.5, 0.1, 0.3, 0.0];
        let (mut a, mut b) = (before.clone(), before.clone());
        integrate(&mut a, &bonus, &correct, 5, Integration::Additive);
        integrate(&mut b, &bonus, &correct, 5, Integration::Bounded);
        assert_eq!(a, b);
        // Big bonuses: squashed below the gap, in the same order.
        let big = [0.0, 9.0, 3.0, 6.0, 1.5];
        let mut c = before.clone();
        let added = integrate(&mut c, &big, &correct, 5, Integration::Bounded);
        assert!(added[1] > added[3] && added[3] > added[2] && added[2] > added[4]);
        assert!(c[1..].iter().all(|&x| x < c[0]), "{c:?}");
        // Hand value: gap g = 2.2361, b = 3 → g/2 + g/2·(1 − e^{−(3 − g/2)/(g/2)}).
        let h = 0.5 * (before[0] - before[2]) as f64;
        let want = h + h * (1.0 - (-(3.0 - h) / h).exp());
        assert!((f64::from(added[2]) - want).abs() < 1e-5);
    }

    #[test]
    fn save_and_load_resume_exactly() {
        let cfg = ImentorConfig {
            predictor_steps: 2,
            ..fast()
        };
        let (a, b) = (seqs(20, 6, 50), seqs(21, 6, 50));
        let correct = [false, true, false, false, false, true];
        let mut run = Imentor::new(&cfg, 42).unwrap();
        run.apply(&a, &outcomes(&correct), &mut [0.0; 6], 3, 0)
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        run.save(dir.path()).unwrap();

        let mut resumed = Imentor::new(&cfg, 42).unwrap();
        resumed.load(dir.path()).unwrap();
        assert_eq!(resumed.updates(), 1);
        let (mut adv_run, mut adv_res) = ([0.1f32; 6], [0.1f32; 6]);
        let st_run = run
            .apply(&b, &outcomes(&correct), &mut adv_run, 3, 1)
            .unwrap();
        let st_res = resumed
            .apply(&b, &outcomes(&correct), &mut adv_res, 3, 1)
            .unwrap();
        assert_eq!(st_run, st_res);
        assert_eq!(adv_run, adv_res);
        assert_eq!(run.errors(&a).unwrap(), resumed.errors(&a).unwrap());

        // Another seed or another network shape is refused with a hint.
        let mut wrong_seed = Imentor::new(&cfg, 43).unwrap();
        let e = wrong_seed.load(dir.path()).unwrap_err();
        assert!(format!("{e:#}").contains("hint"), "{e:#}");
        let wider = ImentorConfig {
            output_dim: 8,
            ..cfg.clone()
        };
        assert!(Imentor::new(&wider, 42).unwrap().load(dir.path()).is_err());
    }

    #[test]
    fn apply_checks_lengths_and_handles_an_empty_batch() {
        let mut im = Imentor::new(&ImentorConfig::default(), 1).unwrap();
        let st = im.apply(&[], &outcomes(&[]), &mut [], 5, 0).unwrap();
        assert_eq!(st.bonus_share, 0.0);
        assert_eq!(im.updates(), 0);
        assert!(im
            .apply(&seqs(1, 3, 5), &outcomes(&[false; 3]), &mut [0.0; 3], 2, 0)
            .is_err());
        assert!(im
            .apply(&seqs(1, 2, 5), &outcomes(&[false; 3]), &mut [0.0; 2], 2, 0)
            .is_err());
    }

    #[test]
    fn validate_rejects_bad_settings() {
        for cfg in [
            ImentorConfig {
                decay: 0.0,
                ..Default::default()
            },
            ImentorConfig {
                max_bonus: -1.0,
                ..Default::default()
            },
            ImentorConfig {
                lr: f64::NAN,
                ..Default::default()
            },
            ImentorConfig {
                dims_per_order: 100,
                ..Default::default()
            },
            ImentorConfig {
                ngram_orders: 0,
                ..Default::default()
            },
            ImentorConfig {
                hidden_dims: vec![0],
                ..Default::default()
            },
        ] {
            assert!(Imentor::new(&cfg, 0).is_err(), "{cfg:?}");
        }
        assert!(Imentor::new(
            &ImentorConfig {
                hidden_dims: vec![],
                ..Default::default()
            },
            0
        )
        .is_ok());
    }
}
