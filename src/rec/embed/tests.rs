//! The encoder pipeline on a tiny random BERT written here (word-piece tokenizer, 1 layer,
//! hidden 8): batching, padding, truncation, and the cache. Parity with sentence-transformers on
//! the real all-MiniLM-L6-v2 is tests/integration/minilm.rs.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device};
use candle_nn::{VarBuilder, VarMap};
use candle_transformers::models::bert::{BertModel, Config};
use serde_json::json;

use super::minilm::{EncoderFiles, SentenceEncoder};
use super::*;
use crate::progress::{Recorder, Silent};

const WORDS: [&str; 12] = [
    "toy", "story", "a", "b", "c", "cafe", "dog", "fox", "the", "##s", "year", "1995",
];

/// A BERT directory shaped like all-MiniLM-L6-v2's, tiny. Its tokenizer.json carries MiniLM's
/// own truncation (128) and fixed padding (128), which the encoder must override.
fn tiny_bert(dir: &Path, max_seq_length: usize) {
    std::fs::create_dir_all(dir.join("1_Pooling")).unwrap();
    let specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"];
    let vocab: serde_json::Map<String, serde_json::Value> = specials
        .iter()
        .chain(WORDS.iter())
        .enumerate()
        .map(|(i, w)| (w.to_string(), json!(i)))
        .collect();
    let added: Vec<_> = specials
        .iter()
        .enumerate()
        .map(|(i, s)| {
            json!({"id": i, "content": s, "single_word": false, "lstrip": false,
                   "rstrip": false, "normalized": false, "special": true})
        })
        .collect();
    let cls_sep = |t: u32| {
        json!([{"SpecialToken": {"id": "[CLS]", "type_id": 0}},
               {"Sequence": {"id": "A", "type_id": 0}},
               {"SpecialToken": {"id": "[SEP]", "type_id": t}}])
    };
    let tok = json!({
        "version": "1.0",
        "truncation": {"direction": "Right", "max_length": 128, "strategy": "LongestFirst", "stride": 0},
        "padding": {"strategy": {"Fixed": 128}, "direction": "Right", "pad_to_multiple_of": null,
                    "pad_id": 0, "pad_type_id": 0, "pad_token": "[PAD]"},
        "added_tokens": added,
        "normalizer": {"type": "BertNormalizer", "clean_text": true, "handle_chinese_chars": true,
                       "strip_accents": null, "lowercase": true},
        "pre_tokenizer": {"type": "BertPreTokenizer"},
        "post_processor": {"type": "TemplateProcessing", "single": cls_sep(0), "pair": cls_sep(0),
            "special_tokens": {"[CLS]": {"id": "[CLS]", "ids": [2], "tokens": ["[CLS]"]},
                               "[SEP]": {"id": "[SEP]", "ids": [3], "tokens": ["[SEP]"]}}},
        "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": true},
        "model": {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##",
                  "max_input_chars_per_word": 100, "vocab": vocab},
    });
    std::fs::write(dir.join("tokenizer.json"), tok.to_string()).unwrap();
    let config = json!({
        "architectures": ["BertModel"], "hidden_act": "gelu", "hidden_size": 8,
        "intermediate_size": 16, "num_attention_heads": 2, "num_hidden_layers": 1,
        "max_position_embeddings": 16, "type_vocab_size": 2, "vocab_size": 17,
        "layer_norm_eps": 1e-12, "pad_token_id": 0, "model_type": "bert",
        "hidden_dropout_prob": 0.1, "initializer_range": 0.02, "position_embedding_type": "absolute",
    });
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    std::fs::write(
        dir.join("sentence_bert_config.json"),
        json!({"max_seq_length": max_seq_length, "do_lower_case": false}).to_string(),
    )
    .unwrap();
    std::fs::write(
        dir.join("1_Pooling/config.json"),
        json!({"word_embedding_dimension": 8, "pooling_mode_mean_tokens": true}).to_string(),
    )
    .unwrap();
    let cfg: Config = serde_json::from_value(config).unwrap();
    let vm = VarMap::new();
    let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
    BertModel::load(vb, &cfg).unwrap();
    vm.save(dir.join("model.safetensors")).unwrap();
}

