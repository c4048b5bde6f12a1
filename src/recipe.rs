//! Recipes: a TOML file deserialized into [`Recipe`] (file-shaped, unknown keys rejected), with
//! `--set a.b=value` overrides applied to the TOML before deserializing, then resolved once into a
//! validated [`Plan`] — every check a user can fail (model path, dataset, prompt slots, verifier
//! fields, option ranges) runs here, before any weights load.
//!
//! Option names follow TRL where they exist (`num_generations`, `max_new_tokens`, `temperature`,
//! `top_p`, `learning_rate`, `beta`, `epsilon`, `epsilon_high`, `loss_type`, `num_iterations`,
//! `scale_rewards`, `mask_truncated_completions`).

use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};
use serde::{Deserialize, Serialize};

use crate::algo::{AlgoConfig, RolloutSource};
use crate::data::{check_rows, DataConfig, Example, PromptTemplate};
use crate::generate::{GroupMode, SamplingConfig};
use crate::model::ModelSource;
use crate::optim::{AdamWConfig, LrSchedule};
use crate::reward::VerifierConfig;
use crate::train::correction::{Correction, RolloutPrecision};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    /// Run name (default: the recipe file's stem).
    pub name: Option<String>,
    #[serde(default)]
    pub seed: u64,
    pub model: ModelSection,
    pub data: DataConfig,
    /// Held-out problems for evaluation during and after training.
    pub eval_data: Option<DataConfig>,
    pub prompt: PromptSection,
    pub verifier: VerifierConfig,
    #[serde(default)]
    pub generation: GenerationSection,
    pub algorithm: AlgoConfig,
    /// Exploration bonus added to advantages (i-MENTOR).
    pub exploration: Option<crate::explore::ExplorationConfig>,
    #[serde(default)]
    pub train: TrainSection,
    #[serde(default)]
    pub optimizer: OptimizerSection,
    #[serde(default)]
    pub log: LogSection,
    #[serde(default)]
    pub checkpoint: CheckpointSection,
    #[serde(default)]
    pub eval: EvalSection,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSection {
    /// Local HF directory, `.gguf` file (relative to the recipe), or hub id `org/name`.
    pub source: String,
    #[serde(default = "default_device")]
    pub device: String,
    /// Tokens to add to the vocabulary after loading (e.g. Semantic IDs): `{ file = "tokens.json" }`
    /// (a JSON array or one token a line) and/or `{ list = [...] }` (`model::vocab`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub add_tokens: Option<crate::model::vocab::AddTokensSpec>,
    /// Train only the added tokens' embedding (and LM-head) rows.
    #[serde(default)]
    pub train_only_new_tokens: bool,
    /// Train a LoRA adapter instead of the whole model (`model::lora`; PEFT's names).
    pub lora: Option<crate::model::lora::LoraConfig>,
}

impl ModelSection {
    /// The vocabulary options as `model::vocab` reads them.
    pub fn vocab(&self) -> crate::model::VocabSection {
        crate::model::VocabSection {
            add_tokens: self.add_tokens.clone(),
            train_only_new_tokens: self.train_only_new_tokens,
        }
    }
}

