//! The recipe's sections besides `[data]`, `[algorithm]`, `[verifier]` and `[exploration]`
//! (which their stages own): the file shape of `[model]`, `[prompt]`, `[generation]`, `[train]`,
//! `[optimizer]`, `[log]`, `[checkpoint]` and `[eval]`, with their defaults. Checked and
//! resolved in `Recipe::resolve`.

use serde::{Deserialize, Serialize};

use crate::generate::{GroupMode, SamplingConfig};
use crate::optim::{AdamWConfig, LrSchedule};

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
