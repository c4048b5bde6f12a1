//! A from-scratch generative retriever (TIGER-style): a small Llama-architecture decoder over the
//! SID tokens alone, with its own word-level tokenizer, written as an HF directory that
//! `model::load` and transformers both read.
//!
//! Vocabulary, in id order: `<pad>`, `<s>` (BOS, prepended by the tokenizer's post-processor),
//! `</s>` (EOS), `<unk>`, `,` (the history separator `rec::dataset` writes between items), then
//! every level token of the SID table (`SidTable::all_tokens`: `<a_0>`.., `<b_0>`.., ...). The SID
//! tokens are also *added tokens* (not special), so `<a_1><b_2>, <a_3>` splits into `<a_1>`,
//! `<b_2>`, `,`, `<a_3>` with no whitespace needed, and decoding fuses them back into SID strings.
//!
//! Weights start as transformers' `LlamaPreTrainedModel._init_weights` leaves them: every linear
//! and embedding matrix N(0, initializer_range²), the padding row of the embedding zero, RMSNorm
//! weights one; drawn from a seeded ChaCha8 stream (Box-Muller), so a seed fixes the model.

use std::path::Path;

use anyhow::{anyhow, bail, ensure, Result};
use candle_core::{DType, Device, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::sid::SidTable;
use crate::model::{self, ModelConfig, Params, Tokenizer};

pub const PAD: &str = "<pad>";
pub const BOS: &str = "<s>";
pub const EOS: &str = "</s>";
pub const UNK: &str = "<unk>";
/// The history separator (`rec::dataset`'s default `", "` tokenizes to it).
pub const SEP: &str = ",";

/// The size fields of a from-scratch SID decoder.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScratchConfig {
    pub layers: usize,
    pub hidden: usize,
    pub heads: usize,
    /// Key/value heads (grouped-query attention when fewer than `heads`).
    pub kv_heads: usize,
    /// MLP width (0: 4 × hidden).
    pub intermediate: usize,
    pub max_position_embeddings: usize,
    pub rope_theta: f64,
    pub initializer_range: f64,
    pub tie_word_embeddings: bool,
    pub seed: u64,
}

impl Default for ScratchConfig {
    fn default() -> Self {
        Self {
            layers: 4,
            hidden: 256,
            heads: 4,
            kv_heads: 4,
            intermediate: 0,
            max_position_embeddings: 512,
            rope_theta: 10_000.0,
            initializer_range: 0.02,
            tie_word_embeddings: false,
            seed: 0,
        }
    }
}

impl ScratchConfig {
    pub fn validate(&self) -> Result<()> {
        ensure!(self.layers >= 1, "layers must be ≥ 1");
        ensure!(
            self.heads >= 1 && self.hidden.is_multiple_of(self.heads),
            "hidden ({}) must be a multiple of heads ({})",
            self.hidden,
            self.heads
        );
        ensure!(
            (self.hidden / self.heads).is_multiple_of(2),
            "the head size hidden/heads = {} must be even (rotary embeddings)",
            self.hidden / self.heads
        );
        ensure!(
            self.kv_heads >= 1 && self.heads.is_multiple_of(self.kv_heads),
            "heads ({}) must be a multiple of kv_heads ({})",
            self.heads,
            self.kv_heads
        );
        ensure!(
            self.initializer_range > 0.0,
            "initializer_range must be > 0"
        );
        ensure!(
            self.max_position_embeddings >= 8,
            "max_position_embeddings must be ≥ 8"
        );
        Ok(())
    }

    fn intermediate(&self) -> usize {
        if self.intermediate == 0 {
            4 * self.hidden
        } else {
            self.intermediate
        }
    }
}

