//! LoRA: the adapter path against its merge and against PEFT, what trains, gradient coverage,
//! activation recomputation, and exact resume of a LoRA run.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{backprop::GradStore, DType, Device, Tensor};
use llmrl::model::decoder::{logits_of, AdapterUse, BuildOptions};
use llmrl::model::lora::{self, LoraConfig};
use llmrl::model::recompute::Recompute;
use llmrl::model::{gradient_coverage, Decoder, LoadedModel, Mode, Positions, Trainable};
use llmrl::recipe::{self, Plan};
use llmrl::run_dir::RunDir;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::common::{fixture_dir, load_fixture, FAMILIES};

fn all_targets(r: usize, alpha: f64) -> LoraConfig {
    LoraConfig {
        r,
        alpha,
        target_modules: lora::TARGETS.iter().map(|s| s.to_string()).collect(),
        ..LoraConfig::default()
    }
}

/// `fixture` with an adapter whose B is seeded noise (B = 0 would make every check trivial).
fn adapted(fixture: &str, cfg: &LoraConfig, seed: u64) -> (LoadedModel, Trainable) {
    let mut m = load_fixture(fixture);
    let t = lora::attach(&mut m, cfg, seed, None).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    for name in m.params.names().to_vec() {
        if name.ends_with(".lora_B.weight") {
            let v = m.params.var(&name).unwrap();
            let n = v.elem_count();
            let data: Vec<f32> = (0..n).map(|_| rng.random_range(-0.05f32..0.05)).collect();
            v.set(&Tensor::from_vec(data, v.shape(), &Device::Cpu).unwrap())
                .unwrap();
        }
    }
    (m, t)
}

fn logits(m: &LoadedModel, use_: AdapterUse, ids: &[u32]) -> Vec<Vec<f32>> {
    let opts = BuildOptions {
        adapters: use_,
        ..BuildOptions::default()
    };
    let dec = Decoder::build(&m.config, &m.params, Mode::Infer, &opts).unwrap();
    logits_of(&dec, ids, &Device::Cpu)
        .unwrap()
        .to_vec2()
        .unwrap()
}

