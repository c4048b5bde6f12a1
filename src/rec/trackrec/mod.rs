//! TrackRec (arXiv:2508.15388): a generator G writes a recommendation chain of thought (RecCoT)
//! about a user's preferences from their history; a validator V predicts from the history, a
//! candidate item and that CoT whether the user likes the candidate. G learns from V's feedback
//! (S-DPO on its own CoTs ranked by V, or, beyond the paper, GRPO/ROVER with V as the judge) and
//! V is re-tuned on G's improved CoTs, in alternation.
//!
//! - [`data`]: the binary preference prompts (MovieLens-100K ratings, TALLRec's files, JSONL).
//! - [`config`]: the recipe (`[trackrec]`, `[data]`, `[generator]`, `[validator]`) and each
//!   stage's `llmrl train` recipe built from it.
//! - [`stages`]: the loop as named stages and the record of which are done.
//! - [`run`]: the run directory and each stage's work (G's CoTs in [`cots`], V in
//!   [`validator`], preference lists in [`prefs`]); training stages go through the shared
//!   `Trainer` (`train::train_from`) with SFT, S-DPO, GRPO or ROVER.
//!
//! Not copied from TrackRec's code (see the design notes): its softmax over the two label
//! probabilities (we use p(Yes)/(p(Yes)+p(No))), its batch-wide S-DPO sum (per example here), its
//! no-op "all wrong" filter (all-tie prompts are dropped and counted instead).

pub mod config;
pub mod cots;
pub mod data;
pub mod prefs;
pub mod run;
pub mod stages;
pub mod validator;

pub use config::{GeneratorMode, TrackRecPlan, TrackRecRecipe};
