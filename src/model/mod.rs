//! Trainable decoder models (Llama, Qwen2, Qwen3 families), their loading and tokenization.
//!
//! `load` turns a model source (local HF directory, hub id, `.gguf` file) into a [`LoadedModel`]:
//! config, weights as named `Var`s ([`Params`]), and a [`Tokenizer`] with its chat template.
//! `vocab` adds tokens to a loaded model; `trainable` says which parameters (or rows) train.

pub mod config;
pub mod decoder;
pub mod device;
pub mod kv_cache;
pub mod logprobs;
pub mod lora;
pub mod ops;
pub mod params;
pub mod profile;
pub mod recompute;

pub use config::{Family, ModelConfig};
pub use decoder::{Decoder, Mode, Positions, SharedPrefixBatch};
pub use kv_cache::KvCache;
pub use params::Params;
pub mod hub;
pub mod load;
pub mod tokenizer;

pub use load::{load, LoadedModel, ModelSource};
pub use tokenizer::{Message, Tokenizer};
pub mod save;
pub use save::save_hf_dir;
pub mod trainable;
pub mod vocab;
pub use trainable::{gradient_coverage, Coverage, Part, Trainable};
pub use vocab::{add_tokens, AddedTokens, VocabPlan, VocabSection};
