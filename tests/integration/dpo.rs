//! DPO on a real (tiny) model against TRL: the loss, TRL's metrics and per-parameter gradients
//! (golden from tests/fixtures/dpo/make_dpo_golden.py, which calls TRL's own DPO loss).

use candle_core::{Device, Tensor};
use llmrl::algo::dpo::{
    DpoConfig, PreferenceBatch, PreferenceGroups, PreferenceKind, PreferenceLoss,
};
use llmrl::model::decoder::logits_of;
use llmrl::model::ops::logprob_stats;
use llmrl::model::{Decoder, Mode};
use serde_json::Value;

use crate::common::*;

fn golden() -> Value {
    let s = std::fs::read_to_string(fixture_dir("dpo").join("golden.json")).expect("golden.json");
    serde_json::from_str(&s).expect("valid json")
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

/// Σ_j log π(c_j | p, c_<j) of one (prompt, completion), tracking gradients: a scalar.
fn completion_logp(dec: &Decoder, prompt: &[u32], completion: &[u32]) -> Tensor {
    let full: Vec<u32> = prompt.iter().chain(completion).copied().collect();
    let logits = logits_of(dec, &full[..full.len() - 1], &Device::Cpu).unwrap(); // (T-1, V)
                                                                                 // Position P−1+j predicts completion token j.
    let logits = logits
        .narrow(0, prompt.len() - 1, completion.len())
        .unwrap(); // (C, V)
    let targets = Tensor::new(completion, &Device::Cpu).unwrap();
    logprob_stats(&logits, &targets, 1.0)
        .unwrap()
        .logp
        .sum_all()
        .unwrap()
}

#[test]
fn dpo_loss_metrics_and_gradients_match_trl_on_tiny_llama() {
    let g = golden();
    let case = &g["model_case"];
    let m = load_fixture(case["model"].as_str().unwrap());
    let dec = Decoder::new(&m.config, &m.params, Mode::Train).unwrap();
    let triples = case["triples"].as_array().unwrap();
    let (off_c, off_r) = (
        floats(&case["ref_offset_chosen"]),
        floats(&case["ref_offset_rejected"]),
    );
    // Group layout: [chosen, rejected] per triple; reference = policy (detached) + offset.
    let mut seqs = Vec::new();
    let mut offsets = Vec::new();
    for (i, t) in triples.iter().enumerate() {
        let p = ids(&t["prompt"]);
        seqs.push(completion_logp(&dec, &p, &ids(&t["chosen"])));
        seqs.push(completion_logp(&dec, &p, &ids(&t["rejected"])));
        offsets.extend([off_c[i] as f32, off_r[i] as f32]);
    }
    let policy = Tensor::stack(&seqs, 0).unwrap(); // (S,)
    let offsets = Tensor::new(offsets.as_slice(), &Device::Cpu).unwrap();
    let reference = (policy.detach() + offsets).unwrap();
    let sums = policy.to_vec1::<f32>().unwrap();
    let want_c = floats(&case["policy_chosen"]);
    let want_r = floats(&case["policy_rejected"]);
    for (i, (c, r)) in want_c.iter().zip(&want_r).enumerate() {
        assert!(
            (sums[2 * i] as f64 - c).abs() < 1e-4,
            "chosen logp {i}: {} vs {c}",
            sums[2 * i]
        );
        assert!(
            (sums[2 * i + 1] as f64 - r).abs() < 1e-4,
            "rejected logp {i}: {} vs {r}",
            sums[2 * i + 1]
        );
    }

    let cfg = DpoConfig {
        beta: case["beta"].as_f64().unwrap(),
        label_smoothing: case["label_smoothing"].as_f64().unwrap(),
    };
    let groups = PreferenceGroups::uniform(triples.len(), 1).unwrap();
    let batch = PreferenceBatch {
        policy_logp: &policy,
        ref_logp: &reference,
        groups: &groups,
        minibatch_groups: triples.len(),
    };
    let (loss, metrics) = PreferenceLoss::new(PreferenceKind::Dpo, &cfg)
        .unwrap()
        .loss(&batch)
        .unwrap();
    let l = loss.to_scalar::<f32>().unwrap() as f64;
    let want = case["loss"].as_f64().unwrap();
    assert!((l - want).abs() < 1e-5 * want, "loss {l} vs {want}");
    for (k, v) in case["metrics"].as_object().unwrap() {
        let v = v.as_f64().unwrap();
        assert!(
            (metrics[k] - v).abs() < 1e-4 * v.abs().max(1.0),
            "{k}: {} vs {v}",
            metrics[k]
        );
    }

    let grads = loss.backward().unwrap();
    let norms = case["grad_norms"].as_object().unwrap();
    let mut worst = 0f64;
    for (name, var) in m.params.named_vars() {
        let want = norms
            .get(&name)
            .and_then(Value::as_f64)
            .unwrap_or_else(|| panic!("{name} not in golden"));
        let g = grads
            .get(var.as_tensor())
            .unwrap_or_else(|| panic!("{name}: no gradient"));
        let got = g
            .sqr()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
            .sqrt() as f64;
        let rel = (got - want).abs() / want;
        worst = worst.max(rel);
        assert!(
            rel < 1e-4,
            "grad norm of {name}: {got} vs {want} (rel {rel:e})"
        );
    }
    assert_eq!(
        norms.len(),
        m.params.names().len(),
        "every parameter is compared"
    );
    for (name, want) in case["grads"].as_object().unwrap() {
        let want = floats(want);
        let got = grads.get(m.params.var(name).unwrap().as_tensor()).unwrap();
        let got = got.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(got.len(), want.len(), "{name}");
        let scale = want.iter().fold(0f64, |a, x| a.max(x.abs()));
        for (i, (a, b)) in got.iter().zip(&want).enumerate() {
            assert!(
                (*a as f64 - b).abs() <= 1e-4 * scale,
                "{name}[{i}]: {a} vs {b} (max |g| {scale})"
            );
        }
    }
    eprintln!("worst relative gradient-norm error: {worst:e}");
}