fn max_diff(a: &[Vec<f32>], b: &[Vec<f32>]) -> f32 {
    a.iter()
        .flatten()
        .zip(b.iter().flatten())
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

const IDS: [u32; 9] = [1, 17, 250, 3, 99, 42, 7, 300, 11];

#[test]
fn merged_forward_equals_unmerged_and_off_is_the_base() {
    for fam in FAMILIES {
        let cfg = LoraConfig {
            use_rslora: fam == "tiny_qwen2",
            ..all_targets(4, 16.0)
        };
        let (m, _) = adapted(fam, &cfg, 3);
        let unmerged = logits(&m, AdapterUse::Unmerged, &IDS);
        let merged = logits(&m, AdapterUse::Merged, &IDS);
        let d = max_diff(&unmerged, &merged);
        assert!(d <= 1e-5, "{fam}: merged vs unmerged differ by {d}");
        // The merged parameter store (what `export --merge` saves) is the same model.
        let plain = lora::merged(&m.params).unwrap();
        assert!(plain.lora().is_none() && !plain.names().iter().any(|n| lora::is_adapter(n)));
        let dec = Decoder::new(&m.config, &plain, Mode::Infer).unwrap();
        let exported: Vec<Vec<f32>> = logits_of(&dec, &IDS, &Device::Cpu)
            .unwrap()
            .to_vec2()
            .unwrap();
        assert!(max_diff(&unmerged, &exported) <= 1e-5, "{fam}: export");
        // Without the adapter: exactly the base model (the KL reference).
        let base = load_fixture(fam);
        let want = logits(&base, AdapterUse::Auto, &IDS);
        assert_eq!(logits(&m, AdapterUse::Off, &IDS), want, "{fam}");
        let reference = m.params.base_only().unwrap();
        let dec = Decoder::new(&m.config, &reference, Mode::Infer).unwrap();
        let got: Vec<Vec<f32>> = logits_of(&dec, &IDS, &Device::Cpu)
            .unwrap()
            .to_vec2()
            .unwrap();
        assert_eq!(got, want, "{fam}: base_only");
        assert!(
            max_diff(&unmerged, &want) > 1e-3,
            "{fam}: the adapter does nothing"
        );
    }
}

#[test]
fn peft_init_starts_at_the_base_with_bounded_a() {
    let mut m = load_fixture("tiny_llama");
    let base = logits(&m, AdapterUse::Auto, &IDS);
    let t = lora::attach(&mut m, &all_targets(8, 16.0), 1, None).unwrap();
    assert_eq!(logits(&m, AdapterUse::Unmerged, &IDS), base);
    let Trainable::Only(parts) = &t else {
        panic!("LoRA trains a subset")
    };
    assert_eq!(parts.len(), 2 * 7 * m.config.num_hidden_layers);
    let a = m
        .params
        .var("model.layers.1.mlp.down_proj.lora_A.weight")
        .unwrap();
    assert_eq!(a.dims(), [8, m.config.intermediate_size]);
    let bound = 1.0 / (m.config.intermediate_size as f32).sqrt();
    let v: Vec<f32> = a.flatten_all().unwrap().to_vec1().unwrap();
    assert!(v.iter().all(|x| x.abs() <= bound));
    assert!(v.iter().map(|x| x.abs()).fold(0.0, f32::max) > 0.9 * bound);
    let b = m
        .params
        .var("model.layers.1.mlp.down_proj.lora_B.weight")
        .unwrap();
    assert_eq!(b.dims(), [m.config.hidden_size, 8]);
    assert_eq!(b.sum_all().unwrap().to_scalar::<f32>().unwrap(), 0.0);
    let e = lora::attach(
        &mut load_fixture("tiny_llama"),
        &LoraConfig {
            target_modules: vec!["qkv".into()],
            ..LoraConfig::default()
        },
        1,
        None,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("`qkv`") && e.contains("q_proj"), "{e}");
}

/// Sum of next-token NLL over four right-padded rows (a real batch), with graph. 36 rows of
/// activations: at most 32 untracked rows take the decode matmul kernel, which differs from the
/// training matmul in the last bit, and recomputation's graph-free forward would see that.
fn loss(dec: &Decoder) -> Tensor {
    let rows = [&IDS[..], &IDS[2..7], &IDS[1..], &IDS[..6]];
    let t = rows[0].len();
    let mut flat = Vec::new();
    for r in rows {
        flat.extend_from_slice(r);
        flat.extend(std::iter::repeat_n(0u32, t - r.len()));
    }
    let x = Tensor::from_vec(flat, (rows.len(), t), &Device::Cpu).unwrap();
    let lens: Vec<usize> = rows.iter().map(|r| r.len()).collect();
    let pos = Positions::right_padded(&lens, t, &Device::Cpu).unwrap();
    let logp = candle_nn::ops::log_softmax(&dec.forward(&x, &pos, None).unwrap(), 2).unwrap();
    let mut total = Tensor::zeros((), DType::F32, &Device::Cpu).unwrap();
    for (b, r) in rows.iter().enumerate() {
        for i in 0..r.len() - 1 {
            let lp = logp
                .get(b)
                .unwrap()
                .get(i)
                .unwrap()
                .get(r[i + 1] as usize)
                .unwrap();
            total = (total - lp).unwrap();
        }
    }
    total
}

fn step(m: &LoadedModel, opt: &mut llmrl::optim::AdamW) -> GradStore {
    let dec = Decoder::new(&m.config, &m.params, Mode::Train).unwrap();
    let g = loss(&dec).backward().unwrap();
    opt.step(&g, 1e-2).unwrap();
    g
}

#[test]
fn only_adapter_tensors_train_and_every_one_gets_a_gradient_after_one_step() {
    let mut m = load_fixture("tiny_llama3");
    let t = lora::attach(&mut m, &all_targets(4, 8.0), 5, None).unwrap();
    let before: HashMap<String, Vec<f32>> = m
        .params
        .named_vars()
        .into_iter()
        .map(|(n, v)| (n, v.flatten_all().unwrap().to_vec1().unwrap()))
        .collect();
    let mut opt = llmrl::optim::AdamW::with_trainable(
        m.params.named_vars(),
        &t,
        llmrl::optim::AdamWConfig::default(),
    )
    .unwrap();
    assert_eq!(opt.params().len(), 2 * 7 * m.config.num_hidden_layers);
    // Step 0: B = 0, so A's gradient is exactly zero and B's is not.
    let g0 = step(&m, &mut opt);
    let cov = gradient_coverage(&m.params.named_vars(), &t, &g0).unwrap();
    assert!(
        cov.problems.iter().all(|p| p.contains("lora_A")),
        "{:?}",
        cov.problems
    );
    assert_eq!(cov.problems.len(), 7 * m.config.num_hidden_layers);
    // Frozen weights get no gradient at all (they are not even computed).
    assert!(m
        .params
        .named_vars()
        .iter()
        .all(|(n, v)| lora::is_adapter(n) || g0.get(v).is_none()));
    // After one step every adapter tensor has a finite nonzero gradient.
    let dec = Decoder::new(&m.config, &m.params, Mode::Train).unwrap();
    let g1 = loss(&dec).backward().unwrap();
    let cov = gradient_coverage(&m.params.named_vars(), &t, &g1).unwrap();
    assert_eq!(cov.checked, 2 * 7 * m.config.num_hidden_layers);
    assert!(cov.problems.is_empty(), "no gradient: {:?}", cov.problems);
    step(&m, &mut opt);
    for (n, v) in m.params.named_vars() {
        let now: Vec<f32> = v.flatten_all().unwrap().to_vec1().unwrap();
        if lora::is_adapter(&n) {
            assert_ne!(now, before[&n], "{n} did not train");
        } else {
            assert_eq!(now, before[&n], "frozen {n} changed");
        }
    }
}

#[test]
fn recomputation_gives_the_same_loss_and_gradients() {
    for (fam, use_lora) in [("tiny_qwen3", false), ("tiny_llama", true)] {
        let (m, _) = if use_lora {
            let cfg = LoraConfig {
                dropout: 0.3,
                ..all_targets(4, 8.0)
            };
            adapted(fam, &cfg, 9)
        } else {
            (load_fixture(fam), Trainable::All)
        };
        let run = |rc: Option<Recompute>| {
            let opts = BuildOptions {
                dropout_seed: 77,
                recompute: rc.clone(),
                ..BuildOptions::default()
            };
            let dec = Decoder::build(&m.config, &m.params, Mode::Train, &opts).unwrap();
            let l = loss(&dec);
            let mut g = l.backward().unwrap();
            if let Some(rc) = rc {
                g.extend(rc.take().unwrap()).unwrap();
            }
            (l.to_scalar::<f32>().unwrap(), g)
        };
        let (l0, g0) = run(None);
        let rc = Recompute::new(m.params.named_vars().into_iter().map(|(_, v)| v).collect());
        let (l1, g1) = run(Some(rc));
        assert_eq!(l0, l1, "{fam}: loss");
        let mut checked = 0;
        for (n, v) in m.params.named_vars() {
            match (g0.get(&v), g1.get(&v)) {
                (None, None) => {}
                (Some(a), Some(b)) => {
                    let (a, b): (Vec<f32>, Vec<f32>) = (
                        a.flatten_all().unwrap().to_vec1().unwrap(),
                        b.flatten_all().unwrap().to_vec1().unwrap(),
                    );
                    let scale = a.iter().map(|x| x.abs()).fold(1e-12, f32::max);
                    let d = a
                        .iter()
                        .zip(&b)
                        .map(|(x, y)| (x - y).abs())
                        .fold(0.0, f32::max);
                    // Not bit-exact: the gradient entering a recomputed layer is summed before
                    // the layer's backward, not term by term inside one graph (float order).
                    assert!(
                        d <= 1e-5 * scale,
                        "{fam} {n}: gradients differ by {d} (max {scale})"
                    );
                    checked += 1;
                }
                (a, _) => panic!(
                    "{fam} {n}: gradient only {}",
                    if a.is_some() { "without" } else { "with" }
                ),
            }
        }
        assert!(checked > 0);
    }
}

/// The adapter PEFT is checked against: tiny_llama, all seven projections, r = 4, alpha = 8.
fn peft_fixture_model() -> LoadedModel {
    adapted("tiny_llama", &all_targets(4, 8.0), 11).0
}

fn tensors(p: &Path) -> Vec<(String, Vec<f32>)> {
    let mut v: Vec<(String, Vec<f32>)> = candle_core::safetensors::load(p, &Device::Cpu)
        .unwrap()
        .into_iter()
        .map(|(k, t)| (k, t.flatten_all().unwrap().to_vec1().unwrap()))
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

/// `tests/fixtures/lora/adapter` is what llmrl writes (regenerate with
/// `LLMRL_WRITE_FIXTURES=1`), `check_peft.py` loads it with `PeftModel.from_pretrained` and
/// writes PEFT's logits; llmrl's own logits of the loaded adapter match them to 1e-4.
#[test]
fn peft_loads_our_adapter_with_the_same_logits() {
    let dir = fixture_dir("lora");
    let m = peft_fixture_model();
    let tmp = tempfile::tempdir().unwrap();
    lora::save_adapter(tmp.path(), &m.params, "tests/fixtures/tiny_llama").unwrap();
    if std::env::var_os("LLMRL_WRITE_FIXTURES").is_some() {
        lora::save_adapter(&dir.join("adapter"), &m.params, "tests/fixtures/tiny_llama").unwrap();
    }
    let ours = tensors(&tmp.path().join(lora::ADAPTER_WEIGHTS));
    assert_eq!(
        ours,
        tensors(&dir.join("adapter").join(lora::ADAPTER_WEIGHTS))
    );
    assert!(
        ours[0].0.starts_with("base_model.model.model.layers.0."),
        "{}",
        ours[0].0
    );

    let golden: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("peft_golden.json")).unwrap())
            .unwrap();
    let ids: Vec<u32> = serde_json::from_value(golden["ids"].clone()).unwrap();
    let want: Vec<Vec<f32>> = serde_json::from_value(golden["logits"].clone()).unwrap();
    let mut loaded = load_fixture("tiny_llama");
    lora::load_adapter(&dir.join("adapter"), &mut loaded, None).unwrap();
    for use_ in [AdapterUse::Unmerged, AdapterUse::Merged] {
        let got = logits(&loaded, use_, &ids);
        let d = max_diff(&got, &want);
        assert!(d <= 1e-4, "{use_:?}: PEFT logits differ by {d}");
    }
    // The merged model PEFT wrote (`merge_and_unload`) equals ours too.
    let merged: Vec<Vec<f32>> = serde_json::from_value(golden["merged_logits"].clone()).unwrap();
    assert!(max_diff(&logits(&loaded, AdapterUse::Merged, &ids), &merged) <= 1e-4);
}

