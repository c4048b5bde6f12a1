//! Added tokens on the tiny fixtures (and SmolLM2's GGUF when present): ids, mean rows, padding
//! rows, ties, decoding, training only the new rows, and a saved model that transformers loads
//! with the same logits (golden `tests/fixtures/added_tokens.json`, produced by
//! `tests/fixtures/check_added_tokens.py` from the directories this file writes; see there).

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use llmrl::model::{
    self, add_tokens, decoder::logits_of, gradient_coverage, ops, Decoder, LoadedModel, Mode,
    ModelSource, Positions, VocabSection,
};
use llmrl::optim::{AdamW, AdamWConfig};
use serde_json::{json, Value};

use crate::common::*;

const EMBED: &str = "model.embed_tokens.weight";
const HEAD: &str = "lm_head.weight";
const NEW: [&str; 3] = ["<a_1>", "<a_2>", "<b_7>"];

fn rows(m: &LoadedModel, name: &str) -> Vec<Vec<f32>> {
    m.params.var(name).unwrap().as_tensor().to_vec2().unwrap()
}

fn bits(r: &[f32]) -> Vec<u32> {
    r.iter().map(|x| x.to_bits()).collect()
}

/// Mean of rows `0..n`, in f64.
fn mean_of(rows: &[Vec<f32>], n: usize) -> Vec<f64> {
    let mut m = vec![0f64; rows[0].len()];
    for r in &rows[..n] {
        for (a, &x) in m.iter_mut().zip(r) {
            *a += x as f64 / n as f64;
        }
    }
    m
}

/// Gives the embedding (and an untied head) `total` rows, the extra ones distinct values, as
/// Qwen's checkpoints pad theirs beyond the tokenizer.
fn pad_rows(m: &mut LoadedModel, total: usize) {
    let mut names = vec![EMBED];
    if !m.config.tie_word_embeddings {
        names.push(HEAD);
    }
    for name in names {
        let w = m.params.var(name).unwrap().as_tensor().clone();
        let (r, h) = w.dims2().unwrap();
        let extra = Tensor::arange(0f32, ((total - r) * h) as f32, &Device::Cpu)
            .unwrap()
            .affine(0.003, -0.2)
            .unwrap()
            .reshape((total - r, h))
            .unwrap();
        m.params
            .replace(name, &Tensor::cat(&[w, extra], 0).unwrap())
            .unwrap();
    }
    m.config.vocab_size = total;
}

#[test]
fn new_ids_start_at_the_tokenizer_length_with_mean_rows() {
    for fam in FAMILIES {
        let mut m = load_fixture(fam);
        let tied = m.config.tie_word_embeddings;
        let n = m.tokenizer.vocab_size();
        let names_before = m.params.names().to_vec();
        let (e0, h0) = (rows(&m, EMBED), (!tied).then(|| rows(&m, HEAD)));
        let added = add_tokens(&mut m, &NEW).unwrap();
        assert_eq!(added.new_ids, n as u32..n as u32 + 3, "{fam}");
        assert_eq!(
            added.ids,
            NEW.iter()
                .zip(n as u32..)
                .map(|(t, i)| (t.to_string(), i))
                .collect::<Vec<_>>()
        );
        assert!(added.existing.is_empty());
        assert_eq!((added.rows_before, added.rows_after), (n, n + 3));
        assert_eq!(added.reused_padding_rows, 0);
        assert_eq!(
            (m.config.vocab_size, m.tokenizer.vocab_size()),
            (n + 3, n + 3)
        );
        // Tied stays one tensor; untied grows both.
        assert_eq!(m.params.names(), names_before.as_slice(), "{fam}");
        let mut mats = vec![(EMBED, e0)];
        mats.extend(h0.map(|h| (HEAD, h)));
        for (name, before) in mats {
            let after = rows(&m, name);
            assert_eq!(after.len(), n + 3);
            for i in 0..n {
                assert_eq!(bits(&after[i]), bits(&before[i]), "{fam} {name} row {i}");
            }
            let mean = mean_of(&before, n);
            for r in &after[n..] {
                let d = r.iter().zip(&mean).map(|(&x, y)| (x as f64 - y).abs());
                assert!(
                    d.fold(0.0, f64::max) < 1e-6,
                    "{fam} {name}: new row is not the mean"
                );
            }
        }
        // The decoder reads the new size from the config and the tensors.
        let dec = Decoder::new(&m.config, &m.params, Mode::Infer).unwrap();
        let logits = logits_of(&dec, &[5, n as u32 + 1], &Device::Cpu).unwrap();
        assert_eq!(logits.dims(), &[2, n + 3]);
    }
}

