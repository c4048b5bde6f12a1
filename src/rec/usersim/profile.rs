//! The keyword pass (`llmrl usersim build`): one LLM call per item turns the item's text into
//! objective keywords and subjective pros and cons ([`super::prompt`]), batched, cached and
//! resumable.
//!
//! MovieLens-100K has no reviews, so the pass runs once per item (not once per rating); a
//! user's pros and cons are the keywords of the items they rated high and low (the voters do
//! that). The item's *category* is its own genres/categories field (the data says it exactly; a
//! 135M model only copies it back), split on `, `; an item without one shares no category.
//!
//! # The cache (`llm_cache.jsonl`, resume after a kill)
//!
//! Every answer is appended as one JSON line `{"item", "key", "raw", "finish"}` and flushed when
//! its batch ends; `key` hashes the model, the rendered prompt and the generation settings, so a
//! changed prompt or model regenerates. On start the file is read back: complete lines whose key
//! matches are reused, an incomplete last line (a write cut by a kill) is cut off the file (it
//! held no whole answer), and any other unreadable line is skipped with a message. Answers are
//! parsed from the cached raw text every time, so a change to the parser needs no new calls.
//!
//! An item without text (no title and no other field) is not sent to the model: its lists are
//! empty with the reason `no item text`.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Read, Write};
use std::path::Path;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::prompt::{parse_answer, PromptTemplate};
use crate::progress::Reporter;
use crate::rec::items::Item;

/// Something that completes prompts: the LLM in the CLI, a scripted stand-in in tests.
pub trait TextGenerator {
    /// A stable description of the model and its settings (part of every cache key).
    fn fingerprint(&self) -> String;
    /// The prompt text for an item (template applied).
    fn render(&self, template: &PromptTemplate, item_text: &str) -> Result<String>;
    /// One completion per prompt, in order: `(text, finish reason)`.
    fn complete(&mut self, prompts: &[String]) -> Result<Vec<(String, String)>>;
}

/// One cached answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CacheEntry {
    pub item: String,
    pub key: String,
    pub raw: String,
    pub finish: String,
}

/// One row of the keyword table (`keywords.jsonl`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ItemProfile {
    pub item: String,
    pub title: String,
    /// The item's own genres/categories, lower-cased.
    pub category: Vec<String>,
    /// Objective attribute keywords.
    pub keywords: Vec<String>,
    pub pros: Vec<String>,
    pub cons: Vec<String>,
    /// Why a list is empty (malformed answer, no item text); absent when all three are there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl ItemProfile {
    /// The text embedded for logical voter B (`""`: nothing to embed, a zero vector).
    pub fn pros_text(&self) -> String {
        self.pros.join(", ")
    }
    pub fn cons_text(&self) -> String {
        self.cons.join(", ")
    }
}

/// How the pass runs.
#[derive(Clone, Debug)]
pub struct BuildConfig {
    /// Prompts per generation batch (and per cache flush).
    pub batch_size: usize,
}

/// The category of an item: its genres (or categories) part, split on `, `.
pub fn category(item: &Item) -> Vec<String> {
    item.parts
        .iter()
        .filter(|(k, _)| *k == "genres" || *k == "categories")
        .flat_map(|(_, v)| v.split(", ").map(|s| s.trim().to_lowercase()))
        .filter(|s| !s.is_empty())
        .collect()
}

/// Reads the cache; entries by item id, the latest line winning. With `repair`, an incomplete
/// last line is cut off the file (only a writer does this: a reader beside a running pass
/// leaves its file alone and ignores the partial line). Reports skipped lines.
pub fn read_cache(
    path: &Path,
    repair: bool,
    reporter: &dyn Reporter,
) -> Result<HashMap<String, CacheEntry>> {
    let mut out = HashMap::new();
    if !path.exists() {
        return Ok(out);
    }
    let mut f = OpenOptions::new()
        .read(true)
        .write(repair)
        .open(path)
        .with_context(|| format!("opening the cache {}", path.display()))?;
    let mut bytes = Vec::new();
    f.read_to_end(&mut bytes)
        .with_context(|| format!("reading the cache {}", path.display()))?;
    let complete = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    if repair && complete < bytes.len() {
        reporter.message(&format!(
            "{}: cut an incomplete last line ({} bytes, a write stopped by a kill)",
            path.display(),
            bytes.len() - complete
        ));
        f.set_len(complete as u64)
            .with_context(|| format!("cutting the cache {}", path.display()))?;
    }
    let text = String::from_utf8_lossy(&bytes[..complete]);
    let mut bad = 0;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        match serde_json::from_str::<CacheEntry>(line) {
            Ok(e) => {
                out.insert(e.item.clone(), e);
            }
            Err(_) => bad += 1,
        }
    }
    if bad > 0 {
        reporter.message(&format!(
            "{}: skipped {bad} unreadable lines",
            path.display()
        ));
    }
    Ok(out)
}

