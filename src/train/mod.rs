//! The training loop, top to bottom.
//!
//! A step: sample prompts → rollout ([`rollout`]: generate n per prompt → judge → advantages →
//! exploration bonus; or, for SFT, the dataset's reference completions) → update ([`update`]:
//! for each pass and mini-batch, micro-batched loss and backward with gradient accumulation →
//! clip → optimizer step) → log ([`metrics`]); checkpoint and evaluate every N steps.
//!
//! [`Trainer`] holds one policy with its optimizer, algorithm and state, and [`Trainer::step`]
//! runs one step of it; [`train`] is the driver for one model. A driver that alternates two
//! models (a generator and a validator) holds two trainers and calls their steps in turn.
//!
//! Exact resume: sampling seeds, mini-batch order and the data order are functions of (seed, step),
//! and a checkpoint holds the weights, optimizer moments, data cursor and exploration state, so a
//! resumed run reproduces the uninterrupted one line by line (timings aside).
//!
//! Data parallel (`crate::parallel`): N ranks each run this loop on a replica, rolling out their
//! shard of every step's prompts; they meet in the rollout (the judged samples are gathered) and
//! at each optimizer step (gradients summed), so all hold the same weights and state, and rank 0
//! alone writes logs and checkpoints. A checkpoint is the same whoever wrote it, so a run resumes
//! at any world size.

pub mod constrained;
pub mod correction;
pub mod metrics;
pub mod policy;
pub mod rollout;
pub mod update;

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use candle_core::Device;
use serde::{Deserialize, Serialize};

pub use metrics::{metrics_equal_ignoring_timing, TIMING_KEYS};
pub use rollout::Rollout;

use crate::algo::{self, Algorithm, Metrics};
use crate::data::{DataCursor, Example};
use crate::explore::Imentor;
use crate::generate;
use crate::model::{Decoder, LoadedModel, Mode, Params};
use crate::optim::AdamW;
use crate::parallel::{self, Comm};
use crate::progress::{Reporter, Silent};
use crate::prompting::Prompter;
use crate::recipe::Plan;
use crate::reward::Verifier;
use crate::run_dir::{OptimizerState, RunDir};

/// What a checkpoint's `state.json` holds besides the model and optimizer files.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TrainState {
    pub step: u64,
    pub cursor: DataCursor,
    pub skipped_steps: u64,
    pub seed: u64,
}

/// Where a run starts.
pub enum Start {
    /// A fresh run from the plan's model.
    New,
    /// Continue a run from this checkpoint (step, directory), or from step 0 if it has none.
    Resume(Option<(u64, PathBuf)>),
}

/// The optimizer state's file inside a checkpoint.
pub const OPTIMIZER_FILE: &str = "optimizer.safetensors";

/// Train according to `plan` into `run`, resuming from its newest intact checkpoint when
/// `resume` (a damaged newer one is skipped with a warning).
pub fn train(plan: &Plan, run: &RunDir, resume: bool, report: &dyn Reporter) -> Result<()> {
    let start = if resume {
        Start::Resume(run.newest_intact_checkpoint(report)?)
    } else {
        Start::New
    };
    train_from(plan, run, start, report)
}

