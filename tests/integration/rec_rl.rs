//! RL over a fixed action space of Semantic-ID items: generation under the SID trie never leaves
//! the catalogue (sampled and beamed), the trainer recomputes the sampler's constrained log-probs
//! (GRPO's ratio and ROVER's Q start at exactly what the sampler reported), and the real CLI
//! trains GRPO over beam groups and ROVER over sampled groups.

use std::path::Path;
use std::process::Command;

use candle_core::Device;
use llmrl::algo::{self, AlgoConfig, MinibatchShape, SequenceTargets, TokenBatch};
use llmrl::generate::beam::{beam_search, BeamConfig};
use llmrl::generate::{generate_constrained, Constraint, Finish, SamplingConfig};
use llmrl::model::{self, Decoder, LoadedModel, Mode};
use llmrl::rec::sid::SidTable;
use llmrl::rec::trie::SidTrie;
use llmrl::train::constrained::policy_stats;
use proptest::prelude::*;

use crate::common::*;

/// 3 levels of 3 codes: 14 items over 13 SIDs (items 12 and 13 collide on <a_2><b_2><c_2>).
fn table() -> SidTable {
    let mut items = Vec::new();
    let mut codes = Vec::new();
    for i in 0..13u32 {
        items.push(format!("item{i}"));
        codes.push(vec![i % 3, (i / 3) % 3, (i * 7 + i / 9) % 3]);
    }
    items.push("item13".into());
    codes.push(codes[12].clone());
    SidTable::new(items, codes, vec![3, 3, 3]).unwrap()
}

/// tiny_llama with the table's SID tokens added (one token per level) and the trie over it.
fn fixture() -> (LoadedModel, SidTable, SidTrie) {
    let mut m = load_fixture("tiny_llama");
    let t = table();
    model::add_tokens(&mut m, &t.all_tokens()).unwrap();
    let trie = SidTrie::new(&t, &m.tokenizer, "", &m.tokenizer.eos_ids).unwrap();
    assert_eq!(trie.max_len(), 3, "one token per level");
    (m, t, trie)
}

fn prompts(m: &LoadedModel) -> Vec<Vec<u32>> {
    [
        "user 1: <a_0><b_1><c_2>",
        "user 2 watched <a_2><b_0><c_1> then",
    ]
    .iter()
    .map(|p| m.tokenizer.encode(p, false).unwrap())
    .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    /// Whatever the seed and sampling settings, every sampled completion and every beam is one
    /// whole item's SID followed by EOS (maps to ≥ 1 item), and a prompt's beams are distinct.
    #[test]
    fn no_completion_under_the_sid_trie_is_invalid(
        seed in any::<u64>(),
        temperature in 0.3f64..2.0,
        top_k in 0usize..4,
        beams in 1usize..9,
    ) {
        let (m, _, trie) = fixture();
        let ps = prompts(&m);
        let dec = Decoder::new(&m.config, &m.params, Mode::Infer).unwrap();
        let cfg = SamplingConfig { temperature, top_k, max_new_tokens: 6, ..SamplingConfig::default() };
        let seeds: Vec<Vec<u64>> = (0..ps.len() as u64).map(|p| (0..6).map(|s| seed ^ (p * 31 + s)).collect()).collect();
        let c: &dyn Constraint = &trie;
        let out = generate_constrained(&dec, &m.tokenizer, &ps, &seeds, &cfg, Some(c), &Device::Cpu).unwrap();
        for s in &out {
            prop_assert_eq!(s.finish_reason, Finish::Eos);
            prop_assert!(!trie.items_of(&s.token_ids).is_empty(), "{:?}", s.token_ids);
            prop_assert!(s.logprobs.iter().chain(&s.mean_logprobs).all(|x| x.is_finite()));
        }
        let bc = BeamConfig { num_beams: beams, max_new_tokens: 6, ..BeamConfig::default() };
        for r in beam_search(&dec, &m.tokenizer, &ps, &bc, Some(c), &Device::Cpu).unwrap() {
            prop_assert_eq!(r.beams.len(), beams);
            let mut seen = std::collections::HashSet::new();
            for b in &r.beams {
                prop_assert!(!trie.items_of(&b.token_ids).is_empty(), "{:?}", b.token_ids);
                prop_assert!(seen.insert(b.token_ids.clone()), "duplicate beam");
            }
        }
    }
}

