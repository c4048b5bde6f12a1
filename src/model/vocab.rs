//! A vocabulary that grows: add tokens to a loaded model (tokenizer, embedding, LM head, config),
//! e.g. the Semantic-ID tokens of a recommendation catalogue.
//!
//! - Ids: new tokens are numbered on from the tokenizer's length (`len(tokenizer)` in
//!   transformers), not from the embedding's row count: Qwen's embedding has padding rows beyond
//!   its tokenizer (151 936 rows for 151 665 tokens), and new tokens take those rows first; the
//!   matrices grow only when the new ids run past them.
//! - Rows: each new token's embedding row (and LM-head row when the head is untied) starts at the
//!   mean of the existing tokens' rows, as transformers' `resize_token_embeddings(...,
//!   mean_resizing=True)` (its default) does. A mean row keeps the model's predictions where they
//!   were: its logit `h·mean` is the average logit, so a new token takes no probability mass from
//!   the old ones at step 0, where a random or zero row can (Hewitt, "Initializing new word
//!   embeddings", 2021). transformers samples from N(mean, 1e-9·cov), i.e. the mean plus noise far
//!   below f32 training noise; we take the mean exactly (no RNG). The mean is over the tokenizer's
//!   rows, not padding rows, which were never trained; without padding that is transformers' mean.
//! - Tied embeddings stay one tensor (the head *is* the embedding); an untied head grows with it.
//! - Tokenizer: the tokens are added as *non-special* added tokens (see
//!   [`Tokenizer::add_tokens`](super::Tokenizer::add_tokens)) so decoding keeps them as text.
//! - `config.json`'s `vocab_size` becomes the new row count; [`super::save_hf_dir`] then writes a
//!   directory transformers loads with the new vocabulary (`tests/fixtures/check_added_tokens.py`).
//!
//! Add tokens right after loading, before building a `Decoder` or an optimizer: the resized
//! matrices are new variables. Adding a token that is already in the vocabulary changes nothing
//! and reports its id ([`AddedTokens::existing`]).

use std::ops::Range;
use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};
use candle_core::Tensor;
use serde::{Deserialize, Serialize};

use super::load::LoadedModel;
use super::trainable::Trainable;

const EMBED: &str = "model.embed_tokens.weight";
const HEAD: &str = "lm_head.weight";

/// What [`add_tokens`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AddedTokens {
    /// Every requested token with its id, in request order (a repeated token listed once).
    pub ids: Vec<(String, u32)>,
    /// The requested tokens that were already in the vocabulary (nothing changed for them).
    pub existing: Vec<(String, u32)>,
    /// Ids of the tokens this call added: consecutive, starting at the tokenizer's old length.
    pub new_ids: Range<u32>,
    /// Embedding rows before and after (after == `config.vocab_size`).
    pub rows_before: usize,
    pub rows_after: usize,
    /// New tokens that took a padding row the embedding already had (Qwen).
    pub reused_padding_rows: usize,
}

impl AddedTokens {
    /// Ids of all requested tokens (new or existing), in request order.
    pub fn all_ids(&self) -> Vec<u32> {
        self.ids.iter().map(|(_, id)| *id).collect()
    }
}

