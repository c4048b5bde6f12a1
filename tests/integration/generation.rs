//! Generation properties on a tiny random model.

use candle_core::{Device, Tensor};
use llmrl::generate::{generate, sample_seed, Completion, Finish, SamplingConfig};
use llmrl::model::{decoder::logits_of, Decoder, LoadedModel, Mode};
use proptest::prelude::*;

use crate::common::*;

fn run(
    m: &LoadedModel,
    prompts: &[Vec<u32>],
    n: usize,
    base: u64,
    cfg: &SamplingConfig,
) -> Vec<Completion> {
    let dec = Decoder::new(&m.config, &m.params, Mode::Infer).unwrap();
    let seeds: Vec<Vec<u64>> = (0..prompts.len())
        .map(|p| {
            (0..n)
                .map(|s| sample_seed(base, p as u64, s as u64))
                .collect()
        })
        .collect();
    generate(&dec, &m.tokenizer, prompts, &seeds, cfg, &Device::Cpu).unwrap()
}

fn greedy(max: usize) -> SamplingConfig {
    SamplingConfig {
        temperature: 0.0,
        max_new_tokens: max,
        ..Default::default()
    }
}

fn sampled(max: usize) -> SamplingConfig {
    SamplingConfig {
        temperature: 1.0,
        max_new_tokens: max,
        ..Default::default()
    }
}

fn prompts() -> Vec<Vec<u32>> {
    vec![
        vec![1, 72, 101, 108],
        vec![5, 9],
        vec![300, 301, 302, 303, 304, 305, 306, 307],
        vec![42],
    ]
}

#[test]
fn greedy_is_deterministic() {
    let m = load_fixture("tiny_qwen2");
    let a = run(&m, &prompts(), 1, 0, &greedy(10));
    let b = run(&m, &prompts(), 1, 7, &greedy(10));
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x.token_ids, y.token_ids);
    }
}

#[test]
fn batched_greedy_equals_one_by_one() {
    for fam in ["tiny_llama", "tiny_qwen3"] {
        let m = load_fixture(fam);
        let batch = run(&m, &prompts(), 1, 0, &greedy(12));
        for (i, p) in prompts().iter().enumerate() {
            let alone = run(&m, std::slice::from_ref(p), 1, 0, &greedy(12));
            assert_eq!(batch[i].token_ids, alone[0].token_ids, "{fam} prompt {i}");
        }
    }
}

#[test]
fn same_seed_same_sample_whatever_the_batch() {
    let m = load_fixture("tiny_llama3");
    let dec = Decoder::new(&m.config, &m.params, Mode::Infer).unwrap();
    let cfg = sampled(12);
    let p = vec![1u32, 72, 101, 108];
    let alone = generate(
        &dec,
        &m.tokenizer,
        std::slice::from_ref(&p),
        &[vec![1234]],
        &cfg,
        &Device::Cpu,
    )
    .unwrap();
    // The same (prompt, seed) among other prompts and other samples of its own prompt.
    let ps = vec![vec![9u32, 9, 9, 9, 9, 9, 9], p.clone(), vec![3]];
    let seeds = vec![vec![1, 2], vec![55, 1234, 66], vec![7]];
    let mixed = generate(&dec, &m.tokenizer, &ps, &seeds, &cfg, &Device::Cpu).unwrap();
    let same = mixed
        .iter()
        .find(|c| c.prompt_index == 1 && c.seed == 1234)
        .unwrap();
    assert_eq!(same.token_ids, alone[0].token_ids);
    assert_eq!(
        same.logprobs, alone[0].logprobs,
        "log-probs depend on the batch"
    );
    // And different seeds give different samples (overwhelmingly likely with 12 tokens of a 512 vocab).
    let other = mixed
        .iter()
        .find(|c| c.prompt_index == 1 && c.seed == 55)
        .unwrap();
    assert_ne!(other.token_ids, alone[0].token_ids);
}

#[test]
fn n_samples_per_prompt_are_returned_in_order() {
    let m = load_fixture("tiny_llama");
    let out = run(&m, &prompts(), 3, 0, &sampled(5));
    assert_eq!(out.len(), 12);
    for (i, c) in out.iter().enumerate() {
        assert_eq!((c.prompt_index, c.sample_index), (i / 3, i % 3));
    }
}