fn texts(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn rows_are_unit_norm_in_order_and_batching_changes_nothing() {
    let d = tempfile::tempdir().unwrap();
    tiny_bert(d.path(), 256);
    let files = EncoderFiles::locate(d.path()).unwrap();
    assert_eq!(files.max_seq_length, 256);
    let enc = SentenceEncoder::load(&files, &Device::Cpu).unwrap();
    assert_eq!(enc.dim, 8);
    let t = texts(&[
        "Toy Story; year: 1995",
        "",
        "the fox",
        "Café dogs, the the the fox fox toy story a b c",
        "zebra",
    ]);
    let one = enc.encode(&t, 1, &Silent).unwrap();
    let all = enc.encode(&t, 5, &Silent).unwrap();
    let two = enc.encode(&t, 2, &Silent).unwrap();
    // Padding to a batch's longest text leaves every row as it is alone (up to rounding).
    assert!(
        max_abs_diff(&one, &all) < 1e-6,
        "{}",
        max_abs_diff(&one, &all)
    );
    assert!(max_abs_diff(&one, &two) < 1e-6);
    for row in one.chunks(8) {
        let n: f32 = row.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((n - 1.0).abs() < 1e-5, "norm {n}");
    }
    // Rows follow the input: reversing the texts reverses the rows.
    let rev: Vec<String> = t.iter().rev().cloned().collect();
    let back = enc.encode(&rev, 2, &Silent).unwrap();
    for (i, row) in back.chunks(8).enumerate() {
        let j = t.len() - 1 - i;
        assert!(max_abs_diff(row, &one[j * 8..(j + 1) * 8]) < 1e-6);
    }
    // Distinct texts, distinct embeddings.
    assert!(max_abs_diff(&one[..8], &one[16..24]) > 1e-3);
}

#[test]
fn truncation_follows_max_seq_length_not_the_tokenizer_json() {
    let d = tempfile::tempdir().unwrap();
    tiny_bert(d.path(), 6);
    let enc =
        SentenceEncoder::load(&EncoderFiles::locate(d.path()).unwrap(), &Device::Cpu).unwrap();
    let ids = enc
        .tokenize(&texts(&["the fox", "toy story a b c dog fox", "Toys"]))
        .unwrap();
    // [CLS] the fox [SEP]: no padding to 128; 6 pieces at most, [SEP] kept; "toys" = toy ##s.
    assert_eq!(ids[0], [2, 13, 12, 3]);
    assert_eq!(ids[1], [2, 5, 6, 7, 8, 3]);
    assert_eq!(ids[2], [2, 5, 14, 3]);
    // Truncated texts agree on their kept prefix: the same embedding as the prefix alone.
    let e = enc
        .encode(
            &texts(&["toy story a b c dog", "toy story a b"]),
            2,
            &Silent,
        )
        .unwrap();
    assert!(max_abs_diff(&e[..8], &e[8..]) < 1e-6);
}

#[test]
fn the_cache_answers_a_rerun_without_the_model() {
    let d = tempfile::tempdir().unwrap();
    let model = d.path().join("model");
    tiny_bert(&model, 256);
    let files = EncoderFiles::locate(&model).unwrap();
    let opts = EmbedOptions {
        batch_size: 2,
        cache_dir: Some(d.path().join("cache")),
        device: Device::Cpu,
    };
    let t = texts(&["toy story", "the dog", "fox"]);
    let r1 = Recorder::default();
    let first = embed_texts(&files, &t, &opts, &r1).unwrap();
    let CacheUse::Miss(path) = &first.cache else {
        panic!("{:?}", first.cache)
    };
    assert!(path.is_file());
    assert!(r1.lines().iter().any(|l| l == "begin embed 0/3"));
    assert_eq!(first.encoder_sha256, files.fingerprint().unwrap());

    let r2 = Recorder::default();
    let again = embed_texts(&files, &t, &opts, &r2).unwrap();
    assert_eq!(again.cache, CacheUse::Hit(path.clone()));
    assert_eq!(again.data, first.data, "bit for bit");
    assert!(
        r2.lines().is_empty(),
        "the model never ran: {:?}",
        r2.lines()
    );

    // Another text, or another model file: another key.
    let other = embed_texts(&files, &texts(&["toy story", "the dog"]), &opts, &Silent).unwrap();
    assert!(matches!(other.cache, CacheUse::Miss(ref p) if p != path));
    assert_eq!(other.data[..16], first.data[..16]);
    let cfg = std::fs::read_to_string(model.join("config.json")).unwrap();
    std::fs::write(model.join("config.json"), format!("{cfg}\n")).unwrap();
    let changed = embed_texts(&files, &t, &opts, &Silent).unwrap();
    assert!(matches!(changed.cache, CacheUse::Miss(ref p) if p != path));

    // A damaged cache file is recomputed, with a word to the user.
    std::fs::write(path, "garbage").unwrap();
    std::fs::write(model.join("config.json"), cfg).unwrap();
    let r3 = Recorder::default();
    let redone = embed_texts(&files, &t, &opts, &r3).unwrap();
    assert_eq!(redone.cache, CacheUse::Miss(path.clone()));
    assert!(
        r3.lines()[0].starts_with("message ignoring cache file"),
        "{:?}",
        r3.lines()
    );
    assert!(max_abs_diff(&redone.data, &first.data) < 1e-6);

    let off = EmbedOptions {
        cache_dir: None,
        ..opts
    };
    assert_eq!(
        embed_texts(&files, &t, &off, &Silent).unwrap().cache,
        CacheUse::Off
    );
}

#[test]
fn a_missing_or_foreign_model_directory_says_what_to_do() {
    let d = tempfile::tempdir().unwrap();
    let e = format!(
        "{:#}",
        EncoderFiles::locate(&d.path().join("nope")).unwrap_err()
    );
    assert!(
        e.contains("does not exist") && e.contains("scripts/fetch_minilm.sh"),
        "{e}"
    );
    tiny_bert(d.path(), 256);
    std::fs::remove_file(d.path().join("model.safetensors")).unwrap();
    let e = format!("{:#}", EncoderFiles::locate(d.path()).unwrap_err());
    assert!(e.contains("model.safetensors is missing"), "{e}");
    tiny_bert(d.path(), 256);
    std::fs::write(
        d.path().join("1_Pooling/config.json"),
        json!({"pooling_mode_cls_token": true}).to_string(),
    )
    .unwrap();
    let e = format!("{:#}", EncoderFiles::locate(d.path()).unwrap_err());
    assert!(e.contains("only mean pooling"), "{e}");
}

#[test]
fn the_key_changes_with_any_text_the_order_or_the_encoder() {
    let k = cache_key("enc", &texts(&["a", "b"]));
    assert_eq!(k, cache_key("enc", &texts(&["a", "b"])));
    assert_eq!(k.len(), 64);
    for other in [
        cache_key("enc", &texts(&["b", "a"])),
        cache_key("enc", &texts(&["ab"])),
        cache_key("enc", &texts(&["a", "b", ""])),
        cache_key("enc2", &texts(&["a", "b"])),
    ] {
        assert_ne!(k, other);
    }
}

#[test]
fn item_embeddings_round_trip_with_ids_in_row_order() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("sub/e.safetensors");
    let e = ItemEmbeddings {
        ids: texts(&["10", "2", "x y"]),
        data: (0..6).map(|i| i as f32 * 0.5).collect(),
        dim: 2,
        metadata: HashMap::from([("producer".into(), PRODUCER.into())]),
    };
    write_item_embeddings(&p, &e).unwrap();
    let back = read_item_embeddings(&p).unwrap();
    assert_eq!(back, e);
    assert_eq!(back.row(1), [1.0, 1.5]);
    assert!(written_by_us(&p));
    // The raw contract: tensor name, dtype, shape, and the ids as a JSON array.
    let bytes = std::fs::read(&p).unwrap();
    let (_, h) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let m = h.metadata().clone().unwrap();
    assert_eq!(m["item_ids"], r#"["10","2","x y"]"#);
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let t = st.tensor("embeddings").unwrap();
    assert_eq!(
        (t.shape(), t.dtype()),
        (&[3, 2][..], safetensors::Dtype::F32)
    );
}

#[test]
fn a_foreign_file_is_not_ours_and_bad_files_say_why() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("notes.safetensors");
    std::fs::write(&p, "my notes").unwrap();
    assert!(!written_by_us(&p));
    assert!(read_item_embeddings(&p).is_err());
    let q = d.path().join("noids.safetensors");
    write_matrix(&q, &[1.0, 2.0], [1, 2], HashMap::new()).unwrap();
    assert!(!written_by_us(&q));
    let e = format!("{:#}", read_item_embeddings(&q).unwrap_err());
    assert!(e.contains("no `item_ids`"), "{e}");
}
