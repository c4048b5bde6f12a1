//! Item embeddings for the Semantic-ID tokenizer: catalogue texts (`rec::items`) → a sentence
//! encoder (`minilm`: all-MiniLM-L6-v2 as sentence-transformers runs it) → an `[n_items, dim]`
//! f32 matrix, cached by content hash.
//!
//! The file written for the next stage (`llmrl sid build --embeddings FILE`) is a safetensors
//! file with one tensor `embeddings` (f32, `[n_items, dim]`) and the `__metadata__` key
//! `item_ids`, a JSON array of the item id strings in row order; further metadata keys
//! (`producer`, `encoder`, `encoder_sha256`, `source`, `max_seq_length`) are provenance.
//!
//! The cache: `CACHE_DIR/<first 32 hex of the key>.safetensors`, where the key is SHA-256 over
//! the encoder's fingerprint ([`minilm::EncoderFiles::fingerprint`]: bytes of config, tokenizer
//! and weights, and the settings) and the texts in order. Re-running on the same catalogue and
//! encoder reads that file instead of running the model; any change of a text, of the order, or
//! of a model file is a different key. The batch size and device are not in the key: they change
//! the numbers only by float rounding. An unreadable cache file is recomputed, not an error.

pub mod minilm;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, ensure, Context, Result};
use candle_core::Device;
use sha2::{Digest, Sha256};

use crate::progress::Reporter;
use minilm::{hex, EncoderFiles, SentenceEncoder};

/// The tensor holding the matrix, in the output file and in cache files.
pub const EMBEDDINGS_TENSOR: &str = "embeddings";
/// The metadata key of the row order: a JSON array of item id strings.
pub const ITEM_IDS_KEY: &str = "item_ids";
/// `producer` metadata of files this module writes; an existing output is replaced only if it
/// carries it (nothing a user wrote is overwritten).
pub const PRODUCER: &str = "llmrl rec embed";
const CACHE_PRODUCER: &str = "llmrl rec embed cache";

/// How [`embed_texts`] runs.
#[derive(Clone, Debug)]
pub struct EmbedOptions {
    pub batch_size: usize,
    /// Where cache files live; `None` turns the cache off.
    pub cache_dir: Option<PathBuf>,
    pub device: Device,
}

/// Whether the cache answered.
#[derive(Clone, Debug, PartialEq)]
pub enum CacheUse {
    Off,
    Hit(PathBuf),
    /// Computed, and written there.
    Miss(PathBuf),
}

/// Unit-norm text embeddings, row-major `[n, dim]`.
#[derive(Clone, Debug)]
pub struct Embeddings {
    pub data: Vec<f32>,
    pub dim: usize,
    pub cache: CacheUse,
    /// The encoder's fingerprint (provenance for the output file).
    pub encoder_sha256: String,
}

/// The cache key of `texts` under the encoder with fingerprint `encoder`.
pub fn cache_key(encoder: &str, texts: &[String]) -> String {
    let mut h = Sha256::new();
    h.update(b"llmrl item embeddings v1\n");
    h.update(encoder.as_bytes());
    h.update((texts.len() as u64).to_le_bytes());
    for t in texts {
        // Length-prefixed, so no two lists of texts hash the same bytes.
        h.update((t.len() as u64).to_le_bytes());
        h.update(t.as_bytes());
    }
    hex(&h.finalize())
}

/// Embeds `texts` with the encoder in `files` (loaded only when the cache cannot answer).
pub fn embed_texts(
    files: &EncoderFiles,
    texts: &[String],
    opts: &EmbedOptions,
    reporter: &dyn Reporter,
) -> Result<Embeddings> {
    ensure!(opts.batch_size > 0, "--batch-size must be at least 1");
    let encoder_sha256 = files.fingerprint()?;
    let key = cache_key(&encoder_sha256, texts);
    let cache_file = opts
        .cache_dir
        .as_ref()
        .map(|d| d.join(format!("{}.safetensors", &key[..32])));
    if let Some(p) = cache_file.as_ref().filter(|p| p.is_file()) {
        match read_cache(p, &key, texts.len()) {
            Ok((data, dim)) => {
                return Ok(Embeddings {
                    data,
                    dim,
                    cache: CacheUse::Hit(p.clone()),
                    encoder_sha256,
                })
            }
            Err(e) => reporter.message(&format!("ignoring cache file: {e:#}; recomputing")),
        }
    }
    let encoder = SentenceEncoder::load(files, &opts.device)?;
    let data = encoder.encode(texts, opts.batch_size, reporter)?;
    let dim = encoder.dim;
    let cache = match cache_file {
        None => CacheUse::Off,
        Some(p) => {
            let meta = HashMap::from([
                ("producer".to_string(), CACHE_PRODUCER.to_string()),
                ("key".to_string(), key.clone()),
            ]);
            write_matrix(&p, &data, [texts.len(), dim], meta)?;
            CacheUse::Miss(p)
        }
    };
    Ok(Embeddings {
        data,
        dim,
        cache,
        encoder_sha256,
    })
}