/// Adds `tokens` to `model`: tokenizer, embedding, LM head and `config.vocab_size` (module docs).
/// An empty token is an error; one already in the vocabulary is a no-op reported back.
pub fn add_tokens<S: AsRef<str>>(model: &mut LoadedModel, tokens: &[S]) -> Result<AddedTokens> {
    let mut wanted: Vec<&str> = Vec::with_capacity(tokens.len());
    for t in tokens {
        let t = t.as_ref();
        ensure!(
            !t.is_empty(),
            "cannot add an empty token; hint: drop empty entries from the token list"
        );
        if !wanted.contains(&t) {
            wanted.push(t);
        }
    }
    let tok = &mut model.tokenizer;
    let old_len = tok.vocab_size();
    let existing: Vec<(String, u32)> = wanted
        .iter()
        .filter_map(|t| Some((t.to_string(), tok.token_id(t)?)))
        .collect();
    let ids = tok.add_tokens(&wanted)?;
    let ids: Vec<(String, u32)> = wanted.iter().map(|t| t.to_string()).zip(ids).collect();
    let mut new: Vec<u32> = ids
        .iter()
        .filter(|(t, _)| !existing.iter().any(|(e, _)| e == t))
        .map(|(_, id)| *id)
        .collect();
    new.sort_unstable();
    let new_ids = match (new.first(), new.last()) {
        (Some(&a), Some(&b)) => a..b + 1,
        _ => old_len as u32..old_len as u32,
    };
    // The tokenizers crate numbers new tokens consecutively from its length; anything else would
    // leave rows no token owns, so refuse rather than guess.
    ensure!(
        new_ids.len() == new.len() && (new.is_empty() || new_ids.start as usize == old_len),
        "the tokenizer gave the new tokens ids {new:?}, not consecutive from its length {old_len}; \
         hint: its added tokens leave gaps in the id space, which llmrl cannot resize around"
    );

    let rows_before = model.params.var(EMBED)?.dims()[0];
    let rows_after = rows_before.max(new_ids.end as usize);
    let reused_padding_rows = (new_ids.start as usize..new_ids.end as usize)
        .filter(|&i| i < rows_before)
        .count();
    if !new.is_empty() {
        let mut names = vec![EMBED];
        if !model.config.tie_word_embeddings {
            names.push(HEAD);
        }
        for name in names {
            let w = model.params.var(name)?.as_tensor().clone();
            let grown = with_mean_rows(&w, old_len.min(rows_before), &new_ids, rows_after)
                .with_context(|| format!("resizing `{name}`"))?;
            model.params.replace(name, &grown)?;
        }
        model.config.vocab_size = rows_after;
    }
    Ok(AddedTokens {
        ids,
        existing,
        new_ids,
        rows_before,
        rows_after,
        reused_padding_rows,
    })
}

/// `w` (R, H) → (rows_after, H): rows in `new` set to the mean of rows `0..n_mean`, rows past `R`
/// created, every other row (old tokens, padding rows no new token takes) kept bit for bit.
fn with_mean_rows(
    w: &Tensor,
    n_mean: usize,
    new: &Range<u32>,
    rows_after: usize,
) -> Result<Tensor> {
    let (rows, h) = w.dims2()?;
    let (a, b) = (new.start as usize, new.end as usize);
    ensure!(n_mean > 0 && a <= rows, "no existing rows to average");
    let mean = w.narrow(0, 0, n_mean)?.mean_keepdim(0)?; // (1, H)
    let mut parts = vec![w.narrow(0, 0, a)?, mean.broadcast_as((b - a, h))?]; // (a, H), (b-a, H)
    if b < rows {
        parts.push(w.narrow(0, b, rows - b)?); // untouched padding rows
    }
    let out = Tensor::cat(&parts, 0)?.contiguous()?; // (rows_after, H)
    debug_assert_eq!(out.dims()[0], rows_after);
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Recipe keys

/// The recipe keys of a growing vocabulary, read from `[model]`:
///
/// ```toml
/// [model]
/// add_tokens = { file = "sid_tokens.txt", list = ["<a_1>", "<a_2>"] }
/// train_only_new_tokens = true
/// ```
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VocabSection {
    pub add_tokens: Option<AddTokensSpec>,
    /// Train only the rows of the added tokens in the embedding (and untied LM head); every
    /// other weight is frozen.
    pub train_only_new_tokens: bool,
}

/// Tokens to add: from a file and/or a list, file first, in order, repeats dropped.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AddTokensSpec {
    /// A `.json` array of strings, or text with one token per line (surrounding whitespace
    /// trimmed, blank lines skipped). Relative to the recipe.
    pub file: Option<PathBuf>,
    pub list: Vec<String>,
}

/// [`VocabSection`] resolved: the token list read and checked.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct VocabPlan {
    pub tokens: Vec<String>,
    pub train_only_new_tokens: bool,
}

impl VocabSection {
    /// Reads the token file and checks the options, before any weights load.
    pub fn resolve(&self, base_dir: &Path) -> Result<VocabPlan> {
        let mut tokens: Vec<String> = Vec::new();
        if let Some(spec) = &self.add_tokens {
            if let Some(f) = &spec.file {
                tokens.extend(read_token_file(&base_dir.join(f))?);
            }
            tokens.extend(spec.list.iter().cloned());
        }
        if let Some(i) = tokens.iter().position(String::is_empty) {
            bail!("model.add_tokens: token {i} is empty; hint: remove it from the list");
        }
        let mut seen = std::collections::HashSet::new();
        tokens.retain(|t| seen.insert(t.clone()));
        if self.train_only_new_tokens && tokens.is_empty() {
            bail!(
                "model.train_only_new_tokens = true but no tokens are added, so nothing would \
                 train; hint: set model.add_tokens = {{ list = [...] }} or {{ file = \"...\" }}"
            );
        }
        Ok(VocabPlan {
            tokens,
            train_only_new_tokens: self.train_only_new_tokens,
        })
    }
}

