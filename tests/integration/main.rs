//! Integration tests, one binary (ripgrep style). Fixtures in `tests/fixtures/` were produced by
//! `tests/fixtures/make_fixtures.py` against HF transformers.

mod algo;
mod beam;
mod cli;
mod common;
mod data_parallel;
mod dpo;
mod generation;
mod gguf;
mod golden;
mod golden_metrics;
mod judge;
mod layering;
mod lora;
mod minilm;
mod newcomer;
mod rec_baseline;
mod rec_rl;
mod sid_build;
mod trackrec;
mod trainer;
mod tree_mdp;
mod usersim;
mod vocab;