/// The word-level tokenizer of a SID table (module docs).
pub fn sid_tokenizer(table: &SidTable) -> Result<Tokenizer> {
    let specials = [PAD, BOS, EOS, UNK];
    let mut vocab = serde_json::Map::new();
    let mut added = Vec::new();
    for (i, t) in specials.iter().enumerate() {
        vocab.insert(t.to_string(), json!(i));
        added.push(
            json!({"id": i, "content": t, "single_word": false, "lstrip": false,
            "rstrip": false, "normalized": false, "special": true}),
        );
    }
    vocab.insert(SEP.into(), json!(specials.len()));
    let first = specials.len() + 1;
    for (k, t) in table.all_tokens().iter().enumerate() {
        vocab.insert(t.clone(), json!(first + k));
        added.push(
            json!({"id": first + k, "content": t, "single_word": false, "lstrip": false,
            "rstrip": false, "normalized": false, "special": false}),
        );
    }
    let spec = json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": added,
        "normalizer": null, "pre_tokenizer": {"type": "WhitespaceSplit"},
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": BOS, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": BOS, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                     {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {BOS: {"id": BOS, "ids": [1], "tokens": [BOS]}}
        },
        "decoder": {"type": "Fuse"},
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": UNK},
    });
    let inner: tokenizers::Tokenizer = serde_json::from_value::<tokenizers::Tokenizer>(spec)
        .map_err(|e| anyhow!("building the SID tokenizer: {e}"))?;
    Ok(Tokenizer::new(
        inner,
        None,
        Some(BOS.into()),
        Some(EOS.into()),
        Some(PAD.into()),
    ))
}

/// The model config of a scratch decoder over `vocab` tokens.
fn model_config(cfg: &ScratchConfig, vocab: usize) -> Result<ModelConfig> {
    let v = json!({
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": vocab,
        "hidden_size": cfg.hidden, "intermediate_size": cfg.intermediate(),
        "num_hidden_layers": cfg.layers, "num_attention_heads": cfg.heads,
        "num_key_value_heads": cfg.kv_heads, "head_dim": cfg.hidden / cfg.heads,
        "rms_norm_eps": 1e-6, "rope_theta": cfg.rope_theta,
        "max_position_embeddings": cfg.max_position_embeddings,
        "tie_word_embeddings": cfg.tie_word_embeddings, "hidden_act": "silu",
        "attention_bias": false, "mlp_bias": false,
        "initializer_range": cfg.initializer_range,
        "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0, "torch_dtype": "float32",
    });
    ModelConfig::from_hf_json(&v)
}

/// Seeded N(0, std²) tensors (Box-Muller over a ChaCha8 stream).
struct Normal(ChaCha8Rng);