#[test]
fn a_wrong_adapter_is_refused_with_the_tensor_named() {
    let dir = tempfile::tempdir().unwrap();
    let m = peft_fixture_model();
    lora::save_adapter(dir.path(), &m.params, "x").unwrap();
    // A file that lacks tensors its config implies.
    let partial = adapted("tiny_llama", &all_targets(4, 8.0), 1).0;
    let small = {
        let mut m = load_fixture("tiny_llama");
        let cfg = LoraConfig {
            target_modules: vec!["q_proj".into()],
            ..all_targets(4, 8.0)
        };
        lora::attach(&mut m, &cfg, 0, None).unwrap();
        m
    };
    let bad = dir.path().join("bad");
    lora::save_adapter(&bad, &small.params, "x").unwrap();
    std::fs::copy(
        dir.path().join(lora::ADAPTER_CONFIG),
        bad.join(lora::ADAPTER_CONFIG),
    )
    .unwrap();
    let e = lora::load_adapter(&bad, &mut load_fixture("tiny_llama"), None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("missing") && e.contains("lora_A.weight"), "{e}");
    drop(partial);
    // A config the file does not match.
    let mut other = load_fixture("tiny_llama");
    lora::attach(&mut other, &all_targets(2, 8.0), 0, None).unwrap();
    let e = lora::load_weights(dir.path(), &other.params)
        .unwrap_err()
        .to_string();
    assert!(e.contains("hint"), "{e}");
}

