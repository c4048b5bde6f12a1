//! A TrackRec recipe: the loop's own options (`[trackrec]`), the prompts (`[data]`), and G and V
//! as two sub-recipes (`[generator]`, `[validator]`), each with its own `model`, `generation`,
//! `algorithm`, `train`, `optimizer`, `checkpoint` and `log` tables as `llmrl train` reads them.
//! A stage's recipe is its part plus the `data`, `prompt` and `verifier` tables the loop fills
//! in, and the model the stage starts from ([`TrackRecPlan::stage_recipe`]).
//!
//! Everything a user can get wrong is checked in [`TrackRecRecipe::resolve`], before any model
//! loads: unknown keys (in the sub-recipes too), the algorithms (G: `sdpo`/`dpo` for TrackRec's
//! preference loop, `grpo`/`rover` for the RL variant; V: `sft`), the templates (G's needs
//! `{history}` and may not read `{candidate}` or `{label}`), the model sources and every row's
//! label.

use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};
use serde::{Deserialize, Serialize};

use super::data::{check_generator_template, check_validator_template, PromptSets, PromptSource};
use crate::algo::AlgoConfig;
use crate::data::PromptTemplate;
use crate::recipe::{parse_recipe, Recipe};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrackRecRecipe {
    /// Run name (default: the recipe file's stem).
    pub name: Option<String>,
    #[serde(default)]
    pub seed: u64,
    #[serde(default)]
    pub trackrec: TrackRecSection,
    pub data: PromptSource,
    /// G's sub-recipe (no `data`, `prompt` or `verifier`: the loop provides them).
    pub generator: toml::Table,
    /// V's sub-recipe, likewise.
    pub validator: toml::Table,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrackRecSection {
    /// Alternations of G and V after V's first tuning (TrackRec: 3).
    pub rounds: usize,
    /// CoTs G samples per training prompt per round (TrackRec: 10), distinct seeds.
    pub num_cots: usize,
    /// G's training prompts (a seeded sample; 0 = all).
    pub train_prompts: usize,
    /// V's training prompts, a superset of G's (0 = G's). V learns the base task from (prompt +
    /// G's greedy CoT → label) rows, which cost one greedy CoT each; a 135M V learns nothing
    /// from 64 rows, while G's preference rounds cost `num_cots` samples and V calls per prompt.
    pub validator_prompts: usize,
    /// Held-out prompts V is evaluated on (a seeded sample; 0 = all).
    pub test_prompts: usize,
    /// G's template: the user's history, never the candidate or the label.
    pub generator_prompt: String,
    /// V's template with G's CoT (`{cot}`) inside `<summary>`...`</summary>`.
    pub validator_prompt: String,
    /// V's template without a CoT (the TALLRec baseline).
    pub validator_prompt_no_cot: String,
    /// Wrap G's and V's prompts in the model's chat template.
    pub chat: bool,
    /// Also tune a V without CoTs and evaluate it (the baseline the CoTs must beat).
    pub baseline_no_cot: bool,
    /// Bootstrap resamples for the 95 % intervals of each AUC.
    pub bootstrap: usize,
    /// Sequences per generation batch when G writes CoTs outside training.
    pub generate_batch: usize,
    /// Rows per forward when V scores.
    pub judge_batch: usize,
}

impl Default for TrackRecSection {
    fn default() -> Self {
        Self {
            rounds: 3,
            num_cots: 4,
            train_prompts: 64,
            validator_prompts: 0,
            test_prompts: 200,
            generator_prompt: "trackrec_cot".into(),
            validator_prompt: "trackrec_validator".into(),
            validator_prompt_no_cot: "trackrec_validator_nocot".into(),
            chat: true,
            baseline_no_cot: true,
            bootstrap: 1000,
            generate_batch: 16,
            judge_batch: 8,
        }
    }
}

/// How G learns from V in a round.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum GeneratorMode {
    /// TrackRec: sample → V scores → preference lists → S-DPO (or DPO).
    Preference,
    /// The RL variant: GRPO or ROVER with V's probability of the true label as the reward.
    Rl,
}

/// Tables a sub-recipe may hold (the loop writes the others).
const PART_KEYS: [&str; 7] = [
    "model",
    "generation",
    "algorithm",
    "train",
    "optimizer",
    "checkpoint",
    "log",
];

/// A resolved TrackRec recipe: checked, prompts loaded, templates found.
pub struct TrackRecPlan {
    pub recipe: TrackRecRecipe,
    pub name: String,
    pub base_dir: PathBuf,
    pub prompts: PromptSets,
    pub mode: GeneratorMode,
    /// Templates as the stage recipes name them (a bare built-in name or an absolute path).
    pub generator_template: String,
    pub validator_template: String,
    pub validator_template_no_cot: String,
    /// G's and V's starting models, as absolute paths where they are local.
    pub generator_model: String,
    pub validator_model: String,
    /// G's `[generation]` as sampling options (the round's n CoTs; greedy CoTs keep its length).
    pub generator_sampling: crate::generate::SamplingConfig,
}