/// Train according to `plan` into `run` from `start`.
pub fn train_from(plan: &Plan, run: &RunDir, start: Start, report: &dyn Reporter) -> Result<()> {
    let r = &plan.recipe;
    let total = r.train.max_steps;
    let ckpt = match &start {
        Start::Resume(c) => c.clone(),
        Start::New => None,
    };
    if let Some((step, _)) = &ckpt {
        check_resume_step(*step, total)?;
    }
    // Launched as one process per GPU (scripts/launch_nccl.sh), only rank 0 touches the run
    // directory; the others read the checkpoint and write nothing.
    let launched = parallel::launched()?;
    let lead = launched.as_ref().is_none_or(|e| e.rank == 0);
    if lead {
        if let Some((step, dir)) = &ckpt {
            run.truncate_jsonl_after("metrics.jsonl", *step)?;
            run.truncate_jsonl_after("eval.jsonl", *step)?;
            report.message(&format!("resuming {} from step {step}", run.root.display()));
            if !dir.join(OPTIMIZER_FILE).is_file() {
                report.message(&format!(
                    "warning: {} keeps no optimizer state (checkpoint.optimizer_state = \"latest\" \
                     drops it from older checkpoints): AdamW restarts from zero moments, so this \
                     resume does not reproduce an uninterrupted run exactly",
                    dir.display()
                ));
            }
        } else if matches!(start, Start::Resume(_)) {
            report.message(&format!(
                "no checkpoint in {} yet: starting from step 0",
                run.root.display()
            ));
            std::fs::remove_file(run.path("metrics.jsonl")).ok();
        }
    }
    let ckpt = ckpt.as_ref().map(|(_, dir)| dir.as_path());
    // One process per GPU (scripts/launch_nccl.sh): this process is the rank its environment says.
    #[cfg(feature = "nccl")]
    if let Some(env) = launched {
        parallel::check_world_size(env.world_size, r.train.prompts_per_step)?;
        let comm = parallel::nccl::NcclComm::new(&env, &plan.device()?.0)?;
        let report: &dyn Reporter = if lead { report } else { &Silent };
        return run_rank(plan, lead.then_some(run), ckpt, &comm, report);
    }
    match r.train.world_size {
        1 => run_rank(plan, Some(run), ckpt, &parallel::Single, report),
        n => parallel::threads::run(n, |comm| {
            let lead = comm.rank() == 0;
            let report: &dyn Reporter = if lead { report } else { &Silent };
            run_rank(plan, lead.then_some(run), ckpt, comm, report)
        }),
    }
}

/// The loop of one rank: step, and (rank 0, the one given `run`) log, evaluate, checkpoint.
fn run_rank(
    plan: &Plan,
    run: Option<&RunDir>,
    ckpt: Option<&Path>,
    comm: &dyn Comm,
    report: &dyn Reporter,
) -> Result<()> {
    let r = &plan.recipe;
    let total = r.train.max_steps;
    let mut trainer = Trainer::with_comm(plan, ckpt, comm)?;
    let latest_only: &[&str] = match r.checkpoint.optimizer_state {
        OptimizerState::All => &[],
        OptimizerState::Latest => &[OPTIMIZER_FILE],
    };
    report.begin("train", total, trainer.state.step);
    while trainer.state.step < total {
        let t0 = Instant::now();
        let (rollout, mut metrics) = trainer.step()?;
        let step = trainer.state.step;
        // Every rank holds the same weights, state and (gathered) rollout: one writes.
        let Some(run) = run else { continue };
        if r.log.rollouts_every > 0 && step.is_multiple_of(r.log.rollouts_every) {
            metrics::dump_rollouts(run, step, &rollout, &trainer.policy.tokenizer)?;
        }
        metrics.insert("step_seconds".into(), t0.elapsed().as_secs_f64());
        let line = metrics::line(step, trainer.state.cursor.epoch, &metrics);
        run.append_jsonl("metrics.jsonl", &line)?;
        let figure = |k: &str| metrics.get(k).copied().unwrap_or(f64::NAN);
        report.progress(
            step,
            &[
                ("reward", figure("reward_mean")),
                ("acc", figure("accuracy")),
                ("len", figure("response_length_mean")),
                ("loss", figure("loss")),
                ("tok/s", figure("tokens_per_s")),
            ],
        );

        if r.eval.every > 0 && step.is_multiple_of(r.eval.every) {
            let summary = trainer.evaluate(&crate::progress::Silent)?;
            report.message(&format!(
                "step {step} eval: pass@1 {:.3}, mean score {:.3} on {} problems",
                summary.mean_correct, summary.mean_score, summary.num_problems
            ));
            let mut line = serde_json::to_value(&summary)?;
            line["step"] = step.into();
            run.append_jsonl("eval.jsonl", &line)?;
        }
        let periodic = r.checkpoint.every > 0 && step.is_multiple_of(r.checkpoint.every);
        if periodic || (step == total && r.checkpoint.save_final) {
            run.save_checkpoint(step, r.checkpoint.keep_last, latest_only, |dir| {
                trainer.save(dir)
            })?;
        }
    }
    report.end();
    Ok(())
}

