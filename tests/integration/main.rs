//! Integration tests, one binary (ripgrep style). Fixtures in `tests/fixtures/` were produced by
//! `tests/fixtures/make_fixtures.py` against HF transformers.

mod algo;
mod cli;
mod common;
mod generation;
mod gguf;
mod golden;
mod tree_mdp;
mod vocab;
