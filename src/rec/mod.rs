//! Recommendation adapters: interaction logs and splits, rankers and their metrics.

pub mod baselines;
pub mod dataset;
pub mod generative;
pub mod metrics;
pub mod minionerec_csv;
pub mod sasrec;
pub mod scratch;
pub mod sequences;
pub mod sid;
pub mod trie;