/// A resume needs steps left to run: a run already at `max_steps` is an error saying how to
/// train further, not a silent success.
pub fn check_resume_step(step: u64, max_steps: u64) -> Result<()> {
    anyhow::ensure!(
        step < max_steps,
        "the run's checkpoint is at step {step} and train.max_steps is {max_steps}: nothing left \
         to train; hint: --set train.max_steps=N with N > {step} to train further"
    );
    Ok(())
}

/// One policy under training: its weights, optimizer, algorithm, judge and step state.
pub struct Trainer<'a> {
    pub plan: &'a Plan,
    pub device: Device,
    pub policy: LoadedModel,
    pub optimizer: AdamW,
    pub algorithm: Box<dyn Algorithm>,
    pub judge: std::sync::Arc<dyn Verifier>,
    pub explore: Option<Imentor>,
    /// The frozen reference (the model as the recipe loads it), when the algorithm needs one.
    pub reference: Option<Params>,
    /// `[generation] constraint` over the policy's tokenizer: rollouts generate under it, the
    /// update recomputes log-probs under it.
    pub constraint: Option<crate::rec::trie::SidTrie>,
    pub state: TrainState,
    /// This replica's rank among the data-parallel workers ([`parallel::Single`] alone).
    pub comm: &'a dyn Comm,
}

impl<'a> Trainer<'a> {
    /// The plan's model, or the checkpoint in `checkpoint` (a `checkpoints/step_N` directory)
    /// with its optimizer, data cursor and exploration state.
    pub fn new(plan: &'a Plan, checkpoint: Option<&Path>) -> Result<Self> {
        Self::with_comm(plan, checkpoint, &parallel::Single)
    }

    /// [`Trainer::new`] as one rank of a data-parallel run.
    pub fn with_comm(
        plan: &'a Plan,
        checkpoint: Option<&Path>,
        comm: &'a dyn Comm,
    ) -> Result<Self> {
        let r = &plan.recipe;
        let (device, dtype) = plan.device()?;
        let algorithm = algo::build(&r.algorithm)?;
        let policy::Policy {
            model: policy,
            trainable,
            reference,
        } = policy::load(
            plan,
            checkpoint,
            &device,
            dtype,
            algorithm.needs_reference(),
        )?;
        let constraint = plan.constraint(&policy.tokenizer)?;
        let mut optimizer =
            AdamW::with_trainable(policy.params.named_vars(), &trainable, r.optimizer.adamw())?;
        let mut state = TrainState {
            step: 0,
            cursor: DataCursor::new(r.seed),
            skipped_steps: 0,
            seed: r.seed,
        };
        if let Some(dir) = checkpoint {
            let text = std::fs::read_to_string(dir.join("state.json"))
                .with_context(|| format!("reading {}/state.json", dir.display()))?;
            state = serde_json::from_str(&text)
                .with_context(|| format!("reading {}/state.json", dir.display()))?;
            // Absent only when dropped on purpose (`optimizer_state = "latest"`; the driver warns).
            if dir.join(OPTIMIZER_FILE).is_file() {
                optimizer.load(&dir.join(OPTIMIZER_FILE))?;
            }
        }
        let mut explore = match &r.exploration {
            Some(c) => Some(crate::explore::build(c, r.seed ^ 0x1_3E47)?),
            None => None,
        };
        if let (Some(e), Some(dir)) = (explore.as_mut(), checkpoint) {
            e.load(&dir.join("explore"))?;
        }
        Ok(Self {
            plan,
            device,
            policy,
            optimizer,
            algorithm,
            judge: plan.verifier.clone(),
            explore,
            reference,
            constraint,
            state,
            comm,
        })
    }

