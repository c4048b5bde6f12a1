//! llmrl: reinforcement learning from verifiable rewards for Hugging Face causal LMs, on candle.
//!
//! Pipeline stages are modules: `data` → `generate` → `reward` → `algo` → `optim`, driven by
//! `train` from a `recipe`, all on top of `model`. See `README.md` for the map.

pub mod algo;
pub mod cli;
pub mod data;
pub mod eval;
pub mod explore;
pub mod generate;
pub mod model;
pub mod optim;
pub mod parallel;
pub mod progress;
pub mod prompting;
pub mod rec;
pub mod recipe;
pub mod report;
pub mod reward;
pub mod run_dir;
pub mod toy;
pub mod train;
