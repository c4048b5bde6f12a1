//! The episodic environment (the official gymnasium `UserSim`, its history bug fixed) and the
//! simulator as an RL reward.
//!
//! An episode's state is one user and *that user's* history: their logged ratings (the caller
//! passes them, e.g. the train split's), then every item this episode recommended with the
//! simulator's response to it, in order. The official `step()` instead read the history of the
//! candidate item's first reviewer (`curr_item.uid`), another user's; here nothing but the
//! episode's user and its own steps ever enter the history. The user leaves after each step with
//! probability `leave_prob` (0.025 by default: 40 steps on average), or, in evaluation mode,
//! after exactly `eval_steps` steps (the official 11).
//!
//! An action that names no item of the keyword table gets reward 0 with the reason and leaves
//! the history unchanged (model output never errors); a step after the end does nothing.

use anyhow::{ensure, Result};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::sim::{Feedback, Simulator};

/// How episodes end.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct EnvConfig {
    /// Probability the user leaves after a step.
    pub leave_prob: f64,
    /// Evaluation mode: exactly this many steps, no random leaving.
    pub eval_steps: Option<usize>,
}

impl Default for EnvConfig {
    fn default() -> Self {
        Self {
            leave_prob: 0.025,
            eval_steps: None,
        }
    }
}

impl EnvConfig {
    pub fn validate(&self) -> Result<()> {
        ensure!(
            (0.0..=1.0).contains(&self.leave_prob),
            "leave probability must be in [0, 1], got {}",
            self.leave_prob
        );
        ensure!(
            self.eval_steps != Some(0),
            "evaluation episodes need at least one step"
        );
        Ok(())
    }
}

/// One step's outcome.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Step {
    /// 1 for a simulated like, 0 otherwise.
    pub reward: f64,
    pub done: bool,
    /// The simulator's full response (`None` when the action named no item, or after the end).
    pub feedback: Option<Feedback>,
    pub reason: String,
}

/// One user's episode.
pub struct Episode<'a> {
    sim: &'a Simulator,
    cfg: EnvConfig,
    rng: ChaCha8Rng,
    pub user: String,
    /// (item id, liked), oldest first: the logged history, then this episode's steps.
    pub history: Vec<(String, bool)>,
    /// How many history entries were logged before the episode.
    pub logged: usize,
    pub steps: usize,
    pub done: bool,
}

impl<'a> Episode<'a> {
    /// Starts an episode of `user`, whose logged history (item, liked) is `logged`.
    pub fn reset(
        sim: &'a Simulator,
        user: &str,
        logged: &[(String, bool)],
        cfg: EnvConfig,
        seed: u64,
    ) -> Result<Self> {
        cfg.validate()?;
        Ok(Self {
            sim,
            cfg,
            rng: ChaCha8Rng::seed_from_u64(seed),
            user: user.to_string(),
            history: logged.to_vec(),
            logged: logged.len(),
            steps: 0,
            done: false,
        })
    }

    /// Recommends `item`; the user responds and their history grows by it.
    pub fn step(&mut self, item: &str) -> Step {
        if self.done {
            return Step {
                reward: 0.0,
                done: true,
                feedback: None,
                reason: "the episode is over".into(),
            };
        }
        self.steps += 1;
        let (reward, feedback, reason) = if self.sim.table.get(item).is_none() {
            (
                0.0,
                None,
                format!("`{item}` is not an item of the keyword table"),
            )
        } else {
            let fb = self.sim.feedback(&self.user, &self.history, item);
            self.history.push((item.to_string(), fb.like));
            let r = f64::from(u8::from(fb.like));
            let why = format!(
                "{} ({})",
                if fb.like { "like" } else { "no like" },
                fb.decided_by
            );
            (r, Some(fb), why)
        };
        self.done = match self.cfg.eval_steps {
            Some(n) => self.steps >= n,
            None => self.rng.random::<f64>() < self.cfg.leave_prob,
        };
        Step {
            reward,
            done: self.done,
            feedback,
            reason,
        }
    }
}

/// What a batch of episodes under one policy gave.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct EpisodeStats {
    pub policy: String,
    pub episodes: usize,
    pub steps: usize,
    pub mean_reward_per_step: f64,
    pub mean_length: f64,
}

/// Runs one episode per `(user, logged history)` under `policy` (which sees the episode and a
/// seeded stream and names the next item); episode k is seeded `seed + k`.
pub fn run_episodes(
    sim: &Simulator,
    starts: &[(String, Vec<(String, bool)>)],
    cfg: EnvConfig,
    seed: u64,
    name: &str,
    policy: &mut dyn FnMut(&Episode<'_>, &mut ChaCha8Rng) -> String,
) -> Result<EpisodeStats> {
    let mut pick_rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5eed);
    let (mut steps, mut reward) = (0usize, 0.0);
    for (k, (user, logged)) in starts.iter().enumerate() {
        let mut ep = Episode::reset(sim, user, logged, cfg, seed + k as u64)?;
        while !ep.done {
            let item = policy(&ep, &mut pick_rng);
            reward += ep.step(&item).reward;
        }
        steps += ep.steps;
    }
    Ok(EpisodeStats {
        policy: name.to_string(),
        episodes: starts.len(),
        steps,
        mean_reward_per_step: reward / steps.max(1) as f64,
        mean_length: steps as f64 / starts.len().max(1) as f64,
    })
}
