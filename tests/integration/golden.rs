//! Logit, loss and gradient parity with HF transformers on tiny random checkpoints.

use candle_core::{Device, Tensor, Var};
use llmrl::model::{
    decoder::logits_of, gradient_coverage, ops, Decoder, Message, Mode, Positions, Trainable,
};

use crate::common::*;

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn logits_match_transformers_at_every_position() {
    for fam in FAMILIES {
        let m = load_fixture(fam);
        let dec = Decoder::new(&m.config, &m.params, Mode::Infer).unwrap();
        let exp = expected(fam);
        for case in exp["cases"].as_array().unwrap() {
            let input = ids(&case["input_ids"]);
            let got: Vec<Vec<f32>> = logits_of(&dec, &input, &Device::Cpu)
                .unwrap()
                .to_vec2()
                .unwrap();
            for (t, row) in case["logits"].as_array().unwrap().iter().enumerate() {
                let want: Vec<f32> = row
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_f64().unwrap() as f32)
                    .collect();
                let d = max_abs_diff(&got[t], &want);
                assert!(
                    d <= 1e-4,
                    "{fam}: len {} position {t}: max |Δlogit| = {d}",
                    input.len()
                );
            }
        }
    }
}

#[test]
fn streamed_decode_matmul_logits_match_the_gemm_path() {
    // Mode::Infer runs every projection and the LM head of up to 32 rows through the streaming
    // kernel (`ops/decode_matmul.rs`, AVX-512 / AVX2 / portable by CPU); Mode::Train's weights
    // track gradients, so the same forward takes candle's gemm. Different summation orders:
    // equal to rounding, well inside 1e-4.
    for fam in FAMILIES {
        let m = load_fixture(fam);
        let kernel = Decoder::new(&m.config, &m.params, Mode::Infer).unwrap();
        let gemm = Decoder::new(&m.config, &m.params, Mode::Train).unwrap();
        for case in expected(fam)["cases"].as_array().unwrap() {
            let input = ids(&case["input_ids"]);
            let a: Vec<f32> = logits_of(&kernel, &input, &Device::Cpu)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            let b: Vec<f32> = logits_of(&gemm, &input, &Device::Cpu)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            let d = max_abs_diff(&a, &b);
            assert!(d <= 1e-4, "{fam}: len {}: max |Δlogit| = {d}", input.len());
        }
    }
}

#[test]
fn padded_ragged_batch_equals_each_row_alone() {
    for fam in FAMILIES {
        let m = load_fixture(fam);
        let dec = Decoder::new(&m.config, &m.params, Mode::Infer).unwrap();
        let exp = expected(fam);
        let rows: Vec<Vec<u32>> = exp["cases"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| ids(&c["input_ids"]))
            .collect();
        let t = rows.iter().map(Vec::len).max().unwrap();
        let dev = Device::Cpu;
        // Right padding (training batches) and left padding (generation prefill).
        for left in [false, true] {
            let mut flat = Vec::new();
            let mut valid = Vec::new();
            for r in &rows {
                let pad = t - r.len();
                let (ids, flags): (Vec<u32>, Vec<bool>) = if left {
                    (
                        std::iter::repeat_n(0, pad)
                            .chain(r.iter().copied())
                            .collect(),
                        (0..t).map(|i| i >= pad).collect(),
                    )
                } else {
                    (
                        r.iter()
                            .copied()
                            .chain(std::iter::repeat_n(0, pad))
                            .collect(),
                        (0..t).map(|i| i < r.len()).collect(),
                    )
                };
                flat.extend(ids);
                valid.push(flags);
            }
            let pos = Positions::build(&[], &valid, &dev).unwrap();
            let x = Tensor::from_vec(flat, (rows.len(), t), &dev).unwrap();
            let batch = dec.forward(&x, &pos, None).unwrap(); // (B, T, V)
            for (b, r) in rows.iter().enumerate() {
                let alone: Vec<Vec<f32>> = logits_of(&dec, r, &dev).unwrap().to_vec2().unwrap();
                let off = if left { t - r.len() } else { 0 };
                let got: Vec<Vec<f32>> = batch
                    .get(b)
                    .unwrap()
                    .narrow(0, off, r.len())
                    .unwrap()
                    .to_vec2()
                    .unwrap();
                for (i, (g, a)) in got.iter().zip(&alone).enumerate() {
                    let d = max_abs_diff(g, a);
                    // 2e-5: a row alone takes the small-batch decode matmul, the batch gemm;
                    // they sum in different orders.
                    assert!(d <= 2e-5, "{fam} left={left} row {b} pos {i}: {d}");
                }
            }
        }
    }
}

