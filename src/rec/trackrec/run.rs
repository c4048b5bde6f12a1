//! Running a TrackRec run: its directory, and each stage of [`super::stages`] in turn.
//!
//! ```text
//! RUN/trackrec.resolved.toml  run.json  state.json  eval.jsonl (one line per V evaluation)
//! RUN/prompts/{train,validator,test}.jsonl       the prompt rows (candidate and label included):
//!                                                G's, V's (a superset of G's) and the test's
//! RUN/stages/gN-cots/{train,test}.jsonl          G_N's greedy CoTs, one per V training / test
//!                                                prompt
//! RUN/stages/rN-sample/cots.jsonl                the round's n CoTs per training prompt
//! RUN/stages/rN-score/{scored,prefs}.jsonl, summary.json   V's rewards, the preference lists
//! RUN/stages/{vN,v-nocot,rN-g}/{recipe.toml,data.jsonl,run/}   a training stage: its recipe,
//!                                                data and an `llmrl train` run directory
//! RUN/stages/eval-*/{scores.jsonl,summary.json}  V's p(Yes) per test prompt and its metrics
//! ```
//! A training stage's model is its run's final checkpoint (`run/checkpoints/step_N/model`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::config::{GeneratorMode, StageSpec, TrackRecPlan};
use super::cots::{cot_row, greedy, read_rows, write_rows, Writer};
use super::prefs::preference_lists;
use super::stages::{plan_stages, Stage, State};
use super::validator::{
    p_yes, score_rows, v_metrics, validator_judge, VMetrics, ValidatorReward, COT_FIELD,
};
use crate::data::{Example, PromptTemplate};
use crate::progress::Reporter;
use crate::run_dir::RunDir;
use crate::train::{self, Start};

/// The resolved recipe's file in a run directory.
pub const RESOLVED: &str = "trackrec.resolved.toml";

/// One line of a run's `eval.jsonl` (and an eval stage's `summary.json`): V's metrics on the
/// test prompts under one condition. `round` is None for the no-CoT evaluations.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EvalLine {
    #[serde(flatten)]
    pub metrics: VMetrics,
    /// The stage's name: `eval-zero-shot`, `eval-no-cot`, `eval-rN`.
    pub stage: String,
    /// In words, e.g. "V1 with G1's CoTs".
    pub condition: String,
    pub round: Option<usize>,
}

/// Writes a new run directory (refusing a non-empty one) with the recipe, `run.json` (`meta`,
/// plus `recipe_dir` if it has none) and the prompt rows.
pub fn create(plan: &TrackRecPlan, root: &Path, mut meta: Value) -> Result<()> {
    if root.exists() && std::fs::read_dir(root)?.next().is_some() {
        bail!(
            "run directory {} already exists and is not empty; pick another --out, or continue \
             it with `llmrl trackrec --resume {}`",
            root.display(),
            root.display()
        );
    }
    if meta.get("recipe_dir").is_none() {
        // What a resume resolves the recipe's relative paths against.
        let base = std::fs::canonicalize(&plan.base_dir).unwrap_or(plan.base_dir.clone());
        meta["recipe_dir"] = base.display().to_string().into();
    }
    std::fs::create_dir_all(root.join("prompts"))?;
    std::fs::write(root.join(RESOLVED), toml::to_string_pretty(&plan.recipe)?)?;
    std::fs::write(root.join("run.json"), serde_json::to_string_pretty(&meta)?)?;
    write_rows(&root.join("prompts/train.jsonl"), &plan.prompts.train)?;
    write_rows(
        &root.join("prompts/validator.jsonl"),
        &plan.prompts.validator,
    )?;
    write_rows(&root.join("prompts/test.jsonl"), &plan.prompts.test)?;
    Ok(())
}