    fn prompter(&self) -> Prompter<'a> {
        let r = &self.plan.recipe;
        Prompter {
            template: &self.plan.prompt,
            chat: r.prompt.chat,
            system: r.prompt.system.as_deref(),
        }
    }

    /// One training step on the next prompts: rollout, update. Returns the rollout and the
    /// step's metrics (all but `step_seconds`, which the driver measures around its own work).
    pub fn step(&mut self) -> Result<(Rollout, Metrics)> {
        let plan = self.plan;
        let r = &plan.recipe;
        let step = self.state.step + 1;
        let idx = self
            .state
            .cursor
            .next_batch(plan.train_examples.len(), r.train.prompts_per_step);
        let examples: Vec<Example> = idx
            .iter()
            .map(|&i| plan.train_examples[i].clone())
            .collect();
        // This rank's prompts: whole groups (GRPO's advantages are per group).
        let shard = parallel::shard(examples.len(), self.comm.rank(), self.comm.world_size());
        let lr = plan.learning_rate(step);

        let prompter = self.prompter();
        let ctx = rollout::RolloutCtx {
            plan,
            policy: &self.policy,
            prompter: &prompter,
            constraint: self
                .constraint
                .as_ref()
                .map(|c| c as &dyn generate::Constraint),
            device: &self.device,
            comm: self.comm,
            shard: shard.clone(),
        };
        let rollout = rollout::collect(
            &ctx,
            self.algorithm.as_ref(),
            self.judge.as_ref(),
            self.explore.as_mut(),
            examples,
            step,
        )?;

        let t_train = Instant::now();
        let ctx = update::UpdateCtx {
            policy: &self.policy,
            reference: self.reference.as_ref(),
            constraint: self
                .constraint
                .as_ref()
                .map(|c| c as &dyn generate::Constraint),
            device: &self.device,
            comm: self.comm,
            owned: shard,
        };
        let seed = r.seed ^ step.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0x5EED;
        let sequences = rollout.sequences();
        // Rollout statistics first: an algorithm's metric of the same name wins, as before.
        let mut metrics = rollout.metrics.clone();
        metrics.extend(update::optimize(
            &ctx,
            &plan.update,
            self.algorithm.as_ref(),
            &mut self.optimizer,
            &sequences,
            seed,
            lr,
        )?);
        metrics.insert("train_seconds".into(), t_train.elapsed().as_secs_f64());

        if metrics.get("skipped").copied() == Some(1.0) {
            self.state.skipped_steps += 1;
        }
        metrics.insert("skipped_steps".into(), self.state.skipped_steps as f64);
        metrics.insert("lr".into(), lr);
        self.state.step = step;
        Ok((rollout, metrics))
    }

    /// pass@k and friends of the current weights on the plan's eval problems.
    pub fn evaluate(&self, report: &dyn Reporter) -> Result<crate::eval::EvalSummary> {
        let r = &self.plan.recipe;
        let dec = Decoder::new(&self.policy.config, &self.policy.params, Mode::Infer)?;
        let examples = self.plan.eval_problems(r.eval.max_problems);
        let sampling = self
            .plan
            .eval_sampling(r.eval.temperature, r.eval.max_new_tokens);
        let out = crate::eval::run::evaluate(
            &dec,
            &self.policy.tokenizer,
            &examples,
            &self.prompter(),
            self.judge.as_ref(),
            &sampling,
            r.eval.num_samples,
            r.seed,
            r.train.prompts_per_step.max(1),
            &self.device,
            report,
        )?;
        Ok(out.summary)
    }

    /// Write a checkpoint's contents into `dir`: the model as an HF directory, the optimizer,
    /// `state.json` and the exploration state.
    pub fn save(&self, dir: &Path) -> Result<()> {
        policy::save(self.plan, &self.policy, dir)?;
        self.optimizer.save(&dir.join(OPTIMIZER_FILE))?;
        std::fs::write(
            dir.join("state.json"),
            serde_json::to_string_pretty(&self.state)?,
        )?;
        if let Some(e) = &self.explore {
            e.save(&dir.join("explore"))?;
        }
        Ok(())
    }
}
