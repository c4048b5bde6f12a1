//! Evaluation: statistics over n scored samples per problem (pass@k, mean@n, maj@n, diversity).
//!
//! The sampling loop that produces the samples lives with generation; this module only turns
//! scores and completions into numbers, so it is testable without a model.

pub mod binary;
pub mod run;
pub mod stats;

pub use stats::{pass_at_k, report_ks, summarize, EvalSummary, ProblemResult, ProblemStats};