#[test]
fn adding_an_existing_token_is_a_no_op_that_reports_its_id() {
    let mut m = load_fixture("tiny_qwen2");
    let first = add_tokens(&mut m, &["<a_1>"]).unwrap();
    let e = rows(&m, EMBED);
    // A special token, a byte-level vocabulary piece, a token added before, and a repeat.
    let again = add_tokens(&mut m, &["<|im_end|>", "he", "<a_1>", "<a_1>"]).unwrap();
    let he = m.tokenizer.token_id("he").unwrap();
    let want = vec![
        ("<|im_end|>".to_string(), 2),
        ("he".to_string(), he),
        ("<a_1>".to_string(), first.new_ids.start),
    ];
    assert_eq!(
        (again.ids.clone(), again.existing.clone()),
        (want.clone(), want)
    );
    assert!(again.new_ids.is_empty());
    assert_eq!((again.rows_before, again.rows_after), (513, 513));
    assert_eq!(m.tokenizer.vocab_size(), 513);
    assert_eq!(bits(&rows(&m, EMBED).concat()), bits(&e.concat()));
    assert!(add_tokens(&mut m, &[""]).is_err());
}

#[test]
fn padding_rows_are_taken_before_the_matrix_grows() {
    for fam in ["tiny_qwen3", "tiny_qwen2"] {
        // 512 tokens, 520 rows: three new tokens fit, the last five padding rows stay as they were.
        let mut m = load_fixture(fam);
        pad_rows(&mut m, 520);
        let before = rows(&m, EMBED);
        let added = add_tokens(&mut m, &NEW).unwrap();
        assert_eq!(added.new_ids, 512..515);
        assert_eq!((added.rows_after, added.reused_padding_rows), (520, 3));
        assert_eq!(m.config.vocab_size, 520);
        let after = rows(&m, EMBED);
        assert_eq!(after.len(), 520);
        for i in (0..512).chain(515..520) {
            assert_eq!(bits(&after[i]), bits(&before[i]), "{fam} row {i}");
        }
        // The mean is over the tokenizer's rows, not the padding.
        let mean = mean_of(&before, 512);
        assert!((after[513][0] as f64 - mean[0]).abs() < 1e-6);
        // 514 tokens, 516 rows: two new tokens take the padding, four grow the matrix.
        let mut m = load_fixture(fam);
        pad_rows(&mut m, 516);
        let six = ["<c_1>", "<c_2>", "<c_3>", "<c_4>", "<c_5>", "<c_6>"];
        let added = add_tokens(&mut m, &six).unwrap();
        assert_eq!(added.new_ids, 512..518);
        assert_eq!((added.rows_after, added.reused_padding_rows), (518, 4));
        assert_eq!(rows(&m, EMBED).len(), 518);
        if fam == "tiny_qwen2" {
            assert_eq!(rows(&m, HEAD).len(), 518);
        }
    }
}

