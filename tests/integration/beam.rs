//! Beam search against HF transformers' golden output, against greedy decoding, and under random
//! constraints.

use candle_core::Device;
use llmrl::generate::beam::{beam_search, BeamConfig, BeamResult, EarlyStopping};
use llmrl::generate::{
    generate_constrained, Allowed, Constraint, Finish, SamplingConfig, TrieConstraint,
};
use llmrl::model::{Decoder, LoadedModel, Mode};
use proptest::prelude::*;
use serde_json::Value;

use crate::common::*;

fn beams(
    m: &LoadedModel,
    prompts: &[Vec<u32>],
    cfg: &BeamConfig,
    c: Option<&dyn Constraint>,
) -> Vec<BeamResult> {
    let dec = Decoder::new(&m.config, &m.params, Mode::Infer).unwrap();
    beam_search(&dec, &m.tokenizer, prompts, cfg, c, &Device::Cpu).unwrap()
}

fn golden() -> Value {
    let path = fixture_dir("beam_golden.json");
    serde_json::from_str(&std::fs::read_to_string(path).expect("beam_golden.json")).unwrap()
}

fn golden_trie(g: &Value) -> TrieConstraint {
    let seqs: Vec<Vec<u32>> = g["trie"].as_array().unwrap().iter().map(ids).collect();
    TrieConstraint::new(&seqs, &[g["eos"].as_u64().unwrap() as u32])
}

/// tests/fixtures/make_beam_golden.py: the same prompts, trie and settings through
/// transformers' generate(num_beams=B, num_return_sequences=B, prefix_allowed_tokens_fn=...).
#[test]
fn beam_search_equals_transformers() {
    let g = golden();
    let trie = golden_trie(&g);
    for case in g["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let m = load_fixture(case["fixture"].as_str().unwrap());
        assert_eq!(m.tokenizer.eos_ids, vec![g["eos"].as_u64().unwrap() as u32]);
        let prompts: Vec<Vec<u32>> = case["prompts"]
            .as_array()
            .unwrap()
            .iter()
            .map(ids)
            .collect();
        let cfg = BeamConfig {
            num_beams: case["num_beams"].as_u64().unwrap() as usize,
            max_new_tokens: case["max_new_tokens"].as_u64().unwrap() as usize,
            length_penalty: case["length_penalty"].as_f64().unwrap(),
            early_stopping: match &case["early_stopping"] {
                Value::Bool(false) => EarlyStopping::Heuristic,
                Value::Bool(true) => EarlyStopping::AllFinished,
                _ => EarlyStopping::Never,
            },
        };
        let c: Option<&dyn Constraint> = case["constrained"]
            .as_bool()
            .unwrap()
            .then_some(&trie as &dyn Constraint);
        let out = beams(&m, &prompts, &cfg, c);
        for (p, want) in case["beams"].as_array().unwrap().iter().enumerate() {
            let want = want.as_array().unwrap();
            let got = &out[p].beams;
            assert_eq!(got.len(), want.len(), "{name} prompt {p}");
            for (j, (b, w)) in got.iter().zip(want).enumerate() {
                assert_eq!(b.token_ids, ids(&w["ids"]), "{name} prompt {p} beam {j}");
                let ws = w["score"].as_f64().unwrap() as f32;
                assert!(
                    (b.score - ws).abs() < 1e-4,
                    "{name} prompt {p} beam {j}: score {} vs HF {ws}",
                    b.score
                );
            }
        }
    }
}

#[test]
fn one_beam_is_greedy() {
    let g = golden();
    let trie = golden_trie(&g);
    let prompts = vec![vec![1u32, 72, 101, 108], vec![5, 9], vec![42]];
    for fam in ["tiny_llama", "tiny_qwen3"] {
        let m = load_fixture(fam);
        let dec = Decoder::new(&m.config, &m.params, Mode::Infer).unwrap();
        for (c, max) in [(None, 9), (Some(&trie as &dyn Constraint), 5)] {
            let cfg = BeamConfig {
                num_beams: 1,
                max_new_tokens: max,
                ..Default::default()
            };
            let out = beams(&m, &prompts, &cfg, c);
            let greedy = SamplingConfig {
                temperature: 0.0,
                max_new_tokens: max,
                ..Default::default()
            };
            let seeds = vec![vec![0]; prompts.len()];
            let gen = generate_constrained(
                &dec,
                &m.tokenizer,
                &prompts,
                &seeds,
                &greedy,
                c,
                &Device::Cpu,
            )
            .unwrap();
            for (r, s) in out.iter().zip(&gen) {
                let b = &r.beams[0];
                assert_eq!(r.beams.len(), 1);
                assert_eq!(b.token_ids, s.token_ids, "{fam} prompt {}", r.prompt_index);
                assert_eq!(b.finish_reason, s.finish_reason);
                // The sampler reports the constrained (renormalized) log-prob.
                for (x, y) in b.constrained_logprobs.iter().zip(&s.logprobs) {
                    assert!((x - y).abs() < 1e-5, "{x} vs {y}");
                }
                let sum: f32 = b.logprobs.iter().sum();
                assert!((b.sum_logprob - sum).abs() < 1e-4);
                let len = b.token_ids.len() as f32;
                assert!((b.score - sum / len).abs() < 1e-4);
            }
        }
    }
}

/// A constraint that allows nothing: beam search ends the prompt with one empty beam.
struct Nothing;
impl Constraint for Nothing {
    fn allowed(&self, _: usize, _: &[u32]) -> Allowed<'_> {
        Allowed::nothing()
    }
}