#[test]
fn stop_strings_cut_the_text() {
    let m = load_fixture("tiny_llama");
    let free = run(&m, &prompts()[..1], 1, 0, &greedy(24));
    let text = m.tokenizer.decode(&free[0].token_ids, false);
    // Stop at a substring that appears in the middle of the greedy continuation.
    let chars: Vec<char> = text.chars().collect();
    let stop: String = chars[chars.len() / 2..chars.len() / 2 + 2].iter().collect();
    let cfg = SamplingConfig {
        stop: vec![stop.clone()],
        ..greedy(24)
    };
    let out = run(&m, &prompts()[..1], 1, 0, &cfg);
    assert_eq!(out[0].finish_reason, Finish::Stop);
    assert!(!out[0].text.contains(&stop));
    assert!(out[0].token_ids.len() < free[0].token_ids.len());
    assert!(text.starts_with(&out[0].text));
}

/// Log-probs of the sampled tokens under softmax(logits / T) from a fresh full forward.
fn fresh_logprobs(m: &LoadedModel, prompt: &[u32], completion: &[u32], t: f64) -> Vec<f32> {
    let dec = Decoder::new(&m.config, &m.params, Mode::Infer).unwrap();
    let full: Vec<u32> = prompt.iter().chain(completion).copied().collect();
    let logits = logits_of(&dec, &full, &Device::Cpu).unwrap(); // (T, V)
    let n = completion.len();
    let lg = logits.narrow(0, prompt.len() - 1, n).unwrap();
    let tgt = Tensor::from_vec(completion.to_vec(), n, &Device::Cpu).unwrap();
    llmrl::model::ops::logprob_stats(&lg, &tgt, t)
        .unwrap()
        .logp
        .to_vec1()
        .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 8, .. ProptestConfig::default() })]

    #[test]
    fn max_new_tokens_and_logprobs_hold(
        lens in proptest::collection::vec(1usize..10, 1..4),
        max in 1usize..9,
        seed in 0u64..1000,
        temp in prop_oneof![Just(0.0), Just(0.7), Just(1.0)],
    ) {
        let m = load_fixture("tiny_qwen2");
        let ps: Vec<Vec<u32>> = lens.iter().enumerate()
            .map(|(i, &l)| (0..l).map(|j| (3 + (seed as usize + 31 * i + 7 * j) % 500) as u32).collect())
            .collect();
        let cfg = SamplingConfig { temperature: temp, max_new_tokens: max, ..Default::default() };
        let out = run(&m, &ps, 2, seed, &cfg);
        prop_assert_eq!(out.len(), ps.len() * 2);
        for c in &out {
            prop_assert!(!c.token_ids.is_empty() && c.token_ids.len() <= max);
            prop_assert_eq!(c.token_ids.len(), c.logprobs.len());
            if c.finish_reason == Finish::Length { prop_assert_eq!(c.token_ids.len(), max); }
            let fresh = fresh_logprobs(&m, &ps[c.prompt_index], &c.token_ids, cfg.logprob_temperature());
            for (a, b) in c.logprobs.iter().zip(&fresh) {
                prop_assert!((a - b).abs() < 1e-4, "logprob {} vs fresh {}", a, b);
            }
        }
    }
}

#[test]
fn rows_finishing_mid_batch_leave_the_others_unchanged() {
    // Stop strings end rows at different steps, so the batch drops rows (in place, reordering
    // the survivors) several times; every sample must still equal the same sample drawn alone.
    let m = load_fixture("tiny_llama");
    let cfg = SamplingConfig {
        stop: vec!["x".into(), "q".into()],
        ..sampled(16)
    };
    let out = run(&m, &prompts(), 3, 11, &cfg);
    let stop_lens: std::collections::BTreeSet<usize> = out
        .iter()
        .filter(|c| c.finish_reason == Finish::Stop)
        .map(|c| c.token_ids.len())
        .collect();
    assert!(
        stop_lens.len() >= 3,
        "rows should stop at several steps: {stop_lens:?}"
    );
    assert!(out.iter().any(|c| c.finish_reason != Finish::Stop));
    let dec = Decoder::new(&m.config, &m.params, Mode::Infer).unwrap();
    for c in &out {
        let p = &prompts()[c.prompt_index];
        let alone = generate(
            &dec,
            &m.tokenizer,
            std::slice::from_ref(p),
            &[vec![c.seed]],
            &cfg,
            &Device::Cpu,
        )
        .unwrap();
        assert_eq!(
            c.token_ids, alone[0].token_ids,
            "prompt {} sample {}",
            c.prompt_index, c.sample_index
        );
        assert_eq!(c.logprobs.len(), alone[0].logprobs.len());
        for (a, b) in c.logprobs.iter().zip(&alone[0].logprobs) {
            assert!((a - b).abs() < 1e-5, "{a} vs {b}");
        }
    }
}

