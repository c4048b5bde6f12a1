//! Recommendation adapters: interaction logs and splits, item catalogues and their text
//! embeddings, rankers and their metrics.

pub mod action_space;
pub mod atomic;
pub mod baselines;
pub mod dataset;
pub mod embed;
pub mod generative;
pub mod items;
pub mod metrics;
pub mod minionerec_csv;
pub mod reward;
pub mod sasrec;
pub mod scratch;
pub mod sequences;
pub mod sid;
pub mod trackrec;
pub mod trie;
pub mod usersim;