/// Checks that a resumed run's recipe still yields the prompts it started with.
pub fn check_prompts(plan: &TrackRecPlan, root: &Path) -> Result<()> {
    let p = &plan.prompts;
    for (name, rows) in [
        ("train", &p.train),
        ("validator", &p.validator),
        ("test", &p.test),
    ] {
        let path = root.join(format!("prompts/{name}.jsonl"));
        // Runs from before V had its own prompts trained V on G's.
        let path = if name == "validator" && !path.exists() {
            root.join("prompts/train.jsonl")
        } else {
            path
        };
        let stored = read_rows(&path)?;
        let same = stored.len() == rows.len()
            && stored
                .iter()
                .zip(rows.iter())
                .all(|(a, b)| a.fields == b.fields);
        anyhow::ensure!(
            same,
            "{} differs from the prompts the recipe yields now (data files changed?); a resume \
             must see the same prompts",
            path.display()
        );
    }
    Ok(())
}

/// Runs every stage not yet done, in order.
pub fn run(plan: &TrackRecPlan, root: &Path, report: &dyn Reporter) -> Result<()> {
    let t = &plan.recipe.trackrec;
    let mut state = State::load(root)?;
    let stages = plan_stages(t.rounds, plan.mode, t.baseline_no_cot);
    let r = Runner { plan, root, report };
    for stage in &stages {
        if state.is_done(stage) {
            continue;
        }
        report.message(&format!("stage {}", stage.name()));
        r.run_stage(stage)
            .with_context(|| format!("stage {}", stage.name()))?;
        state.mark(root, stage)?;
    }
    Ok(())
}

struct Runner<'a> {
    plan: &'a TrackRecPlan,
    root: &'a Path,
    report: &'a dyn Reporter,
}

