//! all-MiniLM-L6-v2 in candle against sentence-transformers (tests/fixtures/minilm/golden.json,
//! from make_minilm_golden.py there), and `llmrl rec embed` through the real binary. Needs the
//! weights from `scripts/fetch_minilm.sh` in models/; skipped without them, unless
//! `LLMRL_REQUIRE_MODELS=1` (CI sets it), which turns a missing model into a failure.

use std::path::PathBuf;
use std::process::Command;

use candle_core::Device;
use llmrl::progress::Silent;
use llmrl::rec::embed::minilm::{EncoderFiles, SentenceEncoder};
use llmrl::rec::embed::read_item_embeddings;

/// Largest |candle − sentence-transformers| allowed on any component of a unit-norm embedding
/// (both f32 on CPU; measured 3.3e-7 when written).
const TOLERANCE: f32 = 1e-5;

/// The model directory, or `None` (after saying so) when it is absent and not required.
fn model_dir() -> Option<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models/all-MiniLM-L6-v2");
    if dir.join("model.safetensors").is_file() {
        return Some(dir);
    }
    assert!(
        std::env::var("LLMRL_REQUIRE_MODELS").as_deref() != Ok("1"),
        "{} is missing and LLMRL_REQUIRE_MODELS=1; run scripts/fetch_minilm.sh",
        dir.display()
    );
    eprintln!(
        "skipped: {} not present (run scripts/fetch_minilm.sh)",
        dir.display()
    );
    None
}

#[test]
fn minilm_embeddings_match_sentence_transformers() {
    let Some(dir) = model_dir() else { return };
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let golden: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("tests/fixtures/minilm/golden.json")).unwrap(),
    )
    .unwrap();
    let texts: Vec<String> = serde_json::from_value(golden["sentences"].clone()).unwrap();
    let n_tokens: Vec<usize> = serde_json::from_value(golden["n_tokens"].clone()).unwrap();
    let want: Vec<Vec<f32>> = serde_json::from_value(golden["embeddings"].clone()).unwrap();

    let files = EncoderFiles::locate(&dir).unwrap();
    assert_eq!(files.max_seq_length, 256);
    let enc = SentenceEncoder::load(&files, &Device::Cpu).unwrap();
    assert_eq!(enc.dim, 384);
    let ids = enc.tokenize(&texts).unwrap();
    let got_tokens: Vec<usize> = ids.iter().map(Vec::len).collect();
    assert_eq!(
        got_tokens, n_tokens,
        "word pieces per text (the long one truncated to 256)"
    );

    // Batch 4: the long text pads nothing, the short ones share a padded batch.
    for batch in [4, 1] {
        let got = enc.encode(&texts, batch, &Silent).unwrap();
        let mut worst = 0f32;
        for (i, w) in want.iter().enumerate() {
            for (g, w) in got[i * 384..(i + 1) * 384].iter().zip(w) {
                worst = worst.max((g - w).abs());
            }
        }
        eprintln!("batch {batch}: max |candle - sentence-transformers| = {worst:.2e}");
        assert!(worst <= TOLERANCE, "batch {batch}: max abs diff {worst:e}");
    }
}

#[test]
fn rec_embed_writes_ids_in_row_order_and_reruns_from_the_cache() {
    let Some(dir) = model_dir() else { return };
    let d = tempfile::tempdir().unwrap();
    let items = d.path().join("tiny.item");
    std::fs::write(
        &items,
        "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n\
         7\tToy Story\t1995\tAnimation Children's Comedy\n\
         3\tGoldenEye\t1995\tAction Adventure Thriller\n\
         12\tCafé Müller\t\t\n",
    )
    .unwrap();
    let out = d.path().join("emb.safetensors");
    let run = || {
        let res = Command::new(env!("CARGO_BIN_EXE_llmrl"))
            .args(["rec", "embed", "--items"])
            .arg(&items)
            .arg("--model")
            .arg(&dir)
            .args(["--batch-size", "2", "--out"])
            .arg(&out)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&res.stderr).into_owned();
        assert!(res.status.success(), "{err}");
        err
    };
    let first = run();
    assert!(first.contains("computed, cached in"), "{first}");
    let e = read_item_embeddings(&out).unwrap();
    assert_eq!(e.ids, ["7", "3", "12"]);
    assert_eq!((e.data.len(), e.dim), (3 * 384, 384));
    assert_eq!(e.metadata["producer"], "llmrl rec embed");
    assert!(d.path().join("embed_cache").is_dir());
    // The same catalogue again: from the cache, same bytes; our own output may be replaced.
    let second = run();
    assert!(second.contains("from the cache"), "{second}");
    assert_eq!(read_item_embeddings(&out).unwrap(), e);
    // A file someone else wrote is never overwritten.
    let notes = d.path().join("notes.safetensors");
    std::fs::write(&notes, "mine").unwrap();
    let res = Command::new(env!("CARGO_BIN_EXE_llmrl"))
        .args(["rec", "embed", "--items"])
        .arg(&items)
        .arg("--model")
        .arg(&dir)
        .arg("--out")
        .arg(&notes)
        .output()
        .unwrap();
    assert!(!res.status.success());
    assert!(String::from_utf8_lossy(&res.stderr).contains("not written by `llmrl rec embed`"));
    assert_eq!(std::fs::read_to_string(&notes).unwrap(), "mine");
}