#[test]
fn nothing_allowed_ends_beams_with_the_constrained_reason() {
    let m = load_fixture("tiny_llama");
    let cfg = BeamConfig {
        num_beams: 3,
        max_new_tokens: 6,
        ..Default::default()
    };
    let out = beams(&m, &[vec![5, 9], vec![1]], &cfg, Some(&Nothing));
    for r in &out {
        assert_eq!(r.beams.len(), 1);
        assert_eq!(r.beams[0].finish_reason, Finish::Constrained);
        assert!(r.beams[0].token_ids.is_empty());
    }
    // A trie without end tokens: every beam stops after its sequence, for want of a next token.
    let seqs = vec![
        vec![10, 11, 12],
        vec![10, 13, 14],
        vec![20, 21, 22],
        vec![30, 31, 32],
    ];
    let trie = TrieConstraint::new(&seqs, &[]);
    let out = beams(&m, &[vec![5, 9]], &cfg, Some(&trie));
    assert_eq!(out[0].beams.len(), 3);
    for b in &out[0].beams {
        assert_eq!(b.finish_reason, Finish::Constrained);
        assert!(seqs.contains(&b.token_ids), "{:?}", b.token_ids);
    }
}

/// Random tries over a small id range (so prefixes are shared and some sequences are prefixes of
/// others), with the EOS id as the end token.
fn random_trie(seed: u64, n: usize) -> (Vec<Vec<u32>>, TrieConstraint) {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let seqs: Vec<Vec<u32>> = (0..n)
        .map(|_| {
            let len = rng.random_range(1..=4);
            (0..len).map(|_| rng.random_range(3..12u32)).collect()
        })
        .collect();
    let trie = TrieConstraint::new(&seqs, &[2]);
    (seqs, trie)
}

fn obeys(c: &dyn Constraint, prompt: usize, ids: &[u32]) -> bool {
    (0..ids.len()).all(|t| c.allowed(prompt, &ids[..t]).contains(ids[t]))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 10, .. ProptestConfig::default() })]

    #[test]
    fn no_constraint_is_ever_violated(
        seed in 0u64..10_000,
        n_seqs in 1usize..12,
        num_beams in 1usize..6,
        lp in prop_oneof![Just(1.0), Just(0.0), Just(2.0)],
        temp in prop_oneof![Just(0.0), Just(0.7), Just(1.5)],
        top_p in prop_oneof![Just(1.0), Just(0.8)],
        min_new in 0usize..3,
    ) {
        let m = load_fixture("tiny_qwen2");
        let (seqs, trie) = random_trie(seed, n_seqs);
        let prompts = vec![vec![1u32, 7, 8], vec![300], vec![9, 9, 9, 9, 9]];
        let cfg = BeamConfig { num_beams, max_new_tokens: 6, length_penalty: lp, ..Default::default() };
        for r in beams(&m, &prompts, &cfg, Some(&trie)) {
            prop_assert!(!r.beams.is_empty() && r.beams.len() <= num_beams);
            let mut distinct = std::collections::BTreeSet::new();
            for (j, b) in r.beams.iter().enumerate() {
                prop_assert!(obeys(&trie, r.prompt_index, &b.token_ids), "{:?}", b.token_ids);
                prop_assert!(distinct.insert(b.token_ids.clone()), "duplicate beam");
                if j > 0 { prop_assert!(b.score <= r.beams[j - 1].score); }
                if b.finish_reason == Finish::Eos {
                    let body = &b.token_ids[..b.token_ids.len() - 1];
                    prop_assert!(seqs.iter().any(|s| s.as_slice() == body));
                }
            }
        }
        let dec = Decoder::new(&m.config, &m.params, Mode::Infer).unwrap();
        let scfg = SamplingConfig {
            temperature: temp, top_p, max_new_tokens: 6, min_new_tokens: min_new,
            ..Default::default()
        };
        let seeds: Vec<Vec<u64>> = (0..prompts.len()).map(|p| vec![seed + p as u64, seed + 99]).collect();
        let out = generate_constrained(
            &dec, &m.tokenizer, &prompts, &seeds, &scfg, Some(&trie), &Device::Cpu,
        ).unwrap();
        for c in &out {
            prop_assert!(obeys(&trie, c.prompt_index, &c.token_ids), "{:?}", c.token_ids);
            let eos_at = c.token_ids.iter().position(|&t| t == 2);
            prop_assert!(eos_at.is_none_or(|i| i >= min_new), "EOS before min_new_tokens");
            prop_assert!(c.mean_logprobs.iter().all(|x| x.is_finite()));
            prop_assert_eq!(c.token_ids.len(), c.logprobs.len());
        }
    }
}

#[test]
fn cli_generate_with_beams_prints_them_best_first() {
    let model = fixture_dir("tiny_llama");
    let run = |extra: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_llmrl"))
            .args([
                "generate",
                "--model",
                model.to_str().unwrap(),
                "--prompt",
                "Hello",
            ])
            .args(["--max-new-tokens", "4", "--json"])
            .args(extra)
            .output()
            .unwrap()
    };
    let out = run(&["--num-beams", "3", "--length-penalty", "0.5"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    for w in lines.windows(2) {
        assert!(w[0]["score"].as_f64().unwrap() >= w[1]["score"].as_f64().unwrap());
    }
    // Sampling options do not mix with beam search: one clear message, no panic.
    let out = run(&["--num-beams", "3", "--temperature", "0.7"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("--num-beams") && !err.contains("panicked"));
}