/// The sampler's reported log-probs (log π_C of the drawn token, and the mean of log π_C over
/// the allowed set) equal the trainer's recomputation on the same tokens to ≤ 1e-5; so at the
/// first optimizer step GRPO's ratio is 1 and ROVER's Q and Q' are 0.
#[test]
fn sampler_and_trainer_agree_under_the_constraint() {
    let (m, _, trie) = fixture();
    let ps = prompts(&m);
    let dec = Decoder::new(&m.config, &m.params, Mode::Infer).unwrap();
    let cfg = SamplingConfig {
        temperature: 0.7,
        max_new_tokens: 6,
        ..SamplingConfig::default()
    };
    let seeds = vec![vec![1, 2, 3, 4], vec![5, 6, 7, 8]];
    let c: &dyn Constraint = &trie;
    let out =
        generate_constrained(&dec, &m.tokenizer, &ps, &seeds, &cfg, Some(c), &Device::Cpu).unwrap();
    let pairs: Vec<(&[u32], &[u32])> = out
        .iter()
        .map(|s| (ps[s.prompt_index].as_slice(), s.token_ids.as_slice()))
        .collect();
    let groups: Vec<usize> = out.iter().map(|s| s.prompt_index).collect();
    let train = Decoder::new(&m.config, &m.params, Mode::Train).unwrap();
    let cur = policy_stats(&train, &pairs, &groups, Some(c), 0.7, &Device::Cpu).unwrap();
    let lp = cur.logp.to_vec1::<f32>().unwrap();
    let mean = cur.mean_logp.to_vec1::<f32>().unwrap();
    let old_lp: Vec<f32> = out.iter().flat_map(|s| s.logprobs.clone()).collect();
    let old_mean: Vec<f32> = out.iter().flat_map(|s| s.mean_logprobs.clone()).collect();
    assert_eq!(lp.len(), old_lp.len());
    let worst = |a: &[f32], b: &[f32]| {
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max)
    };
    assert!(
        worst(&lp, &old_lp) <= 1e-5,
        "logp differs by {}",
        worst(&lp, &old_lp)
    );
    assert!(
        worst(&mean, &old_mean) <= 1e-5,
        "mean differs by {}",
        worst(&mean, &old_mean)
    );
    assert!(mean.iter().all(|x| x.is_finite()));
    // The forced EOS after a whole SID is no action: log π_C = mean = 0 there.
    let last = out[0].token_ids.len() - 1;
    assert!(out[0].logprobs[last].abs() < 1e-6 && out[0].mean_logprobs[last].abs() < 1e-6);

    // Both losses on the recomputed statistics, with the sampler's as the old policy.
    let shape = MinibatchShape {
        num_sequences: out.len(),
        num_groups: out.len(),
        num_tokens: lp.len(),
        max_new_tokens: 6,
    };
    for (cfg, key, want) in [
        ("name = \"grpo\"\nloss_type = \"dapo\"", "ratio_mean", 1.0),
        ("name = \"rover\"", "q_abs_mean", 0.0),
    ] {
        let cfg: AlgoConfig = toml::from_str(cfg).unwrap();
        let a = algo::build(&cfg).unwrap();
        let adv = a.advantages(&[1.0, 0.0, 0.0, 1.0, 0.0, 1.0, 1.0, 1.0], 4);
        let targets: Vec<SequenceTargets> = out
            .iter()
            .zip(&adv)
            .map(|(s, &advantage)| SequenceTargets {
                old_logp: &s.logprobs,
                old_mean_logp: &s.mean_logprobs,
                advantage,
                weight: a.token_weight(s.token_ids.len(), &shape),
                is_weight: &[],
                group: s.prompt_index,
            })
            .collect();
        let batch = TokenBatch::new(&targets, None, &Device::Cpu).unwrap();
        let (loss, metrics) = a.loss(&cur, &batch).unwrap();
        assert!(loss.to_scalar::<f32>().unwrap().is_finite());
        assert!(
            (metrics[key] - want).abs() < 1e-5,
            "{}: {key} = {}",
            a.name(),
            metrics[key]
        );
    }
}

fn write_rec_task(dir: &Path) {
    let t = table();
    let index: serde_json::Map<String, serde_json::Value> = (0..t.len())
        .map(|i| (t.items()[i].clone(), serde_json::json!(t.tokens(i))))
        .collect();
    std::fs::write(
        dir.join("index.json"),
        serde_json::to_string(&index).unwrap(),
    )
    .unwrap();
    let mut rows = String::new();
    for u in 0..6 {
        let (h, target) = (u % t.len(), (u * 5 + 2) % t.len());
        let row = serde_json::json!({
            "id": format!("u{u}"),
            "prompt": format!("history: {}\nnext:", t.sid_string(h)),
            "target": t.sid_string(target),
            "target_item": t.items()[target],
        });
        rows.push_str(&format!("{row}\n"));
    }
    std::fs::write(dir.join("train.jsonl"), rows).unwrap();
    std::fs::write(dir.join("prompt.txt"), "{prompt}").unwrap();
    let tokens: Vec<String> = t.all_tokens();
    std::fs::write(
        dir.join("sid_tokens.json"),
        serde_json::to_string(&tokens).unwrap(),
    )
    .unwrap();
}

fn recipe(model: &Path, algorithm: &str, group: &str, reward: &str) -> String {
    format!(
        r#"seed = 5
[model]
source = "{}"
add_tokens = {{ file = "sid_tokens.json" }}
[data]
source = "jsonl"
path = "train.jsonl"
[prompt]
template = "prompt.txt"
chat = false
[verifier]
name = "rec"
reward = "{reward}"
[generation]
num_generations = 4
max_new_tokens = 4
group = "{group}"
constraint = {{ sid_index = "index.json" }}
[algorithm]
{algorithm}
[train]
max_steps = 2
prompts_per_step = 2
micro_batch_size = 4
[optimizer]
learning_rate = 1e-3
"#,
        model.display()
    )
}