#[test]
fn added_token_rows_are_saved_as_modules_to_save() {
    let mut m = load_fixture("tiny_llama");
    let added = llmrl::model::add_tokens(&mut m, &["<a_1>", "<b_2>"]).unwrap();
    let rows = Trainable::token_rows(&added.all_ids(), m.config.tie_word_embeddings);
    let t = lora::attach(&mut m, &all_targets(2, 4.0), 0, Some(&rows)).unwrap();
    assert_eq!(
        t.part("model.embed_tokens.weight"),
        rows.part("model.embed_tokens.weight")
    );
    let dir = tempfile::tempdir().unwrap();
    lora::save_adapter(dir.path(), &m.params, "base").unwrap();
    let cfg: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join(lora::ADAPTER_CONFIG)).unwrap(),
    )
    .unwrap();
    assert_eq!(cfg["modules_to_save"], serde_json::json!(["embed_tokens"]));
    let names: Vec<String> = tensors(&dir.path().join(lora::ADAPTER_WEIGHTS))
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert!(names.contains(&"base_model.model.model.embed_tokens.weight".to_string()));
    // Loading onto the base with the same tokens added restores the rows.
    let v = m.params.var("model.embed_tokens.weight").unwrap();
    v.set(&(v.as_tensor() + 1.0).unwrap()).unwrap();
    let mut again = load_fixture("tiny_llama");
    llmrl::model::add_tokens(&mut again, &["<a_1>", "<b_2>"]).unwrap();
    lora::load_adapter(dir.path(), &mut again, None).unwrap();
    let emb = |m: &LoadedModel| -> Vec<f32> {
        m.params
            .var("model.embed_tokens.weight")
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap()
    };
    assert_ne!(emb(&again), emb(&load_fixture("tiny_llama")));
    lora::save_adapter(&dir.path().join("b"), &again.params, "base").unwrap();
    let before = tensors(&dir.path().join(lora::ADAPTER_WEIGHTS));
    let after = tensors(&dir.path().join("b").join(lora::ADAPTER_WEIGHTS));
    assert_eq!(before.len(), after.len());
}

