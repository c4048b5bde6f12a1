//! Semantic IDs: items as short code sequences, coarse to fine, and the table between them.

pub mod table;

pub use table::{level_token, parse_level_token, SidTable};