#[test]
fn decoding_keeps_added_tokens_as_text() {
    let mut m = load_fixture("tiny_qwen3");
    let added = add_tokens(&mut m, &NEW).unwrap();
    let (a1, a2, b7) = (added.ids[0].1, added.ids[1].1, added.ids[2].1);
    let text = "the answer <a_1><a_2> is<b_7>";
    let ids = m.tokenizer.encode(text, false).unwrap();
    for id in [a1, a2, b7] {
        assert!(ids.contains(&id), "{ids:?} lacks {id}");
    }
    // Non-special: kept also when special tokens are skipped (completions decode that way).
    assert_eq!(m.tokenizer.decode(&ids, true), text);
    assert_eq!(m.tokenizer.decode(&[a2, b7], true), "<a_2><b_7>");
    assert_eq!(m.tokenizer.decode(&[2, a1], true), "<a_1>");
}

/// Mean next-token NLL of `ids` through the trainable forward.
fn nll(dec: &Decoder, ids: &[u32]) -> Tensor {
    let dev = Device::Cpu;
    let t = ids.len() - 1;
    let pos = Positions::right_padded(&[t], t, &dev).unwrap();
    let x = Tensor::from_vec(ids[..t].to_vec(), (1, t), &dev).unwrap();
    let logits = dec.forward(&x, &pos, None).unwrap().squeeze(0).unwrap(); // (T, V)
    let tgt = Tensor::from_vec(ids[1..].to_vec(), t, &dev).unwrap();
    let logp = ops::logprob_stats(&logits, &tgt, 1.0).unwrap().logp;
    logp.mean_all().unwrap().neg().unwrap()
}

/// The golden cases: (name, fixture, padded rows). qwen2 has an untied head and no padding;
/// qwen3 is tied and padded to 516 rows, so of its six new tokens four take padding rows.
const CASES: [(&str, &str, usize); 2] = [
    ("qwen2_untied", "tiny_qwen2", 0),
    ("qwen3_tied_padded", "tiny_qwen3", 516),
];
const TEXT: &str = "<a_1><b_2> the answer is<a_3> 42<c_4><a_1><c_5>";

/// Adds the tokens of `TEXT` with `train_only_new_tokens`, takes three AdamW steps (weight decay
/// 0.1) on the NLL of `TEXT`, and checks everything but the new rows stayed bit-identical.
fn train_new_rows(fixture: &str, padded: usize) -> LoadedModel {
    let mut m = load_fixture(fixture);
    if padded > 0 {
        pad_rows(&mut m, padded);
    }
    let snapshot: HashMap<String, Vec<f32>> = m
        .params
        .named_vars()
        .into_iter()
        .map(|(n, v)| (n, v.as_tensor().flatten_all().unwrap().to_vec1().unwrap()))
        .collect();
    let sec: VocabSection = toml::from_str(
        "add_tokens = { list = [\"<a_1>\", \"<b_2>\", \"<a_3>\", \"<c_4>\", \"<c_5>\", \"<c_6>\"] }\n\
         train_only_new_tokens = true",
    )
    .unwrap();
    let (added, trainable) = sec.resolve(Path::new(".")).unwrap().apply(&mut m).unwrap();
    assert_eq!(added.new_ids, 512..518);
    let named = m.params.named_vars();
    let cfg = AdamWConfig {
        weight_decay: 0.1,
        ..Default::default()
    };
    let mut opt = AdamW::with_trainable(named.clone(), &trainable, cfg).unwrap();
    let tied = m.config.tie_word_embeddings;
    assert_eq!(opt.params().len(), if tied { 1 } else { 2 });
    let ids = m.tokenizer.encode(TEXT, false).unwrap();
    let dec = Decoder::new(&m.config, &m.params, Mode::Train).unwrap();
    let mut losses = vec![];
    for _ in 0..3 {
        let loss = nll(&dec, &ids);
        losses.push(loss.to_scalar::<f32>().unwrap());
        let mut grads = loss.backward().unwrap();
        // The coverage check sees only the new rows; the rest is reported frozen.
        let cov = gradient_coverage(&named, &trainable, &grads).unwrap();
        assert!(cov.problems.is_empty(), "{:?}", cov.problems);
        assert_eq!(cov.frozen.len(), named.len() - opt.params().len());
        opt.clip_grad_norm(&mut grads, 1.0).unwrap();
        opt.step(&grads, 0.05).unwrap();
    }
    assert!(losses[2] < losses[0], "{fixture}: loss {losses:?}");
    for (name, var) in &named {
        let now: Vec<f32> = var.as_tensor().flatten_all().unwrap().to_vec1().unwrap();
        let before = &snapshot[name];
        if name == EMBED || name == HEAD {
            let h = m.config.hidden_size;
            let old = 512 * h;
            assert_eq!(
                bits(&now[..old]),
                bits(&before[..old]),
                "{fixture} {name} old rows"
            );
            // The new rows all started at the mean; training set them apart.
            assert_ne!(
                now[old..old + h],
                now[old + h..old + 2 * h],
                "{fixture}: trained"
            );
        } else {
            assert_eq!(bits(&now), bits(before), "{fixture} {name} is frozen");
        }
    }
    m
}

