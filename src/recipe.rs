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

mod sections;
pub use sections::*;

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
