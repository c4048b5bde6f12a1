//! Recommendation adapters: interaction logs and splits, rankers and their metrics.

pub mod action_space;
pub mod baselines;
pub mod metrics;
pub mod minionerec_csv;
pub mod reward;
pub mod sasrec;
pub mod sequences;
pub mod sid;
pub mod trie;
