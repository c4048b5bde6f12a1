//! The keyword table the voters read: every item's category, keywords, pros and cons (the
//! readable `keywords.jsonl`) and the MiniLM embeddings of its pros and cons texts (the binary
//! `pros.safetensors` / `cons.safetensors`, `rec embed`'s contract: `embeddings` [n, 384] and
//! `item_ids` in row order).
//!
//! A list that is empty (malformed answer, no item text) has a zero embedding row: its cosine
//! with anything is 0, so it is never the closest match by accident of an embedded empty string.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use anyhow::{ensure, Context, Result};

use super::profile::{read_table, ItemProfile};
use crate::progress::Reporter;
use crate::rec::embed::{
    self, minilm::EncoderFiles, read_item_embeddings, EmbedOptions, ItemEmbeddings,
};

/// File names inside a build directory.
pub const TABLE_FILE: &str = "keywords.jsonl";
pub const PROS_FILE: &str = "pros.safetensors";
pub const CONS_FILE: &str = "cons.safetensors";
pub const CACHE_FILE: &str = "llm_cache.jsonl";
/// `producer` metadata of the embedding files.
pub const PRODUCER: &str = "llmrl usersim build";

/// Profiles with their sets and embeddings, indexed by item id.
pub struct ProfileTable {
    pub profiles: Vec<ItemProfile>,
    index: HashMap<String, usize>,
    pub category: Vec<HashSet<String>>,
    pub pros: Vec<HashSet<String>>,
    pub cons: Vec<HashSet<String>>,
    /// Row-major `[n, dim]`, unit rows (zero rows for empty lists).
    pub pros_emb: Vec<f32>,
    pub cons_emb: Vec<f32>,
    pub dim: usize,
}

impl ProfileTable {
    /// Builds the table from profiles and their embeddings (rows in profile order).
    pub fn new(
        profiles: Vec<ItemProfile>,
        pros_emb: Vec<f32>,
        cons_emb: Vec<f32>,
        dim: usize,
    ) -> Result<Self> {
        let n = profiles.len();
        ensure!(
            pros_emb.len() == n * dim && cons_emb.len() == n * dim,
            "embeddings hold {} and {} values for {n} items × {dim}",
            pros_emb.len(),
            cons_emb.len()
        );
        let set = |v: &Vec<String>| v.iter().cloned().collect::<HashSet<_>>();
        let mut index = HashMap::with_capacity(n);
        for (i, p) in profiles.iter().enumerate() {
            ensure!(
                index.insert(p.item.clone(), i).is_none(),
                "item `{}` appears twice in the keyword table",
                p.item
            );
        }
        Ok(Self {
            category: profiles.iter().map(|p| set(&p.category)).collect(),
            pros: profiles.iter().map(|p| set(&p.pros)).collect(),
            cons: profiles.iter().map(|p| set(&p.cons)).collect(),
            profiles,
            index,
            pros_emb,
            cons_emb,
            dim,
        })
    }

    /// Reads a build directory (`keywords.jsonl`, `pros.safetensors`, `cons.safetensors`).
    pub fn read(dir: &Path) -> Result<Self> {
        let profiles = read_table(&dir.join(TABLE_FILE))?;
        let ids: Vec<String> = profiles.iter().map(|p| p.item.clone()).collect();
        let load = |name: &str| -> Result<ItemEmbeddings> {
            let p = dir.join(name);
            let e = read_item_embeddings(&p).with_context(|| {
                format!(
                    "reading {}; hint: rerun `llmrl usersim build` (it reuses its cache)",
                    p.display()
                )
            })?;
            ensure!(
                e.ids == ids,
                "{}: its item ids differ from {TABLE_FILE}'s; hint: rerun `llmrl usersim build`",
                p.display()
            );
            Ok(e)
        };
        let (pros, cons) = (load(PROS_FILE)?, load(CONS_FILE)?);
        ensure!(
            pros.dim == cons.dim,
            "pros and cons embeddings differ in width"
        );
        Self::new(profiles, pros.data, cons.data, pros.dim)
    }

    pub fn len(&self) -> usize {
        self.profiles.len()
    }

    pub fn is_empty(&self) -> bool {
        self.profiles.is_empty()
    }

    /// The row of an item id.
    pub fn get(&self, item: &str) -> Option<usize> {
        self.index.get(item).copied()
    }

    pub fn pros_row(&self, i: usize) -> &[f32] {
        &self.pros_emb[i * self.dim..(i + 1) * self.dim]
    }

    pub fn cons_row(&self, i: usize) -> &[f32] {
        &self.cons_emb[i * self.dim..(i + 1) * self.dim]
    }
}

/// Embeds every profile's pros and cons text (empty texts get zero rows, not an encoder call).
pub fn embed_profiles(
    files: &EncoderFiles,
    profiles: &[ItemProfile],
    opts: &EmbedOptions,
    reporter: &dyn Reporter,
) -> Result<(ItemEmbeddings, ItemEmbeddings)> {
    let texts: Vec<String> = profiles
        .iter()
        .map(ItemProfile::pros_text)
        .chain(profiles.iter().map(ItemProfile::cons_text))
        .collect();
    let live: Vec<usize> = (0..texts.len()).filter(|&i| !texts[i].is_empty()).collect();
    let live_texts: Vec<String> = live.iter().map(|&i| texts[i].clone()).collect();
    let e = embed::embed_texts(files, &live_texts, opts, reporter)?;
    let dim = e.dim;
    let mut all = vec![0f32; texts.len() * dim];
    for (k, &i) in live.iter().enumerate() {
        all[i * dim..(i + 1) * dim].copy_from_slice(&e.data[k * dim..(k + 1) * dim]);
    }
    let n = profiles.len();
    let ids: Vec<String> = profiles.iter().map(|p| p.item.clone()).collect();
    let meta = HashMap::from([
        ("producer".to_string(), PRODUCER.to_string()),
        ("encoder_sha256".to_string(), e.encoder_sha256.clone()),
    ]);
    let make = |rows: &[f32]| ItemEmbeddings {
        ids: ids.clone(),
        data: rows.to_vec(),
        dim,
        metadata: meta.clone(),
    };
    Ok((make(&all[..n * dim]), make(&all[n * dim..])))
}
