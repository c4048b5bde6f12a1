//! The fixed action space of RL over a catalogue: `[generation] constraint = { sid_index, suffix }`.
//!
//! The recipe names a SID index (MiniOneRec's format); resolving the recipe reads it into a
//! [`SidTable`] (so a bad path or a malformed index fails before any weights load), and once the
//! policy is loaded — its tokenizer final, SID tokens added by `[model] add_tokens` included —
//! [`SidActionSpace::trie`] builds the [`SidTrie`] the rollout generates under and the update
//! recomputes log-probs under: every completion is then one whole item's SID (+ `suffix`) and
//! EOS.

use std::path::{Path, PathBuf};

use anyhow::{ensure, Context, Result};
use serde::{Deserialize, Serialize};

use super::sid::SidTable;
use super::trie::SidTrie;
use crate::model::Tokenizer;

/// `[generation] constraint = { sid_index = "index.json", suffix = "" }`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SidConstraintSpec {
    /// MiniOneRec index JSON (`{"item_id": ["<a_12>", "<b_3>", "<c_200>"]}`), relative to the
    /// recipe.
    pub sid_index: PathBuf,
    /// What a completion carries after the SID, before EOS (MiniOneRec's prompts: `"\n"`).
    #[serde(default)]
    pub suffix: String,
}

/// [`SidConstraintSpec`] resolved: the table read.
pub struct SidActionSpace {
    /// The index file, anchored at the recipe's directory.
    pub index: PathBuf,
    pub table: SidTable,
    pub suffix: String,
}

impl SidConstraintSpec {
    pub fn resolve(&self, base_dir: &Path) -> Result<SidActionSpace> {
        let index = base_dir.join(&self.sid_index);
        let table = SidTable::read_index(&index).with_context(|| {
            "[generation] constraint.sid_index (relative to the recipe; `llmrl sid build` writes one)"
        })?;
        Ok(SidActionSpace {
            index,
            table,
            suffix: self.suffix.clone(),
        })
    }
}

impl SidActionSpace {
    /// The trie over every item's tokenized SID, EOS allowed after a whole one. Checks that a
    /// whole SID and its EOS fit in `max_new_tokens`, and that the catalogue holds at least
    /// `min_items` distinct SIDs (a beam group needs that many).
    pub fn trie(
        &self,
        tok: &Tokenizer,
        max_new_tokens: usize,
        min_items: usize,
    ) -> Result<SidTrie> {
        ensure!(
            !tok.eos_ids.is_empty(),
            "[generation] constraint: the tokenizer has no EOS token to end an item with"
        );
        let trie = SidTrie::new(&self.table, tok, &self.suffix, &tok.eos_ids)
            .with_context(|| format!("[generation] constraint over {}", self.index.display()))?;
        let longest = trie.max_len();
        ensure!(
            longest < max_new_tokens,
            "[generation] max_new_tokens = {max_new_tokens} cannot hold the longest SID ({longest} \
             tokens) and its EOS; hint: set max_new_tokens = {} or more (or add the SID tokens \
             with [model] add_tokens, one token per level)",
            longest + 1
        );
        ensure!(
            trie.len() >= min_items,
            "[generation] the catalogue has {} distinct SIDs, fewer than num_generations = \
             {min_items} beams; hint: lower num_generations",
            trie.len()
        );
        Ok(trie)
    }
}