impl Runner<'_> {
    fn dir(&self, stage: &Stage) -> PathBuf {
        self.root.join("stages").join(stage.name())
    }

    /// A stage's own seed: the recipe's, mixed with its name (distinct per stage and round).
    fn seed(&self, stage: &Stage) -> u64 {
        let h = stage.name().bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
        });
        self.plan.recipe.seed ^ h
    }

    fn run_stage(&self, stage: &Stage) -> Result<()> {
        let dir = self.dir(stage);
        std::fs::create_dir_all(&dir)?;
        match stage {
            Stage::Eval { round, tuned } => self.eval(stage, *round, *tuned),
            Stage::TuneV { round } => self.tune_v(stage, *round),
            Stage::Cots { round } => self.cots(stage, *round),
            Stage::Sample { round } => self.sample(stage, *round),
            Stage::Score { round } => self.score(stage, *round),
            Stage::TrainG { round } => self.train_g(stage, *round),
        }
    }

    fn part_device(part: &toml::Table) -> String {
        part.get("model")
            .and_then(|m| m.get("device"))
            .and_then(|d| d.as_str())
            .unwrap_or("cpu")
            .to_string()
    }

    /// What writes CoTs with G as it is at the end of `round`.
    fn g_writer(&self, round: usize) -> Result<Writer<'_>> {
        let p = self.plan;
        Ok(Writer {
            model: self.g_model(round)?,
            template: &p.generator_template,
            chat: p.recipe.trackrec.chat,
            device: Self::part_device(&p.recipe.generator),
            batch: p.recipe.trackrec.generate_batch,
        })
    }

    /// G at the end of `round` (round 0: the recipe's).
    fn g_model(&self, round: usize) -> Result<String> {
        if round == 0 {
            return Ok(self.plan.generator_model.clone());
        }
        let dir = self.dir(&Stage::TrainG { round });
        // A round without any preference left G as it was.
        if let Ok(p) = std::fs::read_to_string(dir.join("unchanged_from.txt")) {
            return Ok(p.trim().to_string());
        }
        final_model(&dir)
    }

    fn v_model(&self, round: Option<usize>) -> Result<String> {
        final_model(&self.dir(&Stage::TuneV { round }))
    }

    fn cot_rows(&self, round: usize, part: &str) -> Result<Vec<Example>> {
        read_rows(
            &self
                .dir(&Stage::Cots { round })
                .join(format!("{part}.jsonl")),
        )
    }

    fn judge(&self, model: &str, with_cot: bool) -> Result<crate::reward::LabelJudge> {
        let p = self.plan;
        let (device, dtype) =
            crate::model::device::parse_device(&Self::part_device(&p.recipe.validator))?;
        let template = if with_cot {
            &p.validator_template
        } else {
            &p.validator_template_no_cot
        };
        validator_judge(
            model,
            template,
            p.recipe.trackrec.chat,
            p.recipe.trackrec.judge_batch,
            &device,
            dtype,
        )
    }

    fn eval(&self, stage: &Stage, round: Option<usize>, tuned: bool) -> Result<()> {
        let (model, rows) = match (round, tuned) {
            (None, false) => (
                self.plan.validator_model.clone(),
                self.plan.prompts.test.clone(),
            ),
            (None, true) => (self.v_model(None)?, self.plan.prompts.test.clone()),
            (Some(r), _) => (self.v_model(Some(r))?, self.cot_rows(r, "test")?),
        };
        let judge = self.judge(&model, round.is_some())?;
        let scores = score_rows(&judge, &rows)?;
        let p: Vec<f64> = scores.iter().map(p_yes).collect();
        let labels: Vec<bool> = rows
            .iter()
            .map(|e| e.text("label").as_deref() == Some("Yes"))
            .collect();
        let t = &self.plan.recipe.trackrec;
        let m = v_metrics(&p, &labels, t.bootstrap, self.seed(stage));
        let dir = self.dir(stage);
        let scored: Vec<Example> = rows
            .iter()
            .zip(&p)
            .map(|(e, &py)| {
                let mut e = e.clone();
                e.fields.insert("p_yes".into(), json!(py));
                e
            })
            .collect();
        write_rows(&dir.join("scores.jsonl"), &scored)?;
        let condition = match (round, tuned) {
            (None, false) => "pretrained V, no CoT".to_string(),
            (None, true) => "tuned V, no CoT".to_string(),
            (Some(r), _) => format!("V{r} with G{r}'s CoTs"),
        };
        let line = serde_json::to_value(EvalLine {
            metrics: m.clone(),
            stage: stage.name(),
            condition: condition.clone(),
            round,
        })?;
        std::fs::write(
            dir.join("summary.json"),
            serde_json::to_string_pretty(&line)?,
        )?;
        let ci = m
            .auc_ci95
            .map_or(String::new(), |[a, b]| format!(" [{a:.3}, {b:.3}]"));
        self.report.message(&format!(
            "{condition}: AUC {}{ci}, accuracy {:.3}, log-loss {:.3} on {} prompts",
            m.auc.map_or("n/a".into(), |a| format!("{a:.3}")),
            m.accuracy,
            m.log_loss,
            m.count
        ));
        // One line per evaluation; a redone stage replaces its line.
        let path = self.root.join("eval.jsonl");
        let mut lines: Vec<String> = std::fs::read_to_string(&path)
            .unwrap_or_default()
            .lines()
            .filter(|l| {
                serde_json::from_str::<Value>(l)
                    .map(|v| v["stage"] != json!(stage.name()))
                    .unwrap_or(false)
            })
            .map(str::to_string)
            .collect();
        lines.push(line.to_string());
        std::fs::write(&path, lines.join("\n") + "\n")?;
        Ok(())
    }

    fn tune_v(&self, stage: &Stage, round: Option<usize>) -> Result<()> {
        let rows = match round {
            None => self.plan.prompts.validator.clone(),
            Some(r) => self.cot_rows(r, "train")?,
        };
        let rows: Vec<Example> = rows
            .into_iter()
            .map(|mut e| {
                let label = e.text("label").unwrap_or_default();
                e.fields.insert("completion".into(), label.into());
                e
            })
            .collect();
        let dir = self.dir(stage);
        let data = dir.join("data.jsonl");
        write_rows(&data, &rows)?;
        let p = self.plan;
        let template = if round.is_some() {
            &p.validator_template
        } else {
            &p.validator_template_no_cot
        };
        let spec = StageSpec {
            part: &p.recipe.validator,
            data: &data,
            preference_data: false,
            template,
            // TrackRec re-tunes V from the pretrained model every round.
            model: &p.validator_model,
            seed: self.seed(stage),
            num_generations: None,
        };
        self.train_stage(&spec, &dir, None)
    }

    fn cots(&self, stage: &Stage, round: usize) -> Result<()> {
        let p = self.plan;
        let w = self.g_writer(round)?;
        let sampling = greedy(&p.generator_sampling);
        let dir = self.dir(stage);
        // "train": every prompt V is tuned on (G's among them).
        for (part, rows) in [("train", &p.prompts.validator), ("test", &p.prompts.test)] {
            let cots = w.write(rows, 1, &sampling, self.seed(stage), self.report)?;
            let out: Vec<Example> = cots.iter().map(|c| cot_row(&rows[c.prompt], c)).collect();
            write_rows(&dir.join(format!("{part}.jsonl")), &out)?;
        }
        Ok(())
    }

    fn sample(&self, stage: &Stage, round: usize) -> Result<()> {
        let p = self.plan;
        let w = self.g_writer(round - 1)?;
        let rows = &p.prompts.train;
        let n = p.recipe.trackrec.num_cots;
        let cots = w.write(
            rows,
            n,
            &p.generator_sampling,
            self.seed(stage),
            self.report,
        )?;
        let out: Vec<Example> = cots.iter().map(|c| cot_row(&rows[c.prompt], c)).collect();
        write_rows(&self.dir(stage).join("cots.jsonl"), &out)
    }

    fn score(&self, stage: &Stage, round: usize) -> Result<()> {
        let p = self.plan;
        let dir = self.dir(stage);
        let cots = read_rows(&self.dir(&Stage::Sample { round }).join("cots.jsonl"))?;
        let judge = self.judge(&self.v_model(Some(round - 1))?, true)?;
        let scores = score_rows(&judge, &cots)?;
        let n = p.recipe.trackrec.num_cots;
        let rewards: Vec<Vec<f64>> = scores
            .chunks(n)
            .map(|g| g.iter().map(|s| f64::from(s.value)).collect())
            .collect();
        let lists = preference_lists(&rewards);
        let scored: Vec<Example> = cots
            .iter()
            .zip(&scores)
            .map(|(e, s)| {
                let mut e = e.clone();
                e.fields.insert("reward".into(), json!(s.value));
                e.fields.insert("p_yes".into(), json!(p_yes(s)));
                e
            })
            .collect();
        write_rows(&dir.join("scored.jsonl"), &scored)?;
        let template = PromptTemplate::load(
            &p.generator_template,
            &crate::data::prompt::builtin_prompts_dir(),
        )?;
        let mut prefs = Vec::with_capacity(lists.lists.len());
        for l in &lists.lists {
            let mut e = p.prompts.train[l.prompt].clone();
            let cot = |j: usize| cots[l.prompt * n + j].text(COT_FIELD).unwrap_or_default();
            e.fields
                .insert("prompt".into(), template.render(&e)?.into());
            e.fields.insert("chosen".into(), cot(l.chosen).into());
            let rejected: Vec<Value> = l.rejected.iter().map(|&j| cot(j).into()).collect();
            e.fields.insert("rejected".into(), Value::Array(rejected));
            e.fields
                .insert("chosen_reward".into(), json!(rewards[l.prompt][l.chosen]));
            prefs.push(e);
        }
        write_rows(&dir.join("prefs.jsonl"), &prefs)?;
        let all: Vec<f64> = rewards.iter().flatten().copied().collect();
        let summary = json!({
            "prompts": rewards.len(),
            "samples": all.len(),
            "validator_calls": all.len(),
            "preference_lists": lists.lists.len(),
            "dropped_all_tie": lists.dropped_all_tie,
            "dropped_single": lists.dropped_single,
            "reward_mean": all.iter().sum::<f64>() / all.len().max(1) as f64,
            "chosen_reward_mean": lists.lists.iter().map(|l| rewards[l.prompt][l.chosen]).sum::<f64>()
                / lists.lists.len().max(1) as f64,
        });
        std::fs::write(
            dir.join("summary.json"),
            serde_json::to_string_pretty(&summary)?,
        )?;
        self.report.message(&format!(
            "round {round}: {} preference lists, {} prompts dropped (all CoTs tie), mean reward {:.3}",
            lists.lists.len(),
            lists.dropped_all_tie,
            summary["reward_mean"].as_f64().unwrap_or(f64::NAN)
        ));
        Ok(())
    }

    fn train_g(&self, stage: &Stage, round: usize) -> Result<()> {
        let p = self.plan;
        let dir = self.dir(stage);
        let start = self.g_model(round - 1)?;
        match p.mode {
            GeneratorMode::Preference => {
                let prefs = self.dir(&Stage::Score { round }).join("prefs.jsonl");
                if read_rows(&prefs)?.is_empty() {
                    self.report.message(&format!(
                        "round {round}: no preference list (every prompt's CoTs tie): G stays as it was"
                    ));
                    std::fs::write(dir.join("unchanged_from.txt"), &start)?;
                    return Ok(());
                }
                let spec = StageSpec {
                    part: &p.recipe.generator,
                    data: &prefs,
                    preference_data: true,
                    template: &p.generator_template,
                    // The reference of S-DPO is the model the stage loads: G at the round's start.
                    model: &start,
                    seed: self.seed(stage),
                    num_generations: None,
                };
                self.train_stage(&spec, &dir, None)
            }
            GeneratorMode::Rl => {
                let data = dir.join("data.jsonl");
                write_rows(&data, &p.prompts.train)?;
                let judge = self.judge(&self.v_model(Some(round - 1))?, true)?;
                let spec = StageSpec {
                    part: &p.recipe.generator,
                    data: &data,
                    preference_data: false,
                    template: &p.generator_template,
                    model: &start,
                    seed: self.seed(stage),
                    num_generations: Some(p.recipe.trackrec.num_cots),
                };
                self.train_stage(&spec, &dir, Some(ValidatorReward { judge }))
            }
        }
    }

    /// Trains a stage into `dir/run`, continuing from its newest intact checkpoint if it has one.
    fn train_stage(
        &self,
        spec: &StageSpec,
        dir: &Path,
        reward: Option<ValidatorReward>,
    ) -> Result<()> {
        let mut plan = self.plan.stage_recipe(spec, dir)?;
        if let Some(r) = reward {
            plan.verifier = Arc::new(r);
        }
        let root = dir.join("run");
        let run = if root.join("recipe.resolved.toml").is_file() {
            RunDir::open(&root)?
        } else {
            if root.exists() {
                std::fs::remove_dir_all(&root)?;
            }
            let run = RunDir::create(&root)?;
            run.write_text(
                "recipe.resolved.toml",
                &toml::to_string_pretty(&plan.recipe)?,
            )?;
            run
        };
        let from = run.newest_intact_checkpoint(self.report)?;
        match &from {
            Some((step, _)) if *step >= plan.recipe.train.max_steps => return Ok(()),
            _ => {}
        }
        let start = if from.is_some() || root.join("metrics.jsonl").exists() {
            Start::Resume(from)
        } else {
            Start::New
        };
        train::train_from(&plan, &run, start, self.report)
    }
}

/// The model a training stage ended with.
fn final_model(stage_dir: &Path) -> Result<String> {
    let run = RunDir {
        root: stage_dir.join("run"),
    };
    let (_, dir) = run.latest_checkpoint()?.with_context(|| {
        format!(
            "{} has no checkpoint: the stage did not finish",
            stage_dir.display()
        )
    })?;
    Ok(dir.join("model").to_string_lossy().into_owned())
}
