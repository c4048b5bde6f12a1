//! The real SmolLM2-135M-Instruct GGUF against transformers' greedy output of the same file
//! (tests/fixtures/smollm2_greedy.json, from eval/peer/hf_greedy.py). Runs when
//! `scripts/fetch_model.sh` has put the model in models/ (CI does); skipped otherwise.

use candle_core::{DType, Device};
use llmrl::generate::{generate, SamplingConfig};
use llmrl::model::{self, Decoder, Message, Mode, ModelSource};

use crate::common::ids;

#[test]
fn smollm2_gguf_greedy_matches_transformers() {
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let gguf = root.join("models/SmolLM2-135M-Instruct/SmolLM2-135M-Instruct.Q4_1.gguf");
    if !gguf.exists() {
        eprintln!(
            "skipped: {} not present (run scripts/fetch_model.sh)",
            gguf.display()
        );
        return;
    }
    let want: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("tests/fixtures/smollm2_greedy.json")).unwrap(),
    )
    .unwrap();
    let m = model::load(&ModelSource::Gguf(gguf), &Device::Cpu, DType::F32).unwrap();
    let dec = Decoder::new(&m.config, &m.params, Mode::Infer).unwrap();
    for p in want["prompts"].as_array().unwrap() {
        let msgs: Vec<Message> = serde_json::from_value(p["messages"].clone()).unwrap();
        let text = m.tokenizer.apply_chat_template(&msgs, true).unwrap();
        assert_eq!(text, p["text"].as_str().unwrap(), "rendered chat prompt");
        let prompt = m.tokenizer.encode(&text, false).unwrap();
        assert_eq!(prompt, ids(&p["prompt_ids"]), "prompt ids");
        let new = ids(&p["new_ids"]);
        // Compare up to the first near-tie of transformers' top-2 logits (f32 noise may flip it).
        let margins: Vec<f64> = p["margins"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect();
        let upto = margins.iter().position(|&g| g < 1e-3).unwrap_or(new.len());
        // transformers generated with EOS masked (min_new_tokens), so do we: compare past the answer.
        let cfg = SamplingConfig {
            temperature: 0.0,
            max_new_tokens: new.len(),
            min_new_tokens: new.len(),
            ..Default::default()
        };
        let out = generate(
            &dec,
            &m.tokenizer,
            &[prompt],
            &[vec![0]],
            &cfg,
            &Device::Cpu,
        )
        .unwrap();
        assert!(upto >= 32, "a near-tie within the first 32 tokens");
        assert_eq!(&out[0].token_ids[..upto], &new[..upto], "greedy tokens");
        eprintln!("llmrl: {:?}", m.tokenizer.decode(&out[0].token_ids, false));
    }
}