fn default_device() -> String {
    "cpu".into()
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PromptSection {
    /// A built-in template name (`countdown`, `gsm8k`, `math`) or a path to a `.txt` file with
    /// `{field}` slots.
    pub template: String,
    /// Wrap the rendered prompt in the model's chat template.
    #[serde(default = "yes")]
    pub chat: bool,
    /// Optional system message (overrides the template's own).
    pub system: Option<String>,
}

fn yes() -> bool {
    true
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GenerationSection {
    /// Samples per prompt (the group size).
    pub num_generations: usize,
    pub max_new_tokens: usize,
    pub temperature: f64,
    pub top_p: f64,
    pub top_k: usize,
    pub stop: Vec<String>,
    /// Generate only whole items of a SID catalogue, `{ sid_index = "index.json", suffix = "" }`:
    /// the trie over every item's SID, EOS after a whole one (`rec::action_space`).
    pub constraint: Option<crate::rec::action_space::SidConstraintSpec>,
    /// How a group is formed: `"sample"` (num_generations samples) or `"beam"` (the
    /// num_generations best beams of one beam search, MiniOneRec's rollout).
    pub group: GroupMode,
    /// The weights rollouts sample from: `"exact"` (the trained weights) or `"int8"`
    /// (weight-only int8 projections and head, CPU only: faster decoding, approximate; π_old is
    /// recomputed exactly on what was sampled and `[train] rollout_correction` weights the
    /// mismatch). Evaluation always uses the exact weights.
    pub rollout_precision: crate::train::correction::RolloutPrecision,
}

impl Default for GenerationSection {
    fn default() -> Self {
        Self {
            num_generations: 8,
            max_new_tokens: 128,
            temperature: 1.0,
            top_p: 1.0,
            top_k: 0,
            stop: vec![],
            constraint: None,
            group: GroupMode::Sample,
            rollout_precision: Default::default(),
        }
    }
}

impl GenerationSection {
    pub fn sampling(&self) -> SamplingConfig {
        SamplingConfig {
            temperature: self.temperature,
            top_k: self.top_k,
            top_p: self.top_p,
            max_new_tokens: self.max_new_tokens,
            min_new_tokens: 0,
            stop: self.stop.clone(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainSection {
    /// Optimizer-visible training steps (one rollout batch each for RL; one batch for SFT).
    pub max_steps: u64,
    /// Passes over the training data instead of `max_steps`: max_steps becomes
    /// ⌈epochs × examples / prompts_per_step⌉ when the recipe is resolved.
    pub epochs: Option<f64>,
    /// Prompts per rollout batch (RL) or examples per batch (SFT).
    pub prompts_per_step: usize,
    /// Sequences per forward/backward; gradients accumulate over micro-batches.
    pub micro_batch_size: usize,
    /// Passes over each rollout batch (TRL's `num_iterations`, PPO epochs).
    pub num_iterations: usize,
    /// Optimizer steps per rollout batch; default: the algorithm's (GRPO 1, ROVER 4).
    pub num_minibatches: Option<usize>,
    /// Shuffle the rollout batch before splitting it into mini-batches (TRL does). Off by
    /// default, as in verl (where ROVER's official code runs): mini-batches then hold whole
    /// groups, so each prompt's prefix runs once per mini-batch.
    pub shuffle_minibatches: bool,
    /// Exclude completions cut at max_new_tokens from the loss (DAPO's overlong filtering).
    pub mask_truncated_completions: bool,
    pub max_grad_norm: f64,
    /// Skip the forward/backward of samples whose loss has no gradient (zero advantage under
    /// a clipped surrogate without KL). The update is the same either way (up to float
    /// summation order); off only to measure the full cost.
    pub skip_zero_advantage: bool,
    /// Recompute each layer's activations in the backward instead of keeping them (TRL's
    /// name): less memory, one more forward per layer.
    pub gradient_checkpointing: bool,
    /// With `[generation] rollout_precision = "int8"`: how the ratio π_old / π_rollout of each
    /// sampled token weights its loss term: `"token_truncate"` (min(ρ, cap), TIS; default),
    /// `"token_mask"`, `"sequence_truncate"`, `"sequence_mask"` or `"none"`
    /// (`train::correction`). Ignored when rollouts are exact.
    pub rollout_correction: crate::train::correction::CorrectionMode,
    /// The cap on that ratio (TRL's `vllm_importance_sampling_cap`; verl's TIS threshold 2).
    pub rollout_correction_cap: f64,
    /// Data-parallel workers in this process (threads, each with a replica of the model), each
    /// rolling out prompts_per_step / world_size prompts; the update is one worker's on the
    /// whole batch (`crate::parallel`). GPUs: one process each, the `nccl` feature.
    pub world_size: usize,
}

impl Default for TrainSection {
    fn default() -> Self {
        Self {
            max_steps: 10,
            epochs: None,
            prompts_per_step: 4,
            micro_batch_size: 8,
            num_iterations: 1,
            num_minibatches: None,
            shuffle_minibatches: false,
            mask_truncated_completions: false,
            max_grad_norm: 1.0,
            skip_zero_advantage: true,
            gradient_checkpointing: false,
            rollout_correction: Default::default(),
            rollout_correction_cap: 2.0,
            world_size: 1,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OptimizerSection {
    pub learning_rate: f64,
    pub weight_decay: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub lr_schedule: LrSchedule,
}

impl Default for OptimizerSection {
    fn default() -> Self {
        let a = AdamWConfig::default();
        Self {
            learning_rate: 1e-6,
            weight_decay: a.weight_decay,
            beta1: a.beta1,
            beta2: a.beta2,
            eps: a.eps,
            lr_schedule: LrSchedule::default(),
        }
    }
}

impl OptimizerSection {
    pub fn adamw(&self) -> AdamWConfig {
        AdamWConfig {
            beta1: self.beta1,
            beta2: self.beta2,
            eps: self.eps,
            weight_decay: self.weight_decay,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSection {
    /// Write `rollouts/step_N.jsonl` every N steps (0 = never).
    pub rollouts_every: u64,
}

impl Default for LogSection {
    fn default() -> Self {
        Self { rollouts_every: 1 }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CheckpointSection {
    /// Save every N steps (0 = no periodic checkpoints).
    pub every: u64,
    /// Keep the last K checkpoints.
    pub keep_last: usize,
    /// Also save after the last step (what `llmrl eval --model RUN` and a later resume read);
    /// with `every = 0` and `save_final = false` a run writes no checkpoint at all.
    pub save_final: bool,
    /// Which checkpoints keep the optimizer state (two thirds of a checkpoint: 1.1 of 1.6 GB for
    /// a 135M model): `"all"`, or `"latest"` (older ones keep the model only; resuming from the
    /// latest stays exact).
    pub optimizer_state: crate::run_dir::OptimizerState,
}

impl Default for CheckpointSection {
    fn default() -> Self {
        Self {
            every: 0,
            keep_last: 2,
            save_final: true,
            optimizer_state: Default::default(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EvalSection {
    /// Evaluate on `eval_data` every N steps (0 = never during training).
    pub every: u64,
    /// Samples per problem.
    pub num_samples: usize,
    /// Use at most this many eval problems (0 = all).
    pub max_problems: usize,
    pub temperature: f64,
    pub max_new_tokens: Option<usize>,
}

impl Default for EvalSection {
    fn default() -> Self {
        Self {
            every: 0,
            num_samples: 8,
            max_problems: 0,
            temperature: 1.0,
            max_new_tokens: None,
        }
    }
}

mod file;
pub use file::{apply_override, load_recipe, parse_recipe};

/// A recipe resolved against its directory and checked; everything the trainer needs. Options
/// that depend on each other (the algorithm's defaults, the sampling temperature) are resolved
/// here once, and the trainer reads the result, never the raw recipe field.
pub struct Plan {
    pub recipe: Recipe,
    pub name: String,
    pub base_dir: PathBuf,
    pub model_source: ModelSource,
    pub train_examples: Vec<Example>,
    pub eval_examples: Vec<Example>,
    pub prompt: PromptTemplate,
    pub sampling: SamplingConfig,
    /// How each rollout batch becomes optimizer steps.
    pub update: UpdatePlan,
    /// The `[verifier]`, built once here (an external command's workers start before weights
    /// load and are shared by the trainer, never started twice).
    pub verifier: std::sync::Arc<dyn crate::reward::Verifier>,
    /// `[model] add_tokens`, the token list read; applied when the policy loads.
    pub vocab: crate::model::VocabPlan,
    /// `[generation] constraint`, its SID table read; the trie is built when the policy loads.
    pub action_space: Option<crate::rec::action_space::SidActionSpace>,
}

/// The resolved `[train]` options of the update stage.
#[derive(Clone, Debug, PartialEq)]
pub struct UpdatePlan {
    pub num_iterations: usize,
    /// `[train] num_minibatches`, else the algorithm's own (ROVER's), else 1.
    pub num_minibatches: usize,
    pub shuffle_minibatches: bool,
    pub micro_batch_size: usize,
    pub max_grad_norm: f64,
    /// `[train] skip_zero_advantage`, and the algorithm's loss has no gradient at zero advantage.
    pub skip_zero_advantage: bool,
    pub mask_truncated_completions: bool,
    pub max_new_tokens: usize,
    /// The temperature log-probs are recomputed at: the sampling temperature for sampled
    /// sequences (1 when greedy), 1 for reference completions.
    pub logprob_temperature: f64,
    /// Mini- and micro-batches hold whole groups (the algorithm's loss couples them).
    pub keep_groups_whole: bool,
    /// `[train] gradient_checkpointing`.
    pub gradient_checkpointing: bool,
    /// The rollout correction, when rollouts sample from approximate weights
    /// (`[generation] rollout_precision`); None when they are exact.
    pub correction: Option<crate::train::correction::Correction>,
}

impl Plan {
    /// The recipe's device and its dtype (opened when asked, so `llmrl eval --device` can
    /// override a recipe written for another machine).
    pub fn device(&self) -> Result<(candle_core::Device, candle_core::DType)> {
        crate::model::device::parse_device(&self.recipe.model.device).context("[model] device")
    }

    /// The learning rate of step `step` (1-based) under the recipe's schedule.
    pub fn learning_rate(&self, step: u64) -> f64 {
        let o = &self.recipe.optimizer;
        o.lr_schedule.lr(
            o.learning_rate,
            step.saturating_sub(1),
            self.recipe.train.max_steps,
        )
    }

    /// Problems to evaluate on: `eval_data` (else `data`), the first `max_problems` (0 = all).
    pub fn eval_problems(&self, max_problems: usize) -> Vec<Example> {
        let all = if self.eval_examples.is_empty() {
            &self.train_examples
        } else {
            &self.eval_examples
        };
        let n = if max_problems == 0 {
            all.len()
        } else {
            max_problems.min(all.len())
        };
        all[..n].to_vec()
    }

    /// The generation constraint over the tokenizer of the loaded policy (SID tokens added),
    /// when the recipe sets one.
    pub fn constraint(
        &self,
        tok: &crate::model::Tokenizer,
    ) -> Result<Option<crate::rec::trie::SidTrie>> {
        let g = &self.recipe.generation;
        let beams = if g.group == GroupMode::Beam {
            g.num_generations
        } else {
            0
        };
        self.action_space
            .as_ref()
            .map(|a| a.trie(tok, g.max_new_tokens, beams))
            .transpose()
    }

    /// The training sampling with evaluation's temperature and length.
    pub fn eval_sampling(&self, temperature: f64, max_new_tokens: Option<usize>) -> SamplingConfig {
        let mut s = self.sampling.clone();
        s.temperature = temperature;
        if let Some(m) = max_new_tokens {
            s.max_new_tokens = m;
        }
        s
    }
}

impl Recipe {
    /// Validate and load what is cheap (datasets, prompt template), so a bad recipe fails before
    /// any weights are read. `recipe_path` anchors relative paths.
    pub fn resolve(mut self, recipe_path: &Path) -> Result<Plan> {
        let base_dir = match recipe_path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let action_space = match &self.generation.constraint {
            Some(c) => Some(c.resolve(&base_dir)?),
            None => None,
        };
        let sid_index = action_space.as_ref().map(|a| a.index.as_path());
        self.verifier
            .resolve_paths(&base_dir, sid_index)
            .context("[verifier]")?;
        let name = self.name.clone().unwrap_or_else(|| {
            recipe_path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or("run".into())
        });
        let model_source = resolve_model(&self.model.source, &base_dir)?;
        let vocab = self.model.vocab().resolve(&base_dir).context("[model]")?;
        if let Some(l) = &self.model.lora {
            l.validate().context("[model] lora")?;
        }
        let g = &self.generation;
        let sampling = g.sampling();
        sampling.validate().context("[generation]")?;
        ensure!(
            g.num_generations >= 1,
            "[generation] num_generations must be ≥ 1"
        );
        let t = &self.train;
        ensure!(
            t.max_steps >= 1,
            "[train] max_steps must be ≥ 1 (a run of 0 steps would do nothing)"
        );
        ensure!(
            t.prompts_per_step >= 1,
            "[train] prompts_per_step must be ≥ 1"
        );
        ensure!(
            t.micro_batch_size >= 1,
            "[train] micro_batch_size must be ≥ 1"
        );
        ensure!(t.num_iterations >= 1, "[train] num_iterations must be ≥ 1");
        crate::parallel::check_world_size(t.world_size, t.prompts_per_step).context("[train]")?;
        ensure!(
            t.max_grad_norm > 0.0,
            "[train] max_grad_norm must be > 0 (use a large value to disable clipping)"
        );
        ensure!(
            self.optimizer.learning_rate > 0.0,
            "[optimizer] learning_rate must be > 0"
        );
        self.optimizer.adamw().validate()?;
        self.optimizer.lr_schedule.validate()?;
        let algo = crate::algo::build(&self.algorithm).context("[algorithm]")?;
        let sampled = algo.rollout_source() == RolloutSource::Policy;
        if let Some(e) = &self.exploration {
            ensure!(
                sampled,
                "[exploration] needs an RL algorithm, not {}",
                algo.name()
            );
            e.validate().context("[exploration]")?;
        }
        g.group
            .check(&sampling, sampled, algo.name())
            .context("[generation] group")?;
        if g.rollout_precision == RolloutPrecision::Int8 {
            ensure!(
                sampled && g.group == GroupMode::Sample,
                "[generation] rollout_precision = \"int8\" applies to sampled rollouts of an RL \
                 algorithm (beam groups recompute their log-probs exactly anyway); hint: remove it"
            );
            ensure!(
                self.model.device == "cpu",
                "[generation] rollout_precision = \"int8\" runs on CPU only (the int8 kernel is a \
                 CPU kernel); hint: use \"exact\" with device = \"{}\"",
                self.model.device
            );
        }
        ensure!(
            t.rollout_correction_cap > 0.0 && t.rollout_correction_cap.is_finite(),
            "[train] rollout_correction_cap must be a positive number, got {}",
            t.rollout_correction_cap
        );
        let num_minibatches = t
            .num_minibatches
            .or(self.algorithm.num_minibatches())
            .unwrap_or(1);
        let rollout = t.prompts_per_step * if sampled { g.num_generations } else { 1 };
        ensure!(
            num_minibatches >= 1 && num_minibatches <= rollout,
            "[train] num_minibatches = {num_minibatches} must be between 1 and the rollout batch size {rollout} \
             (prompts_per_step × num_generations)"
        );
        let train_examples = crate::data::load(&self.data, &base_dir).context("[data]")?;
        let eval_examples = match &self.eval_data {
            Some(d) => crate::data::load(d, &base_dir).context("[eval_data]")?,
            None => vec![],
        };
        if self.eval.every > 0 && eval_examples.is_empty() {
            bail!(
                "[eval] every = {} needs an [eval_data] table",
                self.eval.every
            );
        }
        let prompts_dir = crate::data::prompt::builtin_prompts_dir();
        let tpl_path = base_dir.join(&self.prompt.template);
        let tpl_ref = if tpl_path.is_file() {
            tpl_path.to_string_lossy().into_owned()
        } else {
            self.prompt.template.clone()
        };
        let prompt = PromptTemplate::load(&tpl_ref, &prompts_dir).context("[prompt] template")?;
        // Every row is checked here, before weights load: a bad row 2 fails now, not at step 2.
        let all = || train_examples.iter().chain(&eval_examples);
        check_rows(all(), |ex| prompt.validate(ex)).context("[prompt] template")?;
        let verifier: std::sync::Arc<dyn crate::reward::Verifier> =
            crate::reward::build(&self.verifier)
                .context("[verifier]")?
                .into();
        if !sampled {
            // Each data source says where its reference completion lives.
            check_rows(train_examples.iter(), |ex| {
                self.data.reference_completion(ex).map(|_| ())
            })
            .with_context(|| format!("[data] for algorithm {}", algo.name()))?;
        }
        if algo.rollout_source() == RolloutSource::Preference {
            check_rows(train_examples.iter(), |ex| {
                crate::data::preference::Preference::from_example(ex).map(|_| ())
            })
            .with_context(|| format!("[data] for algorithm {}", algo.name()))?;
        }
        let judged: Vec<&Example> = if sampled {
            all().collect()
        } else {
            eval_examples.iter().collect()
        };
        check_rows(judged.into_iter(), |ex| verifier.validate(ex)).context("[verifier]")?;
        let update = UpdatePlan {
            num_iterations: t.num_iterations,
            num_minibatches,
            shuffle_minibatches: t.shuffle_minibatches,
            micro_batch_size: t.micro_batch_size,
            max_grad_norm: t.max_grad_norm,
            skip_zero_advantage: t.skip_zero_advantage && algo.zero_advantage_has_no_gradient(),
            mask_truncated_completions: t.mask_truncated_completions,
            max_new_tokens: g.max_new_tokens,
            logprob_temperature: if sampled {
                sampling.logprob_temperature()
            } else {
                1.0
            },
            keep_groups_whole: algo.keeps_groups_whole(),
            gradient_checkpointing: t.gradient_checkpointing,
            correction: (g.rollout_precision != RolloutPrecision::Exact).then_some(Correction {
                mode: t.rollout_correction,
                cap: t.rollout_correction_cap,
            }),
        };
        if let Some(e) = self.train.epochs {
            ensure!(
                e > 0.0 && e.is_finite(),
                "[train] epochs must be a positive number, got {e}"
            );
            let per = self.train.prompts_per_step as f64;
            self.train.max_steps = (e * train_examples.len() as f64 / per).ceil().max(1.0) as u64;
        }
        Ok(Plan {
            recipe: self,
            name,
            base_dir,
            model_source,
            train_examples,
            eval_examples,
            prompt,
            sampling,
            update,
            verifier,
            vocab,
            action_space,
        })
    }
}

/// A model source relative to the recipe when such a path exists, else as given (hub ids).
pub fn resolve_model(source: &str, base_dir: &Path) -> Result<ModelSource> {
    let rel = base_dir.join(source);
    if rel.exists() {
        return ModelSource::parse(&rel.to_string_lossy());
    }
    if crate::model::load::looks_local(source, base_dir) && !Path::new(source).exists() {
        bail!(
            "[model] source `{source}`: no such directory or file ({}); hint: {}",
            rel.display(),
            crate::run_dir::missing_model_hint(source, base_dir)
        );
    }
    ModelSource::parse(source).context("[model] source")
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"
seed = 3
[model]
source = "tests/fixtures/tiny_llama"
[data]
source = "countdown"
count = 10
[prompt]
template = "countdown"
[verifier]
name = "countdown"
[algorithm]
name = "grpo"
"#;

    #[test]
    fn minimal_recipe_parses_with_defaults() {
        let r = parse_recipe(BASE, &[]).unwrap();
        assert_eq!(r.seed, 3);
        assert_eq!(r.generation.num_generations, 8);
        assert_eq!(r.train.max_grad_norm, 1.0);
    }

    #[test]
    fn unknown_key_is_rejected_with_valid_names() {
        let e = parse_recipe(&format!("{BASE}\n[train]\nmax_step = 3\n"), &[]).unwrap_err();
        let msg = format!("{e:#}");
        assert!(
            msg.contains("unknown field `max_step`") && msg.contains("max_steps"),
            "{msg}"
        );
    }

    #[test]
    fn unknown_variant_is_rejected_with_valid_names() {
        let e = parse_recipe(&BASE.replace("name = \"grpo\"", "name = \"ppo\""), &[]).unwrap_err();
        let msg = format!("{e:#}");
        assert!(
            msg.contains("unknown variant `ppo`") && msg.contains("rover"),
            "{msg}"
        );
    }

    #[test]
    fn unknown_algorithm_option_is_rejected() {
        let e = parse_recipe(
            &BASE.replace("name = \"grpo\"", "name = \"grpo\"\nclip_eps = 0.3"),
            &[],
        )
        .unwrap_err();
        assert!(format!("{e:#}").contains("clip_eps"));
    }

    #[test]
    fn overrides_take_precedence_and_create_tables() {
        let r = parse_recipe(
            BASE,
            &[
                "seed=9".into(),
                "train.max_steps=42".into(),
                "algorithm.epsilon=0.3".into(),
                "model.device=cpu".into(),
            ],
        )
        .unwrap();
        assert_eq!(r.seed, 9);
        assert_eq!(r.train.max_steps, 42);
        match r.algorithm {
            AlgoConfig::Grpo(g) => assert_eq!(g.epsilon, 0.3),
            _ => panic!(),
        }
        // A later override wins over an earlier one.
        let r = parse_recipe(BASE, &["seed=1".into(), "seed=2".into()]).unwrap();
        assert_eq!(r.seed, 2);
    }

    #[test]
    fn overriding_the_run_length_drops_the_other_unit() {
        // A recipe written in epochs, run for 3 steps from the command line: 3 steps, not the
        // epoch count; and the reverse.
        let in_epochs = format!("{BASE}\n[train]\nepochs = 2.0\n");
        let r = parse_recipe(&in_epochs, &["train.max_steps=3".into()]).unwrap();
        assert_eq!((r.train.max_steps, r.train.epochs), (3, None));
        let in_steps = format!("{BASE}\n[train]\nmax_steps = 7\n");
        let r = parse_recipe(&in_steps, &["train.epochs=1.5".into()]).unwrap();
        assert_eq!(r.train.epochs, Some(1.5));
    }

    #[test]
    fn bad_override_key_is_an_error() {
        assert!(parse_recipe(BASE, &["train.nope=1".into()]).is_err());
        assert!(parse_recipe(BASE, &["no_equals_sign".into()]).is_err());
    }

    /// Every shipped recipe parses: a renamed key or variant cannot rot in `recipes/`.
    #[test]
    fn shipped_recipes_parse() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("recipes");
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let trackrec = path
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("trackrec-"));
            if trackrec {
                // Two models, their own recipe shape: rec::trackrec::config checks these.
                crate::rec::trackrec::config::load(&path, &[])
                    .unwrap_or_else(|e| panic!("{}: {e:#}", path.display()));
            } else if path.extension().is_some_and(|e| e == "toml") {
                load_recipe(&path, &[]).unwrap_or_else(|e| panic!("{}: {e:#}", path.display()));
                n += 1;
            }
        }
        assert!(n >= 9, "found {n} recipes");
    }

    /// `[train] epochs` becomes max_steps over the loaded data; `[model] add_tokens` resolves
    /// its token file at resolve time (before weights).
    #[test]
    fn epochs_and_added_tokens_resolve() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("t.json"), r#"["<a_0>", "<a_1>"]"#).unwrap();
        let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny_llama");
        let text = BASE.replace("tests/fixtures/tiny_llama", &model.display().to_string())
            + "[train]\nepochs = 1.5\nprompts_per_step = 4\n";
        let r = parse_recipe(&text, &["model.add_tokens={ file = \"t.json\" }".into()]).unwrap();
        let plan = r.resolve(&dir.path().join("r.toml")).unwrap();
        assert_eq!(plan.recipe.train.max_steps, 4); // ⌈1.5 × 10 / 4⌉
        assert_eq!(plan.vocab.tokens, vec!["<a_0>", "<a_1>"]);
        let bad =
            parse_recipe(&text, &["model.add_tokens={ file = \"nope.json\" }".into()]).unwrap();
        let e = match bad.resolve(&dir.path().join("r.toml")) {
            Ok(_) => panic!("a missing token file resolves"),
            Err(e) => format!("{e:#}"),
        };
        assert!(e.contains("nope.json"), "{e}");
    }

    /// `rollout_precision = "int8"` resolves to a correction; where it cannot apply (SFT, beam
    /// groups, a GPU) or the cap is not positive, one clear error before any weights load.
    #[test]
    fn int8_rollouts_resolve_or_explain() {
        let dir = tempfile::tempdir().unwrap();
        let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny_llama");
        let text = BASE.replace("tests/fixtures/tiny_llama", &model.display().to_string());
        let resolve = |sets: &[&str]| {
            let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
            parse_recipe(&text, &sets)
                .and_then(|r| r.resolve(&dir.path().join("r.toml")))
                .map(|p| p.update.correction)
                .map_err(|e| format!("{e:#}"))
        };
        assert_eq!(resolve(&[]).unwrap(), None);
        let int8 = "generation.rollout_precision=\"int8\"";
        assert_eq!(
            resolve(&[int8]).unwrap(),
            Some(Correction {
                mode: crate::train::correction::CorrectionMode::TokenTruncate,
                cap: 2.0
            })
        );
        let c = resolve(&[
            int8,
            "train.rollout_correction=\"sequence_mask\"",
            "train.rollout_correction_cap=3.0",
        ]);
        assert_eq!(c.unwrap().unwrap().cap, 3.0);
        let e = resolve(&[int8, "algorithm={ name = \"sft\" }"]).unwrap_err();
        assert!(
            e.contains("rollout_precision") && e.contains("sampled"),
            "{e}"
        );
        let e = resolve(&[int8, "model.device=\"cuda:0\""]).unwrap_err();
        assert!(e.contains("CPU only"), "{e}");
        let e = resolve(&[int8, "train.rollout_correction_cap=0.0"]).unwrap_err();
        assert!(e.contains("rollout_correction_cap"), "{e}");
        let e = resolve(&["train.rollout_correction=\"clip\""]).unwrap_err();
        assert!(e.contains("token_truncate"), "{e}");
    }
}