fn repo(p: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(p)
}

fn plan(sets: &[&str]) -> Plan {
    let path = repo("recipes/smoke.toml");
    let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
    recipe::load_recipe(&path, &sets)
        .unwrap()
        .resolve(&path)
        .unwrap()
}

/// A LoRA run stopped after 2 steps and resumed reproduces the 4-step run exactly; its
/// checkpoints hold only the adapter, and with `gradient_checkpointing` the run is the same.
#[test]
fn a_lora_run_resumes_exactly_from_an_adapter_only_checkpoint() {
    let lora =
        "model.lora={ r = 4, alpha = 8, target_modules = [\"q_proj\", \"v_proj\", \"down_proj\"] }";
    let d = tempfile::tempdir().unwrap();
    let quiet = llmrl::progress::Silent;
    let full = RunDir::create(&d.path().join("full")).unwrap();
    let p4 = plan(&[lora, "train.max_steps=4", "algorithm.beta=0.05"]);
    llmrl::train::train(&p4, &full, false, &quiet).unwrap();
    let ckpt = full.path("checkpoints/step_000004");
    let mut files: Vec<String> = std::fs::read_dir(&ckpt)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(
        files,
        [
            "adapter",
            "manifest.json",
            "optimizer.safetensors",
            "state.json"
        ]
    );

    let cut = RunDir::create(&d.path().join("cut")).unwrap();
    let p2 = plan(&[lora, "train.max_steps=2", "algorithm.beta=0.05"]);
    llmrl::train::train(&p2, &cut, false, &quiet).unwrap();
    llmrl::train::train(&p4, &cut, true, &quiet).unwrap();
    assert!(llmrl::train::metrics_equal_ignoring_timing(
        &full.path("metrics.jsonl"),
        &cut.path("metrics.jsonl")
    )
    .unwrap());
    let w =
        |r: &RunDir| tensors(&r.path("checkpoints/step_000004/adapter/adapter_model.safetensors"));
    assert_eq!(w(&full), w(&cut), "adapters differ after resume");

    let rc = RunDir::create(&d.path().join("recompute")).unwrap();
    let pr = plan(&[
        lora,
        "train.max_steps=4",
        "algorithm.beta=0.05",
        "train.gradient_checkpointing=true",
    ]);
    llmrl::train::train(&pr, &rc, false, &quiet).unwrap();
    let (a, b) = (w(&full), w(&rc));
    for ((n, x), (_, y)) in a.iter().zip(&b) {
        let d = x
            .iter()
            .zip(y)
            .map(|(p, q)| (p - q).abs())
            .fold(0.0, f32::max);
        assert!(d <= 1e-5, "{n}: recomputation changed the run by {d}");
    }
}
