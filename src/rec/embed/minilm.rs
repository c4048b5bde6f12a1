//! A sentence encoder as sentence-transformers runs all-MiniLM-L6-v2: a BERT (candle-transformers'
//! `BertModel`, f32) over word pieces truncated to `max_seq_length` (256 for this model, special
//! tokens included, as sentence-transformers passes `max_length` to the HF tokenizer), padded to
//! the longest text of each batch, mean-pooled over the attention mask, then L2-normalized.
//!
//! Texts are batched longest first (sentence-transformers sorts by length too) so that a batch
//! pads little; the rows come back in the caller's order. Padding does not change a row beyond
//! float rounding: padded keys get a large negative attention bias and are left out of the mean.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{anyhow, bail, ensure, Context, Result};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokenizers::{TruncationDirection, TruncationParams, TruncationStrategy};

use crate::progress::Reporter;

/// sentence-transformers' `max_seq_length` for all-MiniLM-L6-v2, used when the directory has no
/// `sentence_bert_config.json`.
pub const DEFAULT_MAX_SEQ_LENGTH: usize = 256;

/// The files of a sentence-encoder directory and the settings read from them; enough to
/// fingerprint the encoder without loading it (a cache hit never loads the weights).
#[derive(Clone, Debug)]
pub struct EncoderFiles {
    pub dir: PathBuf,
    pub config: PathBuf,
    pub tokenizer: PathBuf,
    pub weights: PathBuf,
    /// Word pieces per text, `[CLS]` and `[SEP]` included.
    pub max_seq_length: usize,
}

impl EncoderFiles {
    /// Finds `config.json`, `tokenizer.json` and `model.safetensors` in `dir`; reads
    /// `sentence_bert_config.json` (max_seq_length) and `1_Pooling/config.json` (must be mean
    /// pooling, the only one implemented) when present.
    pub fn locate(dir: &Path) -> Result<Self> {
        let hint =
            "hint: scripts/fetch_minilm.sh puts all-MiniLM-L6-v2 in models/all-MiniLM-L6-v2/";
        ensure!(
            dir.is_dir(),
            "encoder directory {} does not exist; {hint}",
            dir.display()
        );
        let file = |name: &str| -> Result<PathBuf> {
            let p = dir.join(name);
            ensure!(p.is_file(), "{} is missing; {hint}", p.display());
            Ok(p)
        };
        let (config, tokenizer, weights) = (
            file("config.json")?,
            file("tokenizer.json")?,
            file("model.safetensors")?,
        );
        let mut max_seq_length = DEFAULT_MAX_SEQ_LENGTH;
        if let Some(v) = read_json_if_present(&dir.join("sentence_bert_config.json"))? {
            if let Some(n) = v.get("max_seq_length").and_then(Value::as_u64) {
                max_seq_length = n as usize;
            }
        }
        let pooling = dir.join("1_Pooling/config.json");
        if let Some(v) = read_json_if_present(&pooling)? {
            let on = |k: &str| v.get(k).and_then(Value::as_bool).unwrap_or(false);
            ensure!(
                on("pooling_mode_mean_tokens")
                    && !on("pooling_mode_cls_token")
                    && !on("pooling_mode_max_tokens")
                    && !on("pooling_mode_mean_sqrt_len_tokens"),
                "{}: only mean pooling is implemented (pooling_mode_mean_tokens alone)",
                pooling.display()
            );
        }
        ensure!(max_seq_length >= 2, "max_seq_length {max_seq_length} < 2");
        Ok(Self {
            dir: dir.to_path_buf(),
            config,
            tokenizer,
            weights,
            max_seq_length,
        })
    }