fn golden() -> Value {
    let p = fixture_dir("added_tokens.json");
    let s = std::fs::read_to_string(&p).unwrap_or_else(|_| {
        panic!(
            "{} missing; run LLMRL_ADDED_TOKENS_OUT=/tmp/added cargo test --release --test \
             integration vocab:: then python tests/fixtures/check_added_tokens.py /tmp/added \
             --write-golden",
            p.display()
        )
    });
    serde_json::from_str(&s).unwrap()
}

#[test]
fn trained_new_rows_save_and_load_in_transformers_with_the_same_logits() {
    let out_root = std::env::var_os("LLMRL_ADDED_TOKENS_OUT").map(std::path::PathBuf::from);
    let tmp = tempfile::tempdir().unwrap();
    let mut results = vec![];
    for (case, fixture, padded) in CASES {
        let m = train_new_rows(fixture, padded);
        let dir = out_root.as_deref().unwrap_or(tmp.path()).join(case);
        if dir.exists() {
            std::fs::remove_dir_all(&dir).unwrap();
        }
        model::save_hf_dir(
            &dir,
            &m.config,
            &m.params,
            &m.tokenizer,
            m.generation_config.as_ref(),
        )
        .unwrap();
        let ids = m.tokenizer.encode(TEXT, false).unwrap();
        let dec = Decoder::new(&m.config, &m.params, Mode::Infer).unwrap();
        let ours: Vec<Vec<f32>> = logits_of(&dec, &ids, &Device::Cpu)
            .unwrap()
            .to_vec2()
            .unwrap();

        // Round trip in llmrl: the same tokenizer and logits, bit for bit (f32 on disk).
        let back = model::load(&ModelSource::Dir(dir.clone()), &Device::Cpu, DType::F32).unwrap();
        assert_eq!(back.config.vocab_size, m.config.vocab_size);
        assert_eq!(back.tokenizer.vocab_size(), 518);
        assert_eq!(back.tokenizer.encode(TEXT, false).unwrap(), ids);
        assert_eq!(back.tokenizer.decode(&ids, true), TEXT);
        let dec2 = Decoder::new(&back.config, &back.params, Mode::Infer).unwrap();
        let again: Vec<Vec<f32>> = logits_of(&dec2, &ids, &Device::Cpu)
            .unwrap()
            .to_vec2()
            .unwrap();
        assert_eq!(
            bits(&again.concat()),
            bits(&ours.concat()),
            "{case}: round trip"
        );

        // What the script compares transformers against.
        let note = json!({
            "text": TEXT,
            "input_ids": ids,
            "new_tokens": ["<a_1>", "<b_2>", "<a_3>", "<c_4>", "<c_5>", "<c_6>"],
            "new_ids": (512..518).collect::<Vec<u32>>(),
            "decoded": m.tokenizer.decode(&ids, true),
            "vocab_size": m.config.vocab_size,
            "logits": ours,
        });
        std::fs::write(dir.join("llmrl_added_tokens.json"), note.to_string()).unwrap();
        results.push((case, ids, ours, m.config.vocab_size));
    }
    // transformers on the same directories (golden from check_added_tokens.py); read after all
    // directories are written, so a missing golden can be produced from them.
    let golden = golden();
    for (case, ids, ours, vocab_size) in results {
        let g = &golden["cases"][case];
        assert_eq!(
            ids,
            crate::common::ids(&g["input_ids"]),
            "{case}: tokenization"
        );
        assert_eq!(
            g["decoded"].as_str().unwrap(),
            TEXT,
            "{case}: transformers decode"
        );
        assert_eq!(g["vocab_size"].as_u64().unwrap() as usize, vocab_size);
        assert_eq!(g["len_tokenizer"].as_u64().unwrap(), 518);
        let want = g["logits"].as_array().unwrap();
        for (t, (row, w)) in ours.iter().zip(want).enumerate() {
            let w: Vec<f32> = w
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap() as f32)
                .collect();
            assert_eq!(w.len(), row.len());
            let d = row
                .iter()
                .zip(&w)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f32::max);
            assert!(
                d <= 1e-4,
                "{case} position {t}: max |Δlogit| vs transformers = {d}"
            );
        }
    }
}