#[test]
fn chat_template_and_tokenizer_match_transformers() {
    for fam in FAMILIES {
        let m = load_fixture(fam);
        let exp = expected(fam);
        let cp = &exp["chat_prompt"];
        let msgs: Vec<Message> = serde_json::from_value(cp["messages"].clone()).unwrap();
        let text = m.tokenizer.apply_chat_template(&msgs, true).unwrap();
        assert_eq!(
            text,
            cp["text"].as_str().unwrap(),
            "{fam}: rendered chat prompt"
        );
        assert_eq!(
            m.tokenizer.encode(&text, false).unwrap(),
            ids(&cp["ids"]),
            "{fam}: chat prompt ids"
        );
    }
}

/// Mean next-token NLL of `ids` through the trainable forward.
fn nll(dec: &Decoder, ids: &[u32]) -> Tensor {
    let dev = Device::Cpu;
    let t = ids.len() - 1;
    let pos = Positions::right_padded(&[t], t, &dev).unwrap();
    let x = Tensor::from_vec(ids[..t].to_vec(), (1, t), &dev).unwrap();
    let logits = dec.forward(&x, &pos, None).unwrap().squeeze(0).unwrap(); // (T, V)
    let tgt = Tensor::from_vec(ids[1..].to_vec(), t, &dev).unwrap();
    ops::logprob_stats(&logits, &tgt, 1.0)
        .unwrap()
        .logp
        .mean_all()
        .unwrap()
        .neg()
        .unwrap()
}

#[test]
fn loss_and_every_gradient_match_transformers() {
    for fam in FAMILIES {
        let m = load_fixture(fam);
        let exp = expected(fam);
        let lc = &exp["loss_check"];
        let dec = Decoder::new(&m.config, &m.params, Mode::Train).unwrap();
        let loss = nll(&dec, &ids(&lc["input_ids"]));
        let l = loss.to_scalar::<f32>().unwrap() as f64;
        assert!(
            (l - lc["loss"].as_f64().unwrap()).abs() < 1e-4,
            "{fam}: loss {l} vs {}",
            lc["loss"]
        );
        let grads = loss.backward().unwrap();
        // Every trainable parameter (all of them here) gets a finite, non-zero gradient.
        let named = m.params.named_vars();
        let cov = gradient_coverage(&named, &Trainable::All, &grads).unwrap();
        assert!(
            cov.problems.is_empty() && cov.frozen.is_empty(),
            "{fam}: parameters without a finite non-zero gradient: {:?}",
            cov.problems
        );
        let mut total = 0.0f64;
        for (name, var) in named {
            let g = grads.get(var.as_tensor()).expect("checked above");
            let n2 = g
                .sqr()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap() as f64;
            total += n2;
            let want = lc["param_grad_norms"][&name]
                .as_f64()
                .unwrap_or_else(|| panic!("{fam}: {name} not in fixture"));
            let got = n2.sqrt();
            assert!(
                (got - want).abs() <= 1e-3 * want.max(1e-3),
                "{fam}: grad norm of {name}: {got} vs {want}"
            );
        }
        let gn = total.sqrt();
        let want = lc["grad_norm"].as_f64().unwrap();
        assert!(
            (gn - want).abs() < 1e-3 * want,
            "{fam}: global grad norm {gn} vs {want}"
        );
    }
}

