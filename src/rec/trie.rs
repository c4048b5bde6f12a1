//! The catalogue as a generation constraint: a prefix trie over every item's SID tokens, so the
//! sampler and beam search only ever produce real items (MiniOneRec's constrained decoding, built
//! from the same tokenizer the policy uses, so added SID tokens and word-level vocabularies alike
//! work), and the way back from generated tokens to items.

use std::collections::HashMap;

use anyhow::{ensure, Result};

use super::sid::SidTable;
use crate::generate::constraint::{Allowed, Constraint, TrieConstraint};
use crate::model::tokenizer::Tokenizer;

/// Every distinct SID of a table, tokenized, as a [`Constraint`]; `end` (EOS ids) is allowed
/// once a whole SID (plus `suffix`) has been generated.
pub struct SidTrie {
    trie: TrieConstraint,
    /// Token ids of one SID (+ suffix) → the SID's items (table indices).
    items: HashMap<Vec<u32>, Vec<usize>>,
    end: Vec<u32>,
}

impl SidTrie {
    /// Tokenizes `sid_string + suffix` of every distinct SID (`suffix` is what the completion
    /// carries after the SID before EOS, e.g. `"\n"` in MiniOneRec's prompts, often empty).
    /// Errors when two SIDs tokenize to the same ids (the tokenizer lacks the SID tokens).
    pub fn new(table: &SidTable, tokenizer: &Tokenizer, suffix: &str, end: &[u32]) -> Result<Self> {
        let mut items: HashMap<Vec<u32>, Vec<usize>> = HashMap::new();
        let mut seqs = Vec::new();
        for (_, group) in table.sids() {
            let text = table.sid_string(group[0]) + suffix;
            let ids = tokenizer.encode(&text, false)?;
            ensure!(
                !items.contains_key(&ids),
                "SID `{text}` tokenizes like another SID ({ids:?}): the tokenizer lacks the SID \
                 tokens (add them with the model's `vocab` options)"
            );
            items.insert(ids.clone(), group.to_vec());
            seqs.push(ids);
        }
        Ok(Self {
            trie: TrieConstraint::new(&seqs, end),
            items,
            end: end.to_vec(),
        })
    }

    /// The items a generated completion stands for: its tokens up to the first end token must be
    /// one whole SID; anything else (a prefix, a malformed or unconstrained output) is no item.
    pub fn items_of(&self, completion: &[u32]) -> &[usize] {
        let stop = completion
            .iter()
            .position(|t| self.end.contains(t))
            .unwrap_or(completion.len());
        self.items
            .get(&completion[..stop])
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }

    /// Tokens of the longest SID (+ suffix), the end token not counted.
    pub fn max_len(&self) -> usize {
        self.items.keys().map(Vec::len).max().unwrap_or(0)
    }

    /// Number of distinct SIDs.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// The underlying token trie.
    pub fn trie(&self) -> &TrieConstraint {
        &self.trie
    }
}

impl Constraint for SidTrie {
    fn allowed(&self, prompt: usize, generated: &[u32]) -> Allowed<'_> {
        self.trie.allowed(prompt, generated)
    }
}