fn read_token_file(path: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path).with_context(|| {
        format!(
            "reading model.add_tokens.file {}; hint: the path is relative to the recipe",
            path.display()
        )
    })?;
    if path.extension().is_some_and(|e| e == "json") {
        return serde_json::from_str(&text).with_context(|| {
            format!(
                "{}: expected a JSON array of strings, e.g. [\"<a_1>\", \"<a_2>\"]",
                path.display()
            )
        });
    }
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect())
}

impl VocabPlan {
    /// Adds the tokens to `model` and says what trains. With `train_only_new_tokens` that is the
    /// rows of *all* listed tokens, also those already present: a run resumed from its own
    /// checkpoint (where the tokens exist) then trains exactly the rows it trained before.
    pub fn apply(&self, model: &mut LoadedModel) -> Result<(AddedTokens, Trainable)> {
        let added = add_tokens(model, &self.tokens)?;
        let trainable = if self.train_only_new_tokens {
            Trainable::token_rows(&added.all_ids(), model.config.tie_word_embeddings)
        } else {
            Trainable::All
        };
        Ok((added, trainable))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn mean_rows_fill_new_ids_and_keep_the_rest() {
        // 3 token rows + 2 padding rows; new ids 3..6 take both padding rows and add one.
        let w = Tensor::new(
            &[[1f32, 2.], [3., 4.], [5., 9.], [-7., 7.], [8., 8.]],
            &Device::Cpu,
        )
        .unwrap();
        let out = with_mean_rows(&w, 3, &(3..6), 6).unwrap();
        assert_eq!(
            out.to_vec2::<f32>().unwrap(),
            vec![
                vec![1., 2.],
                vec![3., 4.],
                vec![5., 9.],
                vec![3., 5.],
                vec![3., 5.],
                vec![3., 5.]
            ]
        );
        // One new id: the second padding row stays as it was.
        let out = with_mean_rows(&w, 3, &(3..4), 5).unwrap();
        assert_eq!(
            out.to_vec2::<f32>().unwrap()[3..],
            [vec![3., 5.], vec![8., 8.]]
        );
    }

    #[test]
    fn section_reads_file_then_list_and_rejects_bad_input() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("t.txt"), "<a_1>\n\n  <a_2>  \n<a_1>\n").unwrap();
        std::fs::write(dir.path().join("t.json"), r#"["<b_1>", "<b_2>"]"#).unwrap();
        let sec: VocabSection = toml::from_str(
            "add_tokens = { file = \"t.txt\", list = [\"<z>\", \"<a_2>\"] }\n\
             train_only_new_tokens = true",
        )
        .unwrap();
        let plan = sec.resolve(dir.path()).unwrap();
        assert_eq!(plan.tokens, vec!["<a_1>", "<a_2>", "<z>"]);
        assert!(plan.train_only_new_tokens);
        let json: VocabSection = toml::from_str("add_tokens = { file = \"t.json\" }").unwrap();
        assert_eq!(
            json.resolve(dir.path()).unwrap().tokens,
            vec!["<b_1>", "<b_2>"]
        );

        assert!(toml::from_str::<VocabSection>("add_tokens = { files = \"x\" }").is_err());
        let missing: VocabSection = toml::from_str("add_tokens = { file = \"nope.txt\" }").unwrap();
        let e = format!("{:#}", missing.resolve(dir.path()).unwrap_err());
        assert!(e.contains("nope.txt") && e.contains("hint"), "{e}");
        let nothing = VocabSection {
            train_only_new_tokens: true,
            ..Default::default()
        };
        let e = nothing.resolve(dir.path()).unwrap_err().to_string();
        assert!(e.contains("nothing would train"), "{e}");
        let empty: VocabSection = toml::from_str("add_tokens = { list = [\"\"] }").unwrap();
        assert!(empty.resolve(dir.path()).is_err());
    }
}
