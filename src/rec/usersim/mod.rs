//! An LLM-powered user simulator (arXiv 2412.16984): explicit, inspectable feedback for
//! recommenders, and an environment to train them against.
//!
//! - [`prompt`], [`profile`], [`llm`]: the keyword pass (`llmrl usersim build`): an LLM turns
//!   every item into objective keywords and subjective pros and cons, batched, cached,
//!   resumable; [`table`] holds the result with the MiniLM embeddings of pros and cons.
//! - [`voters`]: logical voters A (keyword overlap) and B (embedding similarity), with our
//!   edge-case rule (and where it departs from the official code); [`stat`]: the statistical
//!   voter S (logistic MF in candle); [`sim`]: the ensemble and its calibrated score.
//! - [`ratings`]: explicit ratings, the like threshold, the per-user time split; [`fidelity`]:
//!   AUC/accuracy/F1 of each voter and the ensemble on held-out ratings.
//! - [`env`]: the episodic environment (the user's own history grows); [`judge`]: the simulator
//!   as an RL reward ([`crate::reward::Verifier`]).

pub mod env;
pub mod fidelity;
pub mod judge;
pub mod llm;
pub mod profile;
pub mod prompt;
pub mod ratings;
pub mod sim;
pub mod stat;
pub mod table;
pub mod voters;

pub use env::{EnvConfig, Episode, Step};
pub use sim::{Feedback, Simulator};
pub use voters::{Past, Vote};