#[test]
fn added_tokens_on_the_smollm2_gguf() {
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let gguf = root.join("models/SmolLM2-135M-Instruct/SmolLM2-135M-Instruct.Q4_1.gguf");
    if !gguf.exists() {
        eprintln!(
            "skipped: {} not present (run scripts/fetch_model.sh)",
            gguf.display()
        );
        return;
    }
    let mut m = model::load(&ModelSource::Gguf(gguf), &Device::Cpu, DType::F32).unwrap();
    let n = m.tokenizer.vocab_size();
    assert_eq!(n, 49152);
    let added = add_tokens(&mut m, &NEW).unwrap();
    assert_eq!(added.new_ids, 49152..49155);
    assert_eq!((added.rows_after, m.config.vocab_size), (49155, 49155));
    let text = "Items: <a_1><a_2> and<b_7>";
    let ids = m.tokenizer.encode(text, false).unwrap();
    assert!(ids.contains(&49152) && ids.contains(&49154), "{ids:?}");
    assert_eq!(m.tokenizer.decode(&ids, true), text);

    let dir = std::env::var_os("LLMRL_ADDED_TOKENS_OUT")
        .map(|d| std::path::PathBuf::from(d).join("smollm2_gguf"));
    let tmp = tempfile::tempdir().unwrap();
    let dir = dir.unwrap_or_else(|| tmp.path().join("m"));
    if dir.exists() {
        std::fs::remove_dir_all(&dir).unwrap();
    }
    model::save_hf_dir(
        &dir,
        &m.config,
        &m.params,
        &m.tokenizer,
        m.generation_config.as_ref(),
    )
    .unwrap();
    let dec = Decoder::new(&m.config, &m.params, Mode::Infer).unwrap();
    let ours: Vec<Vec<f32>> = logits_of(&dec, &ids, &Device::Cpu)
        .unwrap()
        .to_vec2()
        .unwrap();
    drop(dec);
    drop(m);
    let back = model::load(&ModelSource::Dir(dir.clone()), &Device::Cpu, DType::F32).unwrap();
    assert_eq!(back.tokenizer.encode(text, false).unwrap(), ids);
    assert_eq!(back.tokenizer.decode(&ids, true), text);
    let dec = Decoder::new(&back.config, &back.params, Mode::Infer).unwrap();
    let again: Vec<Vec<f32>> = logits_of(&dec, &ids, &Device::Cpu)
        .unwrap()
        .to_vec2()
        .unwrap();
    assert_eq!(bits(&again.concat()), bits(&ours.concat()));
    let note = json!({
        "text": text,
        "input_ids": ids,
        "new_tokens": NEW,
        "new_ids": [49152, 49153, 49154],
        "decoded": text,
        "vocab_size": 49155,
        "logits": ours,
    });
    std::fs::write(dir.join("llmrl_added_tokens.json"), note.to_string()).unwrap();
}
