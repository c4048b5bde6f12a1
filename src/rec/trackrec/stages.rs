//! The loop as a list of named stages and the record of which are done (`state.json` in the
//! run directory). A stage either finished (its name is in `done`, its files complete) or not:
//! a resumed run redoes an unfinished generation or scoring stage from its start (its seeds
//! make it the same), and continues an unfinished training stage from its newest intact
//! checkpoint (the `Trainer`'s exact resume), so a killed run ends as the uninterrupted one.
//!
//! Order (`rN` = round N):
//! - `eval-zero-shot`: the pretrained V, no CoT, on the test prompts;
//! - `v-nocot`, `eval-no-cot`: V tuned on (prompt → label) without CoTs, evaluated (the TALLRec
//!   baseline; `[trackrec] baseline_no_cot`);
//! - `g0-cots`: the initial G writes one greedy CoT per train and test prompt;
//! - `v0`, `eval-r0`: V tuned on (prompt + G₀'s CoT → label), evaluated with G₀'s test CoTs;
//! - per round, preference mode: `rN-sample` (G samples n CoTs per train prompt, distinct
//!   seeds), `rN-score` (V scores them; preference lists), `rN-g` (S-DPO on G, reference = G at
//!   the round's start); RL mode: `rN-g` (GRPO/ROVER with V as the judge, the same samples and
//!   V calls); then `rN-cots` (G greedy CoTs), `rN-v` (V re-tuned from the pretrained model on
//!   them) and `eval-rN`.

use std::path::Path;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use super::config::GeneratorMode;

/// One step of the loop.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Stage {
    /// Evaluate V: `round` None = the no-CoT baseline (tuned or, with `tuned` false, pretrained).
    Eval { round: Option<usize>, tuned: bool },
    /// Tune V from the pretrained model: on CoTs of round `round`, or without CoTs.
    TuneV { round: Option<usize> },
    /// G writes one greedy CoT per train and test prompt (G of round `round`).
    Cots { round: usize },
    /// G samples n CoTs per train prompt.
    Sample { round: usize },
    /// V scores the samples; preference lists.
    Score { round: usize },
    /// G's update of the round.
    TrainG { round: usize },
}

impl Stage {
    pub fn name(&self) -> String {
        match self {
            Stage::Eval {
                round: None,
                tuned: false,
            } => "eval-zero-shot".into(),
            Stage::Eval {
                round: None,
                tuned: true,
            } => "eval-no-cot".into(),
            Stage::Eval { round: Some(r), .. } => format!("eval-r{r}"),
            Stage::TuneV { round: None } => "v-nocot".into(),
            Stage::TuneV { round: Some(r) } => format!("v{r}"),
            Stage::Cots { round } => format!("g{round}-cots"),
            Stage::Sample { round } => format!("r{round}-sample"),
            Stage::Score { round } => format!("r{round}-score"),
            Stage::TrainG { round } => format!("r{round}-g"),
        }
    }
}

/// Every stage of a run, in order.
pub fn plan_stages(rounds: usize, mode: GeneratorMode, baseline_no_cot: bool) -> Vec<Stage> {
    let mut s = vec![Stage::Eval {
        round: None,
        tuned: false,
    }];
    if baseline_no_cot {
        s.push(Stage::TuneV { round: None });
        s.push(Stage::Eval {
            round: None,
            tuned: true,
        });
    }
    s.push(Stage::Cots { round: 0 });
    s.push(Stage::TuneV { round: Some(0) });
    s.push(Stage::Eval {
        round: Some(0),
        tuned: true,
    });
    for round in 1..=rounds {
        if mode == GeneratorMode::Preference {
            s.push(Stage::Sample { round });
            s.push(Stage::Score { round });
        }
        s.push(Stage::TrainG { round });
        s.push(Stage::Cots { round });
        s.push(Stage::TuneV { round: Some(round) });
        s.push(Stage::Eval {
            round: Some(round),
            tuned: true,
        });
    }
    s
}

/// `state.json`: the stages finished, in order.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct State {
    pub done: Vec<String>,
}

pub const STATE_FILE: &str = "state.json";

impl State {
    pub fn load(root: &Path) -> Result<Self> {
        let path = root.join(STATE_FILE);
        if !path.exists() {
            return Ok(Self::default());
        }
        let text = std::fs::read_to_string(&path)?;
        serde_json::from_str(&text).with_context(|| format!("reading {}", path.display()))
    }

    pub fn is_done(&self, stage: &Stage) -> bool {
        self.done.contains(&stage.name())
    }

    /// Records `stage` as finished (written to a temporary file and renamed: a kill leaves the
    /// old state or the new one, never half of one).
    pub fn mark(&mut self, root: &Path, stage: &Stage) -> Result<()> {
        self.done.push(stage.name());
        let tmp = root.join(format!("{STATE_FILE}.tmp"));
        std::fs::write(&tmp, serde_json::to_string_pretty(self)?)?;
        std::fs::rename(&tmp, root.join(STATE_FILE))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stage_lists_of_both_modes() {
        let names =
            |m, b| -> Vec<String> { plan_stages(1, m, b).iter().map(Stage::name).collect() };
        assert_eq!(
            names(GeneratorMode::Preference, true),
            [
                "eval-zero-shot",
                "v-nocot",
                "eval-no-cot",
                "g0-cots",
                "v0",
                "eval-r0",
                "r1-sample",
                "r1-score",
                "r1-g",
                "g1-cots",
                "v1",
                "eval-r1"
            ]
        );
        assert_eq!(
            names(GeneratorMode::Rl, false),
            [
                "eval-zero-shot",
                "g0-cots",
                "v0",
                "eval-r0",
                "r1-g",
                "g1-cots",
                "v1",
                "eval-r1"
            ]
        );
    }

    #[test]
    fn state_round_trips_and_marks_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = State::load(dir.path()).unwrap();
        assert!(s.done.is_empty());
        s.mark(dir.path(), &Stage::Cots { round: 0 }).unwrap();
        s.mark(dir.path(), &Stage::TuneV { round: Some(0) })
            .unwrap();
        let back = State::load(dir.path()).unwrap();
        assert_eq!(back.done, ["g0-cots", "v0"]);
        assert!(back.is_done(&Stage::Cots { round: 0 }));
        assert!(!back.is_done(&Stage::Cots { round: 1 }));
    }
}
