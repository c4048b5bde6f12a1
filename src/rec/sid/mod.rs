//! Semantic IDs: items as short code sequences, coarse to fine, and the table between them.
//!
//! `llmrl sid build` runs: item vectors ([`vectors`]) → a quantizer ([`rq_kmeans`] plain or
//! balanced over [`kmeans`], or [`rq_vae`]) → collision handling ([`collisions`]) → a
//! [`SidTable`] and a [`report::SidReport`]; [`build::build`] strings them together.

pub mod build;
pub mod collisions;
pub mod kmeans;
pub mod report;
pub mod rq_kmeans;
pub mod rq_vae;
pub mod table;
pub mod vectors;

pub use table::{level_token, parse_level_token, SidTable};

use serde::Serialize;

/// What a quantizer made of n items: their codes, and what collision handling needs to move
/// items at the last level (the residual each item brought to it and that level's codebook,
/// in the space the quantizer works in: the raw vectors for RQ-KMeans, the latent for RQ-VAE).
#[derive(Clone, Debug)]
pub struct Quantized {
    /// `codes[i][l]`: item i's code at level l.
    pub codes: Vec<Vec<u32>>,
    /// Codes per level.
    pub sizes: Vec<usize>,
    /// Width of `last_residual` rows and codebook entries.
    pub latent_dim: usize,
    /// `[n, latent_dim]`: the residual entering the last level.
    pub last_residual: Vec<f32>,
    /// `[sizes.last(), latent_dim]`: the last level's codebook.
    pub last_codebook: Vec<f32>,
    /// Mean squared error per element of the reconstruction in the input space (RQ-KMeans: the
    /// final residual; RQ-VAE: the decoder's output from the quantized latent).
    pub reconstruction_mse: f64,
    /// Σ‖x − x̂‖² / Σ‖x‖².
    pub relative_error: f64,
    /// RQ-VAE's training log.
    pub training: Option<TrainingLog>,
}

/// How an RQ-VAE's training went.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct TrainingLog {
    pub epochs: usize,
    pub steps: usize,
    /// Mean total loss of each epoch.
    pub loss: Vec<f64>,
    /// Mean reconstruction MSE of each epoch.
    pub reconstruction: Vec<f64>,
    /// Codes re-initialised because no item used them in an epoch, over the whole run.
    pub dead_code_resets: usize,
    pub seconds: f64,
}