fn read_cache(p: &Path, key: &str, n: usize) -> Result<(Vec<f32>, usize)> {
    let (data, [rows, dim], meta) = read_matrix(p)?;
    ensure!(
        meta.get("key").map(String::as_str) == Some(key),
        "{}: written for another key",
        p.display()
    );
    ensure!(rows == n, "{}: {rows} rows for {n} texts", p.display());
    Ok((data, dim))
}

/// Item embeddings with their ids: the contract between `rec embed` and `sid build`.
#[derive(Clone, Debug, PartialEq)]
pub struct ItemEmbeddings {
    pub ids: Vec<String>,
    /// Row-major `[ids.len(), dim]`.
    pub data: Vec<f32>,
    pub dim: usize,
    /// Extra `__metadata__` entries (provenance); `item_ids` is added on write.
    pub metadata: HashMap<String, String>,
}

impl ItemEmbeddings {
    pub fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.dim..(i + 1) * self.dim]
    }
}

/// Writes the contract file (atomically: a temp file beside it, then a rename).
pub fn write_item_embeddings(path: &Path, e: &ItemEmbeddings) -> Result<()> {
    ensure!(
        e.data.len() == e.ids.len() * e.dim,
        "{} values for {} items × {}",
        e.data.len(),
        e.ids.len(),
        e.dim
    );
    let mut meta = e.metadata.clone();
    meta.insert(ITEM_IDS_KEY.to_string(), serde_json::to_string(&e.ids)?);
    write_matrix(path, &e.data, [e.ids.len(), e.dim], meta)
}

/// Reads a file written by [`write_item_embeddings`] (any safetensors file with an f32
/// `embeddings` matrix and an `item_ids` array of as many ids as rows).
pub fn read_item_embeddings(path: &Path) -> Result<ItemEmbeddings> {
    let (data, [rows, dim], mut metadata) = read_matrix(path)?;
    let ids = metadata.remove(ITEM_IDS_KEY).with_context(|| {
        format!(
            "{}: no `{ITEM_IDS_KEY}` in the safetensors metadata; hint: write it with \
             `llmrl rec embed`",
            path.display()
        )
    })?;
    let ids: Vec<String> = serde_json::from_str(&ids).with_context(|| {
        format!(
            "{}: `{ITEM_IDS_KEY}` is not a JSON array of strings",
            path.display()
        )
    })?;
    ensure!(
        ids.len() == rows,
        "{}: {} item ids for {rows} rows",
        path.display(),
        ids.len()
    );
    Ok(ItemEmbeddings {
        ids,
        data,
        dim,
        metadata,
    })
}

/// Whether `path` is a file this module wrote (and so may be replaced).
pub fn written_by_us(path: &Path) -> bool {
    read_matrix(path)
        .map(|(_, _, m)| m.get("producer").map(String::as_str) == Some(PRODUCER))
        .unwrap_or(false)
}

type Matrix = (Vec<f32>, [usize; 2], HashMap<String, String>);

fn read_matrix(path: &Path) -> Result<Matrix> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let bad = |e: safetensors::SafeTensorError| anyhow!("{}: {e:?}", path.display());
    let st = safetensors::SafeTensors::deserialize(&bytes).map_err(bad)?;
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).map_err(bad)?;
    let t = st.tensor(EMBEDDINGS_TENSOR).map_err(|_| {
        anyhow!(
            "{}: no `{EMBEDDINGS_TENSOR}` tensor (has {:?})",
            path.display(),
            st.names()
        )
    })?;
    let [rows, dim] = t.shape() else {
        bail!(
            "{}: `{EMBEDDINGS_TENSOR}` has shape {:?}, expected [n_items, dim]",
            path.display(),
            t.shape()
        );
    };
    ensure!(
        t.dtype() == safetensors::Dtype::F32,
        "{}: `{EMBEDDINGS_TENSOR}` is {:?}, expected F32",
        path.display(),
        t.dtype()
    );
    let data = t
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    let meta = header.metadata().clone().unwrap_or_default();
    Ok((data, [*rows, *dim], meta))
}

fn write_matrix(
    path: &Path,
    data: &[f32],
    shape: [usize; 2],
    meta: HashMap<String, String>,
) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let bytes: Vec<u8> = data.iter().flat_map(|x| x.to_le_bytes()).collect();
    let view =
        safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.to_vec(), &bytes)
            .map_err(|e| anyhow!("{e:?}"))?;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    safetensors::serialize_to_file([(EMBEDDINGS_TENSOR, view)], Some(meta), &tmp)
        .map_err(|e| anyhow!("writing {}: {e:?}", tmp.display()))?;
    std::fs::rename(&tmp, path)
        .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))
}

#[cfg(test)]
mod tests;