/// Reads a TrackRec recipe and applies `--set` overrides (e.g. `generator.optimizer.learning_rate=1e-5`).
pub fn load(path: &Path, overrides: &[String]) -> Result<TrackRecRecipe> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading {}; hint: recipes/trackrec-*.toml", path.display()))?;
    parse(&text, overrides).with_context(|| format!("in recipe {}", path.display()))
}

pub fn parse(text: &str, overrides: &[String]) -> Result<TrackRecRecipe> {
    let _: TrackRecRecipe = toml::from_str(text)?;
    let mut value: toml::Value = toml::from_str(text)?;
    for o in overrides {
        crate::recipe::apply_override(&mut value, o)?;
    }
    value.try_into().context("after applying --set overrides")
}

impl TrackRecRecipe {
    /// Checks everything and loads the prompts; `recipe_path` anchors relative paths.
    pub fn resolve(self, recipe_path: &Path) -> Result<TrackRecPlan> {
        let base_dir = match recipe_path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let t = &self.trackrec;
        ensure!(t.rounds >= 1, "[trackrec] rounds must be ≥ 1");
        ensure!(
            t.num_cots >= 2,
            "[trackrec] num_cots = {} must be ≥ 2: a preference (or a GRPO group) needs two CoTs \
             to compare",
            t.num_cots
        );
        ensure!(
            t.validator_prompts == 0
                || (t.train_prompts > 0 && t.validator_prompts >= t.train_prompts),
            "[trackrec] validator_prompts = {} must be 0 (V trains on G's prompts) or at least \
             train_prompts = {} (G's prompts are drawn from V's){}",
            t.validator_prompts,
            t.train_prompts,
            if t.train_prompts == 0 {
                "; train_prompts = 0 already gives V every prompt"
            } else {
                ""
            }
        );
        ensure!(
            t.generate_batch >= 1 && t.judge_batch >= 1,
            "[trackrec] generate_batch and judge_batch must be ≥ 1"
        );
        // Templates first: a G template that would show the target is an error before any data
        // or model is read.
        let template = |name: &str| -> Result<(String, PromptTemplate)> {
            let file = base_dir.join(name);
            let as_named = if file.is_file() {
                std::fs::canonicalize(&file)?.to_string_lossy().into_owned()
            } else {
                name.to_string()
            };
            let tpl = PromptTemplate::load(&as_named, &crate::data::prompt::builtin_prompts_dir())
                .with_context(|| format!("[trackrec] template {name:?}"))?;
            Ok((as_named, tpl))
        };
        let (g_name, g_tpl) = template(&t.generator_prompt)?;
        check_generator_template(&g_tpl, &t.generator_prompt)?;
        let (v_name, v_tpl) = template(&t.validator_prompt)?;
        check_validator_template(&v_tpl, &t.validator_prompt, true)?;
        let (v0_name, v0_tpl) = template(&t.validator_prompt_no_cot)?;
        check_validator_template(&v0_tpl, &t.validator_prompt_no_cot, false)?;

        let (mode, g_recipe) = check_part(&self.generator, "generator", |a| match a {
            AlgoConfig::Sdpo(_) | AlgoConfig::Dpo(_) => Ok(GeneratorMode::Preference),
            AlgoConfig::Grpo(_) | AlgoConfig::Rover(_) => Ok(GeneratorMode::Rl),
            AlgoConfig::Sft(_) => bail!(
                "[generator.algorithm] name = \"sft\": G learns from V's feedback; use \"sdpo\" \
                 (TrackRec), \"dpo\", or \"grpo\"/\"rover\" (the RL variant)"
            ),
        })?;
        let _ = check_part(&self.validator, "validator", |a| match a {
            AlgoConfig::Sft(_) => Ok(()),
            _ => bail!(
                "[validator.algorithm] must be name = \"sft\": V is rec-tuned on (prompt + CoT → \
                 label)"
            ),
        })?;
        let generator_model = model_source(&self.generator, "generator", &base_dir)?;
        let validator_model = model_source(&self.validator, "validator", &base_dir)?;
        let prompts = self
            .data
            .load(
                &base_dir,
                t.train_prompts,
                t.validator_prompts,
                t.test_prompts,
                self.seed,
            )
            .context("[data]")?;
        for ex in prompts.validator.iter().chain(&prompts.test) {
            g_tpl.validate(ex).context("[trackrec] generator_prompt")?;
        }
        let name = self.name.clone().unwrap_or_else(|| {
            recipe_path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or("trackrec".into())
        });
        Ok(TrackRecPlan {
            recipe: self,
            name,
            base_dir,
            prompts,
            mode,
            generator_template: g_name,
            validator_template: v_name,
            validator_template_no_cot: v0_name,
            generator_model,
            validator_model,
            generator_sampling: g_recipe.generation.sampling(),
        })
    }
}