/// Sampled under a trie (and min_new_tokens), each token's reported log-prob, vocabulary mean and
/// entropy equal what the trainer recomputes by teacher-forcing the completion through a full
/// forward: the renormalized constrained policy ([`constrained_logprob_stats`]).
#[test]
fn constrained_logprobs_equal_the_trainers_recomputation() {
    use llmrl::generate::constraint::{allowed_along, constrained_logprob_stats};
    use llmrl::generate::{generate_constrained, TrieConstraint};
    let m = load_fixture("tiny_llama3");
    let dec = Decoder::new(&m.config, &m.params, Mode::Infer).unwrap();
    let seqs: Vec<Vec<u32>> = (0..30u32)
        .map(|i| vec![3 + i % 5, 40 + (i * 7) % 11, 100 + i])
        .chain([vec![3], vec![4, 40]])
        .collect();
    let trie = TrieConstraint::new(&seqs, &m.tokenizer.eos_ids);
    for (temp, min_new) in [(1.0, 0), (0.7, 2), (0.0, 0)] {
        let cfg = SamplingConfig {
            temperature: temp,
            max_new_tokens: 6,
            min_new_tokens: min_new,
            ..Default::default()
        };
        let seeds: Vec<Vec<u64>> = (0..prompts().len())
            .map(|p| (0..3).map(|s| sample_seed(5, p as u64, s)).collect())
            .collect();
        let out = generate_constrained(
            &dec,
            &m.tokenizer,
            &prompts(),
            &seeds,
            &cfg,
            Some(&trie),
            &Device::Cpu,
        )
        .unwrap();
        let min = llmrl::generate::constraint::MinNewTokens::new(min_new, &m.tokenizer.eos_ids);
        let both = llmrl::generate::constraint::Intersection::new(vec![
            &trie as &dyn llmrl::generate::Constraint,
            &min,
        ]);
        for c in out.iter().filter(|c| !c.token_ids.is_empty()) {
            let p = &prompts()[c.prompt_index];
            let full: Vec<u32> = p.iter().chain(&c.token_ids).copied().collect();
            let logits = logits_of(&dec, &full, &Device::Cpu).unwrap(); // (T, V)
            let n = c.token_ids.len();
            let lg = logits.narrow(0, p.len() - 1, n).unwrap(); // (n, V)
            let tgt = Tensor::from_vec(c.token_ids.clone(), n, &Device::Cpu).unwrap();
            let allowed = allowed_along(&both, c.prompt_index, &c.token_ids);
            let st =
                constrained_logprob_stats(&lg, &tgt, &allowed, cfg.logprob_temperature()).unwrap();
            let lp: Vec<f32> = st.logp.to_vec1().unwrap();
            let mean: Vec<f32> = st.mean_logp.to_vec1().unwrap();
            let ent: Vec<f32> = st.entropy.to_vec1().unwrap();
            for t in 0..n {
                assert!(
                    (lp[t] - c.logprobs[t]).abs() < 1e-4,
                    "logp {t}: {lp:?} vs {:?}",
                    c.logprobs
                );
                assert!((mean[t] - c.mean_logprobs[t]).abs() < 1e-4, "mean {t}");
                assert!((ent[t] - c.entropies[t]).abs() < 1e-4, "entropy {t}");
            }
        }
    }
}