#[test]
fn logprob_gradient_matches_finite_differences() {
    // d(mean log-prob)/dθ along a fixed direction, central differences in f32 with a tolerance
    // that f32 rounding allows; checked on the tiny Qwen3 (the most ops: bias-free, q/k norm).
    let m = load_fixture("tiny_qwen3");
    let seq: Vec<u32> = vec![1, 72, 101, 108, 108, 111, 32, 119, 111];
    let dec = Decoder::new(&m.config, &m.params, Mode::Train).unwrap();
    let loss = nll(&dec, &seq);
    let grads = loss.backward().unwrap();
    for name in [
        "model.layers.0.self_attn.q_norm.weight",
        "model.layers.1.mlp.down_proj.weight",
        "model.norm.weight",
        "model.embed_tokens.weight",
    ] {
        let var: Var = m.params.var(name).unwrap().clone();
        let g = grads.get(var.as_tensor()).unwrap();
        // A unit-norm direction keeps the probe step small for every tensor size.
        let (analytic, numeric) = directional_derivatives(&var, g, 1e-2, || {
            let d = Decoder::new(&m.config, &m.params, Mode::Infer).unwrap();
            nll(&d, &seq).to_scalar::<f32>().unwrap() as f64
        });
        let rel = (numeric - analytic).abs() / analytic.abs().max(1e-3);
        assert!(
            rel < 2e-2,
            "{name}: analytic {analytic} vs numeric {numeric}"
        );
    }
}

#[test]
fn greedy_generation_matches_transformers() {
    use llmrl::generate::{generate, SamplingConfig};
    for fam in FAMILIES {
        let m = load_fixture(fam);
        let exp = expected(fam);
        let g = &exp["greedy"];
        let want = ids(&g["new_ids"]);
        let dec = Decoder::new(&m.config, &m.params, Mode::Infer).unwrap();
        let cfg = SamplingConfig {
            temperature: 0.0,
            max_new_tokens: want.len(),
            ..Default::default()
        };
        let out = generate(
            &dec,
            &m.tokenizer,
            &[ids(&g["prompt_ids"])],
            &[vec![0]],
            &cfg,
            &Device::Cpu,
        )
        .unwrap();
        assert_eq!(out[0].token_ids, want, "{fam}");
    }
}

#[test]
fn bf16_compute_over_f32_master_weights() {
    // What CUDA runs (bf16 activations, f32 master weights), checked on the CPU.
    let src = llmrl::model::ModelSource::Dir(fixture_dir("tiny_qwen3"));
    let m = llmrl::model::load(&src, &Device::Cpu, candle_core::DType::BF16).unwrap();
    assert_eq!(
        m.params.dtype(),
        candle_core::DType::F32,
        "master weights stay f32"
    );
    let exp = expected("tiny_qwen3");
    let case = &exp["cases"][1];
    let input = ids(&case["input_ids"]);
    let dec = Decoder::new(&m.config, &m.params, Mode::Train).unwrap();
    let got: Vec<Vec<f32>> = logits_of(&dec, &input, &Device::Cpu)
        .unwrap()
        .to_dtype(candle_core::DType::F32)
        .unwrap()
        .to_vec2()
        .unwrap();
    for (t, row) in case["logits"].as_array().unwrap().iter().enumerate() {
        let want: Vec<f32> = row
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap() as f32)
            .collect();
        let d = max_abs_diff(&got[t], &want);
        assert!(d < 0.25, "bf16 position {t}: max |Δlogit| = {d}");
    }
    // Gradients flow through the casts to every f32 variable, in f32.
    let loss = nll(&dec, &ids(&exp["loss_check"]["input_ids"]));
    let grads = loss.backward().unwrap();
    for (name, var) in m.params.named_vars() {
        let g = grads
            .get(var.as_tensor())
            .unwrap_or_else(|| panic!("{name}: no gradient"));
        assert_eq!(g.dtype(), candle_core::DType::F32, "{name}");
    }
}