impl Normal {
    fn tensor(&mut self, shape: &[usize], std: f64) -> Result<Tensor> {
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n)
            .map(|_| {
                let u1: f64 = self.0.random::<f64>().max(1e-300);
                let u2: f64 = self.0.random();
                (std * (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32
            })
            .collect();
        Ok(Tensor::from_vec(v, shape, &Device::Cpu)?)
    }
}

/// A freshly initialized scratch decoder for `table` (config, weights, tokenizer), in memory.
pub fn init_model(
    table: &SidTable,
    cfg: &ScratchConfig,
) -> Result<(ModelConfig, Params, Tokenizer)> {
    cfg.validate()?;
    let tok = sid_tokenizer(table)?;
    let vocab = tok.vocab_size();
    let mc = model_config(cfg, vocab)?;
    let (h, inter, std) = (cfg.hidden, cfg.intermediate(), cfg.initializer_range);
    let kv = cfg.kv_heads * (h / cfg.heads);
    let mut rng = Normal(ChaCha8Rng::seed_from_u64(cfg.seed));
    let mut t: Vec<(String, Tensor)> = Vec::new();
    // The padding row is zero (nn.Embedding(padding_idx = pad) after HF's init).
    let emb = rng.tensor(&[vocab, h], std)?; // (V, H)
    let keep = Tensor::cat(
        &[
            Tensor::zeros((1, h), DType::F32, &Device::Cpu)?,
            emb.narrow(0, 1, vocab - 1)?,
        ],
        0,
    )?; // (V, H)
    t.push(("model.embed_tokens.weight".into(), keep));
    for i in 0..cfg.layers {
        let p = format!("model.layers.{i}");
        for (n, shape) in [
            ("self_attn.q_proj", [h, h]),
            ("self_attn.k_proj", [kv, h]),
            ("self_attn.v_proj", [kv, h]),
            ("self_attn.o_proj", [h, h]),
            ("mlp.gate_proj", [inter, h]),
            ("mlp.up_proj", [inter, h]),
            ("mlp.down_proj", [h, inter]),
        ] {
            t.push((format!("{p}.{n}.weight"), rng.tensor(&shape, std)?));
        }
        for n in ["input_layernorm", "post_attention_layernorm"] {
            t.push((
                format!("{p}.{n}.weight"),
                Tensor::ones(h, DType::F32, &Device::Cpu)?,
            ));
        }
    }
    t.push((
        "model.norm.weight".into(),
        Tensor::ones(h, DType::F32, &Device::Cpu)?,
    ));
    if !cfg.tie_word_embeddings {
        t.push(("lm_head.weight".into(), rng.tensor(&[vocab, h], std)?));
    }
    let params = Params::from_tensors(t)?;
    Ok((mc, params, tok))
}

/// Writes a fresh scratch decoder for `table` into `out` (new or empty) as an HF directory.
pub fn write_model(table: &SidTable, cfg: &ScratchConfig, out: &Path) -> Result<()> {
    if out.exists() && std::fs::read_dir(out)?.next().is_some() {
        bail!(
            "{} exists and is not empty; choose another --out",
            out.display()
        );
    }
    let (mc, params, tok) = init_model(table, cfg)?;
    let gen = json!({"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0,
        "do_sample": false});
    model::save_hf_dir(out, &mc, &params, &tok, Some(&gen))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn table() -> SidTable {
        SidTable::new(
            (0..6).map(|i| i.to_string()).collect(),
            vec![
                vec![0, 0, 0],
                vec![0, 0, 1],
                vec![0, 1, 0],
                vec![1, 0, 0],
                vec![1, 1, 1],
                vec![2, 1, 0],
            ],
            vec![3, 2, 2],
        )
        .unwrap()
    }

    #[test]
    fn tokenizer_splits_sid_strings_into_level_tokens() {
        let t = table();
        let tok = sid_tokenizer(&t).unwrap();
        assert_eq!(tok.vocab_size(), 5 + 7);
        let ids = tok
            .encode("<a_1><b_0><c_0>, <a_2><b_1><c_0>", false)
            .unwrap();
        let names: Vec<String> = ids
            .iter()
            .map(|&i| tok.inner().id_to_token(i).unwrap())
            .collect();
        assert_eq!(
            names,
            ["<a_1>", "<b_0>", "<c_0>", ",", "<a_2>", "<b_1>", "<c_0>"]
        );
        // BOS comes from the post-processor; decoding fuses SIDs back.
        let with_bos = tok.encode("<a_0><b_0><c_1>", true).unwrap();
        assert_eq!(with_bos[0], 1);
        assert_eq!(tok.decode(&with_bos[1..], false), "<a_0><b_0><c_1>");
        assert_eq!(tok.eos_ids, vec![2]);
        assert_eq!(tok.pad_id(), 0);
        // Every SID tokenizes to exactly its levels.
        for i in 0..t.len() {
            assert_eq!(tok.encode(&t.sid_string(i), false).unwrap().len(), 3);
        }
    }

    #[test]
    fn scratch_model_saves_and_loads() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("m");
        let cfg = ScratchConfig {
            layers: 2,
            hidden: 16,
            heads: 2,
            kv_heads: 1,
            seed: 3,
            ..Default::default()
        };
        write_model(&table(), &cfg, &out).unwrap();
        let m = model::load(
            &model::ModelSource::Dir(out.clone()),
            &Device::Cpu,
            DType::F32,
        )
        .unwrap();
        assert_eq!(m.config.vocab_size, 12);
        assert_eq!(m.config.num_key_value_heads, 1);
        assert_eq!(m.tokenizer.eos_ids, vec![2]);
        let emb = m
            .params
            .var("model.embed_tokens.weight")
            .unwrap()
            .as_tensor()
            .clone();
        let rows = emb.to_vec2::<f32>().unwrap();
        assert!(rows[0].iter().all(|&x| x == 0.0), "padding row is zero");
        let n = (rows.len() - 1) * 16;
        let flat: Vec<f32> = rows[1..].concat();
        let std = (flat.iter().map(|x| x * x).sum::<f32>() / n as f32).sqrt();
        assert!((std - 0.02).abs() < 0.005, "std {std}");
        // Seeded: the same seed writes the same weights; refusing a non-empty directory.
        let (_, p2, _) = init_model(&table(), &cfg).unwrap();
        let e2 = p2
            .var("model.embed_tokens.weight")
            .unwrap()
            .as_tensor()
            .to_vec2::<f32>()
            .unwrap();
        assert_eq!(rows, e2);
        assert!(write_model(&table(), &cfg, &out).is_err());
        let bad = ScratchConfig { hidden: 15, ..cfg };
        assert!(init_model(&table(), &bad).is_err());
    }
}