    /// SHA-256 over the bytes of the config, tokenizer and weights and the encoding settings:
    /// the same hex string exactly when the encoder computes the same function.
    pub fn fingerprint(&self) -> Result<String> {
        let mut h = Sha256::new();
        h.update(b"llmrl sentence encoder v1: bert, mean pooling, l2 norm\n");
        h.update(format!("max_seq_length {}\n", self.max_seq_length).as_bytes());
        for p in [&self.config, &self.tokenizer, &self.weights] {
            let mut f =
                std::fs::File::open(p).with_context(|| format!("reading {}", p.display()))?;
            let n = std::io::copy(&mut f, &mut h)
                .with_context(|| format!("reading {}", p.display()))?;
            h.update(n.to_le_bytes());
        }
        Ok(hex(&h.finalize()))
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn read_json_if_present(p: &Path) -> Result<Option<Value>> {
    if !p.is_file() {
        return Ok(None);
    }
    let s = std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
    let v = serde_json::from_str(&s).with_context(|| format!("parsing {}", p.display()))?;
    Ok(Some(v))
}

/// A loaded BERT sentence encoder.
pub struct SentenceEncoder {
    bert: BertModel,
    tokenizer: tokenizers::Tokenizer,
    /// Output dimension (hidden size), 384 for MiniLM-L6.
    pub dim: usize,
    pad_id: u32,
    device: Device,
}

impl SentenceEncoder {
    pub fn load(files: &EncoderFiles, device: &Device) -> Result<Self> {
        let text = std::fs::read_to_string(&files.config)
            .with_context(|| format!("reading {}", files.config.display()))?;
        let config: Config = serde_json::from_str(&text).with_context(|| {
            format!(
                "{}: not a BERT config (needs hidden_size, num_hidden_layers, ...)",
                files.config.display()
            )
        })?;
        let mut tokenizer = tokenizers::Tokenizer::from_file(&files.tokenizer)
            .map_err(|e| anyhow!("reading {}: {e}", files.tokenizer.display()))?;
        // tokenizer.json carries its own truncation (128) and fixed padding; sentence-transformers
        // overrides both: truncate to max_seq_length, pad per batch (done here, by hand).
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: files.max_seq_length.min(config.max_position_embeddings),
                strategy: TruncationStrategy::LongestFirst,
                stride: 0,
                direction: TruncationDirection::Right,
            }))
            .map_err(|e| anyhow!("{}: {e}", files.tokenizer.display()))?;
        tokenizer.with_padding(None);
        let pad_id = tokenizer.token_to_id("[PAD]").unwrap_or(0);
        // SAFETY: the weights are mapped read-only; as every safetensors reader, we assume nobody
        // truncates the file while the encoder lives.
        let vb = unsafe {
            VarBuilder::from_mmaped_safetensors(
                std::slice::from_ref(&files.weights),
                DType::F32,
                device,
            )
        }
        .with_context(|| format!("reading {}", files.weights.display()))?;
        let bert = BertModel::load(vb, &config).with_context(|| {
            format!(
                "{}: the weights do not fit config.json's BERT",
                files.weights.display()
            )
        })?;
        Ok(Self {
            bert,
            tokenizer,
            dim: config.hidden_size,
            pad_id,
            device: device.clone(),
        })
    }

    /// Word-piece ids of each text, `[CLS] ... [SEP]`, truncated.
    pub fn tokenize(&self, texts: &[String]) -> Result<Vec<Vec<u32>>> {
        let enc = self
            .tokenizer
            .encode_batch(texts.iter().map(String::as_str).collect::<Vec<_>>(), true)
            .map_err(|e| anyhow!("tokenizing: {e}"))?;
        Ok(enc.into_iter().map(|e| e.get_ids().to_vec()).collect())
    }

    /// Unit-norm embeddings of `texts`, row-major `[texts.len(), dim]`, in the given order.
    pub fn encode(
        &self,
        texts: &[String],
        batch_size: usize,
        reporter: &dyn Reporter,
    ) -> Result<Vec<f32>> {
        ensure!(batch_size > 0, "batch size must be at least 1");
        let ids = self.tokenize(texts)?;
        // Longest first, stable, so each batch pads little and equal texts keep their order.
        let mut order: Vec<usize> = (0..ids.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(ids[i].len()));
        let mut out = vec![0f32; texts.len() * self.dim];
        let t0 = Instant::now();
        reporter.begin("embed", texts.len() as u64, 0);
        let mut done = 0usize;
        for chunk in order.chunks(batch_size) {
            let rows: Vec<&[u32]> = chunk.iter().map(|&i| ids[i].as_slice()).collect();
            let emb = self.encode_batch(&rows)?; // [b, dim]
            let emb: Vec<Vec<f32>> = emb.to_vec2()?;
            for (&i, row) in chunk.iter().zip(emb) {
                out[i * self.dim..(i + 1) * self.dim].copy_from_slice(&row);
            }
            done += chunk.len();
            let rate = done as f64 / t0.elapsed().as_secs_f64().max(1e-9);
            reporter.progress(done as u64, &[("items/s", rate)]);
        }
        reporter.end();
        Ok(out)
    }

    /// One padded batch → its unit-norm mean-pooled embeddings `[b, dim]`.
    fn encode_batch(&self, rows: &[&[u32]]) -> Result<Tensor> {
        let b = rows.len();
        let len = rows.iter().map(|r| r.len()).max().unwrap_or(0);
        if len == 0 {
            bail!("a tokenized text is empty (the tokenizer adds no [CLS]/[SEP])");
        }
        let mut ids = vec![self.pad_id; b * len];
        let mut mask = vec![0u32; b * len];
        for (r, row) in rows.iter().enumerate() {
            ids[r * len..r * len + row.len()].copy_from_slice(row);
            mask[r * len..r * len + row.len()].fill(1);
        }
        let ids = Tensor::from_vec(ids, (b, len), &self.device)?; // [b, L]
        let mask = Tensor::from_vec(mask, (b, len), &self.device)?; // [b, L]
        let types = ids.zeros_like()?; // [b, L]
        let hidden = self.bert.forward(&ids, &types, Some(&mask))?; // [b, L, d]
        let m = mask.to_dtype(DType::F32)?.unsqueeze(2)?; // [b, L, 1]
        let summed = hidden.broadcast_mul(&m)?.sum(1)?; // [b, d]
                                                        // sentence-transformers clamps the token count at 1e-9 and the norm at 1e-12.
        let count = m.sum(1)?.clamp(1e-9f32, f32::MAX)?; // [b, 1]
        let mean = summed.broadcast_div(&count)?; // [b, d]
        let norm = mean
            .sqr()?
            .sum_keepdim(1)?
            .sqrt()?
            .clamp(1e-12f32, f32::MAX)?; // [b, 1]
        Ok(mean.broadcast_div(&norm)?)
    }
}