/// The cache key of one prompt under one generator.
pub fn cache_key(fingerprint: &str, prompt: &str) -> String {
    let mut h = Sha256::new();
    h.update(b"llmrl usersim keywords v1\n");
    h.update((fingerprint.len() as u64).to_le_bytes());
    h.update(fingerprint.as_bytes());
    h.update(prompt.as_bytes());
    h.finalize()
        .iter()
        .take(16)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Runs the pass over `items`: answers from the cache where it has them, the rest from `gen`
/// in batches (each batch appended to the cache before the next starts). Returns one profile
/// per item, in `items` order, and how many answers were generated now.
pub fn build_profiles(
    items: &[Item],
    template: &PromptTemplate,
    gen: &mut dyn TextGenerator,
    cache_path: &Path,
    cfg: &BuildConfig,
    reporter: &dyn Reporter,
) -> Result<(Vec<ItemProfile>, usize)> {
    anyhow::ensure!(cfg.batch_size > 0, "--batch-size must be at least 1");
    let mut cache = read_cache(cache_path, true, reporter)?;
    let fp = gen.fingerprint();
    let mut todo: Vec<(usize, String, String)> = Vec::new(); // (item index, prompt, key)
    for (i, it) in items.iter().enumerate() {
        let text = it.text();
        if text.trim().is_empty() {
            continue;
        }
        let prompt = gen.render(template, &text)?;
        let key = cache_key(&fp, &prompt);
        if cache.get(&it.id).is_none_or(|e| e.key != key) {
            todo.push((i, prompt, key));
        }
    }
    let done = items.len() - todo.len();
    if done > 0 && !todo.is_empty() {
        reporter.message(&format!(
            "resuming: {done} of {} items answered already",
            items.len()
        ));
    }
    reporter.begin("keywords", items.len() as u64, done as u64);
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(cache_path)
        .with_context(|| format!("opening the cache {}", cache_path.display()))?;
    let mut w = BufWriter::new(file);
    let (mut generated, mut malformed) = (0usize, 0usize);
    for batch in todo.chunks(cfg.batch_size) {
        let prompts: Vec<String> = batch.iter().map(|(_, p, _)| p.clone()).collect();
        let answers = gen.complete(&prompts)?;
        for ((i, _, key), (raw, finish)) in batch.iter().zip(answers) {
            let e = CacheEntry {
                item: items[*i].id.clone(),
                key: key.clone(),
                raw,
                finish,
            };
            let full = format!("{}{}", template.answer_prefix, e.raw);
            malformed += usize::from(parse_answer(&full, &template.examples).reason.is_some());
            writeln!(w, "{}", serde_json::to_string(&e)?)?;
            cache.insert(e.item.clone(), e);
        }
        w.flush()
            .with_context(|| format!("writing the cache {}", cache_path.display()))?;
        generated += batch.len();
        reporter.progress(
            (done + generated) as u64,
            &[("malformed", malformed as f64 / generated as f64)],
        );
    }
    reporter.end();
    let profiles = items
        .iter()
        .map(|it| profile_of(it, cache.get(&it.id), template))
        .collect();
    Ok((profiles, generated))
}

/// The table from the cache alone, generating nothing (e.g. beside a pass still running): items
/// the cache has no answer for get empty lists with the reason `not answered yet`. Cached
/// answers are used whatever their key.
pub fn profiles_from_cache(
    items: &[Item],
    template: &PromptTemplate,
    cache_path: &Path,
    reporter: &dyn Reporter,
) -> Result<Vec<ItemProfile>> {
    let cache = read_cache(cache_path, false, reporter)?;
    Ok(items
        .iter()
        .map(|it| {
            let mut p = profile_of(it, cache.get(&it.id), template);
            if !cache.contains_key(&it.id) && !it.text().trim().is_empty() {
                p.reason = Some("not answered yet: the pass has not reached it".into());
            }
            p
        })
        .collect())
}

fn profile_of(item: &Item, entry: Option<&CacheEntry>, template: &PromptTemplate) -> ItemProfile {
    let mut p = ItemProfile {
        item: item.id.clone(),
        title: item.title.clone(),
        category: category(item),
        ..ItemProfile::default()
    };
    match entry {
        None => p.reason = Some("no item text: not sent to the model".into()),
        Some(e) => {
            let parsed = parse_answer(
                &format!("{}{}", template.answer_prefix, e.raw),
                &template.examples,
            );
            let [k, pros, cons] = parsed.lists;
            (p.keywords, p.pros, p.cons) = (k, pros, cons);
            p.reason = parsed.reason;
        }
    }
    p
}

/// Writes the keyword table, one JSON object per line, atomically.
pub fn write_table(path: &Path, profiles: &[ItemProfile]) -> Result<()> {
    let tmp = path.with_extension("jsonl.tmp");
    {
        let mut w = BufWriter::new(
            File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?,
        );
        for p in profiles {
            writeln!(w, "{}", serde_json::to_string(p)?)?;
        }
        w.flush()?;
    }
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
}

/// Reads a keyword table written by [`write_table`].
pub fn read_table(path: &Path) -> Result<Vec<ItemProfile>> {
    let text = std::fs::read_to_string(path).with_context(|| {
        format!(
            "reading the keyword table {}; hint: make it with `llmrl usersim build`",
            path.display()
        )
    })?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l)
                .with_context(|| format!("{} line {}: not a keyword row", path.display(), i + 1))
        })
        .collect()
}