/// A constraint that allows nothing ends every row at once with the documented reason.
#[test]
fn nothing_allowed_ends_the_row_with_the_constrained_reason() {
    use llmrl::generate::{generate_constrained, Allowed, Constraint, TrieConstraint};
    struct Nothing;
    impl Constraint for Nothing {
        fn allowed(&self, _: usize, _: &[u32]) -> Allowed<'_> {
            Allowed::nothing()
        }
    }
    let m = load_fixture("tiny_llama");
    let dec = Decoder::new(&m.config, &m.params, Mode::Infer).unwrap();
    let seeds = vec![vec![1, 2]; prompts().len()];
    let cfg = sampled(8);
    let out = generate_constrained(
        &dec,
        &m.tokenizer,
        &prompts(),
        &seeds,
        &cfg,
        Some(&Nothing),
        &Device::Cpu,
    )
    .unwrap();
    assert_eq!(out.len(), 8);
    for c in &out {
        assert_eq!(c.finish_reason, Finish::Constrained);
        assert!(c.token_ids.is_empty() && c.logprobs.is_empty() && c.text.is_empty());
    }
    assert_eq!(
        serde_json::to_value(Finish::Constrained).unwrap(),
        serde_json::json!("no_allowed_token")
    );
    // Some rows run out of allowed tokens mid-way (a trie without end tokens), the rest go on.
    let trie = TrieConstraint::new(
        &[vec![10, 11], vec![10, 12, 13, 14, 15, 16, 17, 18, 19]],
        &[],
    );
    let out = generate_constrained(
        &dec,
        &m.tokenizer,
        &prompts(),
        &seeds,
        &cfg,
        Some(&trie),
        &Device::Cpu,
    )
    .unwrap();
    for c in &out {
        match c.finish_reason {
            Finish::Constrained => assert_eq!(c.token_ids, vec![10, 11]),
            Finish::Length => assert_eq!(c.token_ids, vec![10, 12, 13, 14, 15, 16, 17, 18]),
            f => panic!("unexpected {f:?}"),
        }
    }
}

/// Weight-only int8 (rollouts' `rollout_precision = "int8"`) on every family: a sequence's
/// logits track the exact model's, and generation reports the int8 model's own log-probs,
/// which an int8 forward of the whole sequence recomputes.
#[test]
fn int8_weights_track_the_exact_logits() {
    use llmrl::model::decoder::BuildOptions;
    for fam in FAMILIES {
        let m = load_fixture(fam);
        let exact = Decoder::new(&m.config, &m.params, Mode::Infer).unwrap();
        let opts = BuildOptions {
            int8_weights: true,
            ..BuildOptions::default()
        };
        let q = Decoder::build(&m.config, &m.params, Mode::Infer, &opts).unwrap();
        let ids: Vec<u32> = (0..24).map(|i| 3 + (i * 37) % 400).collect();
        let a = logits_of(&exact, &ids, &Device::Cpu).unwrap(); // (T, V)
        let b = logits_of(&q, &ids, &Device::Cpu).unwrap();
        // Mean |Δ logit| against the logits' spread, and KL(exact ‖ int8) per position.
        let spread = a.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let mean = spread.iter().sum::<f32>() / spread.len() as f32;
        let std =
            (spread.iter().map(|x| (x - mean).powi(2)).sum::<f32>() / spread.len() as f32).sqrt();
        let scalar = |t: Tensor| t.to_scalar::<f32>().unwrap();
        let err = scalar((&a - &b).unwrap().abs().unwrap().mean_all().unwrap());
        assert!(err > 0.0, "{fam}: int8 logits equal the exact ones");
        assert!(
            err < 0.05 * std,
            "{fam}: mean |Δ logit| {err} against a spread of {std}"
        );
        let (la, lb) = (
            candle_nn::ops::log_softmax(&a, 1).unwrap(),
            candle_nn::ops::log_softmax(&b, 1).unwrap(),
        );
        let kl = (la.exp().unwrap() * (&la - &lb).unwrap()).unwrap();
        let kl = scalar(kl.sum(1).unwrap().mean_all().unwrap());
        assert!(kl < 0.01, "{fam}: KL(exact ‖ int8) {kl} per position");
        // Decode steps (a few rows: the int8 kernel) report what an int8 prefill recomputes.
        let cfg = sampled(6);
        let seeds = vec![vec![11u64, 12]; 2];
        let ps = vec![ids[..5].to_vec(), ids[7..9].to_vec()];
        let outs = generate(&q, &m.tokenizer, &ps, &seeds, &cfg, &Device::Cpu).unwrap();
        for c in &outs {
            let full: Vec<u32> = ps[c.prompt_index]
                .iter()
                .chain(&c.token_ids)
                .copied()
                .collect();
            let lg = logits_of(&q, &full, &Device::Cpu).unwrap();
            let n = c.token_ids.len();
            let lg = lg.narrow(0, ps[c.prompt_index].len() - 1, n).unwrap();
            let tgt = Tensor::from_vec(c.token_ids.clone(), n, &Device::Cpu).unwrap();
            let fresh = llmrl::model::ops::logprob_stats(&lg, &tgt, 1.0)
                .unwrap()
                .logp;
            for (x, y) in c.logprobs.iter().zip(fresh.to_vec1::<f32>().unwrap()) {
                assert!((x - y).abs() < 1e-4, "{fam}: {x} vs {y}");
            }
        }
    }
}