/// Checks a sub-recipe's keys and algorithm (by deserializing it as a stage would be).
fn check_part<T>(
    part: &toml::Table,
    name: &str,
    algo: impl Fn(&AlgoConfig) -> Result<T>,
) -> Result<(T, Recipe)> {
    if let Some(k) = part.keys().find(|k| !PART_KEYS.contains(&k.as_str())) {
        bail!(
            "[{name}] has `{k}`, which the loop fills in or does not know; a sub-recipe holds \
             only {}",
            PART_KEYS.join(", ")
        );
    }
    let probe = with_stage_tables(part, "probe.jsonl", "probe", true, "jsonl");
    let recipe: Recipe = parse_recipe(&toml::to_string(&probe)?, &[])
        .with_context(|| format!("[{name}] as a recipe"))?;
    ensure!(
        recipe.model.lora.is_none() && recipe.model.add_tokens.is_none(),
        "[{name}.model] lora / add_tokens: a stage hands its final `model/` to the next one, \
         which a LoRA checkpoint (adapter only) does not have; fine-tune the whole model"
    );
    recipe
        .generation
        .sampling()
        .validate()
        .with_context(|| format!("[{name}.generation]"))?;
    Ok((algo(&recipe.algorithm)?, recipe))
}

/// The sub-recipe's `[model] source`, anchored at the recipe's directory when it exists there.
fn model_source(part: &toml::Table, name: &str, base_dir: &Path) -> Result<String> {
    let src = part
        .get("model")
        .and_then(|m| m.get("source"))
        .and_then(|s| s.as_str())
        .with_context(|| format!("[{name}.model] needs a `source`"))?;
    let src_parsed =
        crate::recipe::resolve_model(src, base_dir).with_context(|| format!("[{name}.model]"))?;
    Ok(match src_parsed {
        crate::model::ModelSource::Dir(p) | crate::model::ModelSource::Gguf(p) => {
            std::fs::canonicalize(&p)
                .unwrap_or(p)
                .to_string_lossy()
                .into_owned()
        }
        _ => src.to_string(),
    })
}

/// `part` plus the tables every stage gets: its data file, its prompt template, a placeholder
/// verifier (stages that need a reward replace it with V), and a seed if the part has none.
fn with_stage_tables(
    part: &toml::Table,
    data_path: &str,
    template: &str,
    chat: bool,
    source: &str,
) -> toml::Table {
    let mut t = part.clone();
    let mut data = toml::Table::new();
    data.insert("source".into(), source.into());
    data.insert("path".into(), data_path.into());
    t.insert("data".into(), data.into());
    let mut prompt = toml::Table::new();
    prompt.insert("template".into(), template.into());
    prompt.insert("chat".into(), chat.into());
    t.insert("prompt".into(), prompt.into());
    let mut verifier = toml::Table::new();
    verifier.insert("name".into(), "exact_match".into());
    verifier.insert("answers_field".into(), "label".into());
    t.insert("verifier".into(), verifier.into());
    t
}

/// What a stage trains: which part, on which data, from which model.
pub struct StageSpec<'a> {
    pub part: &'a toml::Table,
    /// The stage's data file (JSONL rows, or preference rows).
    pub data: &'a Path,
    pub preference_data: bool,
    pub template: &'a str,
    /// The model the stage starts from (and, for S-DPO, its reference).
    pub model: &'a str,
    pub seed: u64,
    /// `[generation] num_generations` for RL stages.
    pub num_generations: Option<usize>,
}

impl TrackRecPlan {
    /// A stage's recipe, resolved against `stage_dir` (data and checks as `llmrl train` does).
    pub fn stage_recipe(&self, s: &StageSpec, stage_dir: &Path) -> Result<crate::recipe::Plan> {
        let source = if s.preference_data {
            "preference"
        } else {
            "jsonl"
        };
        // Absolute: the stage's recipe is resolved against its own directory.
        let data = std::fs::canonicalize(s.data)
            .with_context(|| format!("stage data {}", s.data.display()))?;
        let data = data.to_string_lossy();
        let mut t = with_stage_tables(s.part, &data, s.template, self.recipe.trackrec.chat, source);
        let model = t
            .entry("model")
            .or_insert_with(|| toml::Table::new().into());
        if let Some(m) = model.as_table_mut() {
            m.insert("source".into(), s.model.into());
        }
        // TOML integers are i64: the stage seed keeps 63 bits.
        t.insert("seed".into(), ((s.seed & i64::MAX as u64) as i64).into());
        let train = t
            .entry("train")
            .or_insert_with(|| toml::Table::new().into());
        if let Some(tr) = train.as_table_mut() {
            // One pass over the stage's data unless the part says otherwise.
            if !tr.contains_key("epochs") && !tr.contains_key("max_steps") {
                tr.insert("epochs".into(), 1.0.into());
            }
        }
        if let Some(n) = s.num_generations {
            let g = t
                .entry("generation")
                .or_insert_with(|| toml::Table::new().into());
            if let Some(g) = g.as_table_mut() {
                g.insert("num_generations".into(), (n as i64).into());
            }
        }
        let text = toml::to_string_pretty(&t)?;
        std::fs::write(stage_dir.join("recipe.toml"), &text)?;
        let recipe = parse_recipe(&text, &[])?;
        ensure!(
            recipe.checkpoint.save_final,
            "[checkpoint] save_final = false: a stage's final checkpoint is the next stage's \
             model; leave it on"
        );
        recipe.resolve(&stage_dir.join("recipe.toml"))
    }
}