fn train(dir: &Path, name: &str, text: &str) -> Vec<serde_json::Value> {
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, text).unwrap();
    let run = dir.join(name);
    let out = Command::new(env!("CARGO_BIN_EXE_llmrl"))
        .args([
            "train",
            path.to_str().unwrap(),
            "--out",
            run.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Every rolled-out completion is an item of the catalogue.
    for entry in std::fs::read_dir(run.join("rollouts")).unwrap() {
        for line in std::fs::read_to_string(entry.unwrap().path())
            .unwrap()
            .lines()
        {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            let reason = v["reason"].as_str().unwrap();
            assert!(reason == "hit" || reason.starts_with("miss"), "{name}: {v}");
        }
    }
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The real CLI: GRPO over beam groups with the rank reward (MiniOneRec's recipe: β 1e-3 k3 KL),
/// ROVER over sampled groups with prefix credit; a few steps each, finite losses.
#[test]
fn cli_trains_grpo_on_beams_and_rover_on_samples() {
    let d = tempfile::tempdir().unwrap();
    write_rec_task(d.path());
    let model = fixture_dir("tiny_llama");
    let grpo = "name = \"grpo\"\nbeta = 0.001";
    let m = train(d.path(), "grpo_beam", &recipe(&model, grpo, "beam", "rank"));
    let rover = "name = \"rover\"\nnum_minibatches = 2";
    let r = train(
        d.path(),
        "rover_sample",
        &recipe(&model, rover, "sample", "prefix"),
    );
    for (name, lines) in [("grpo", &m), ("rover", &r)] {
        assert_eq!(lines.len(), 2, "{name}");
        for l in lines {
            let loss = l["loss"].as_f64().unwrap();
            assert!(loss.is_finite(), "{name}: {l}");
            assert!(l["grad_norm"].as_f64().unwrap().is_finite(), "{name}: {l}");
        }
    }
}

/// Bad options fail at resolve (or, for what needs the tokenizer, when the trie is built) with
/// the option named and a fix.
#[test]
fn recipe_errors_name_the_option_and_a_fix() {
    let d = tempfile::tempdir().unwrap();
    write_rec_task(d.path());
    let model = fixture_dir("tiny_llama");
    let path = d.path().join("r.toml");
    let resolve = |text: &str| {
        std::fs::write(&path, text).unwrap();
        llmrl::recipe::load_recipe(&path, &[]).and_then(|r| r.resolve(&path))
    };
    let err = |text: &str| format!("{:#}", resolve(text).err().expect("an error"));
    let base = recipe(&model, "name = \"grpo\"", "beam", "rank");

    let e = err(&base.replace(
        "max_new_tokens = 4",
        "max_new_tokens = 4\ntemperature = 0.7",
    ));
    assert!(
        e.contains("temperature must be 1") && e.contains("hint"),
        "{e}"
    );
    let e = err(&base.replace("name = \"grpo\"", "name = \"sft\""));
    assert!(e.contains("[generation] group") && e.contains("sft"), "{e}");
    let e = err(&base.replace("index.json", "nope.json"));
    assert!(
        e.contains("constraint.sid_index") && e.contains("nope.json"),
        "{e}"
    );
    let e = err(&base.replace("reward = \"rank\"", "reward = \"ndcg\""));
    assert!(
        e.contains("unknown variant `ndcg`") && e.contains("prefix"),
        "{e}"
    );

    // Too few new tokens for a whole SID and its EOS: said when the trie is built.
    let plan = resolve(&base.replace("max_new_tokens = 4", "max_new_tokens = 3")).unwrap();
    let mut m = load_fixture("tiny_llama");
    plan.vocab.apply(&mut m).unwrap();
    let e = format!(
        "{:#}",
        plan.constraint(&m.tokenizer).err().expect("too short")
    );
    assert!(e.contains("max_new_tokens = 4 or more"), "{e}");
    // More beams than items.
    let plan = resolve(&base.replace("num_generations = 4", "num_generations = 14")).unwrap();
    let e = format!(
        "{:#}",
        plan.constraint(&m.tokenizer).err().expect("too many")
    );
    assert!(e.contains("13 distinct SIDs"), "{e}");
    // The verifier reads the constraint's index by default, and checks the data against it.
    let bad = std::fs::read_to_string(d.path().join("train.jsonl"))
        .unwrap()
        .replacen("\"target_item\":\"item", "\"target_item\":\"zzz", 1);
    std::fs::write(d.path().join("train.jsonl"), bad).unwrap();
    let e = err(&base);
    assert!(
        e.contains("target item `zzz") && e.contains("not in the SID table"),
        "{e}"
    );
}
