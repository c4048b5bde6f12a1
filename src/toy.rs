//! Enumerable tree MDPs: the setting of ROVER's theorem, small enough to compute every quantity
//! exactly, and trained through the real trainer (`llmrl train`) like any other task.
//!
//! A state is the prefix of actions taken so far; an episode is exactly `depth` actions from a
//! vocabulary of `actions` one-letter tokens; the reward is 1 on a fixed set of correct leaves
//! (space-separated letters, e.g. "a c b"), 0 elsewhere. The policy is a tiny random Llama whose
//! vocabulary is those letters plus a prompt token.

use std::collections::BTreeSet;
use std::path::Path;

use anyhow::Result;
use candle_core::{DType, Device, Tensor};
use serde_json::json;

use crate::model::{self, Decoder, Mode, ModelSource};

pub struct TreeMdp {
    pub depth: usize,
    /// Action letters, in token-id order (ids 1..=n; id 0 is the prompt token "?").
    pub actions: Vec<String>,
    /// Correct leaves, as texts ("a c b").
    pub correct: BTreeSet<String>,
}

impl TreeMdp {
    /// `n_actions` letters from "a", `depth` steps, `correct` leaves given as texts.
    pub fn new(depth: usize, n_actions: usize, correct: &[&str]) -> Self {
        let actions = (0..n_actions)
            .map(|i| ((b'a' + i as u8) as char).to_string())
            .collect();
        Self {
            depth,
            actions,
            correct: correct.iter().map(|s| s.to_string()).collect(),
        }
    }

    /// Every leaf, in lexicographic order of action indices.
    pub fn leaves(&self) -> Vec<Vec<usize>> {
        let n = self.actions.len();
        (0..n.pow(self.depth as u32))
            .map(|mut k| {
                let mut leaf = vec![0; self.depth];
                for slot in leaf.iter_mut().rev() {
                    *slot = k % n;
                    k /= n;
                }
                leaf
            })
            .collect()
    }

    pub fn text(&self, leaf: &[usize]) -> String {
        leaf.iter()
            .map(|&a| self.actions[a].as_str())
            .collect::<Vec<_>>()
            .join(" ")
    }

    pub fn reward(&self, leaf: &[usize]) -> f64 {
        if self.correct.contains(&self.text(leaf)) {
            1.0
        } else {
            0.0
        }
    }

    /// Q of the uniformly random policy: the mean reward of the leaves below `prefix`.
    pub fn uniform_q(&self, prefix: &[usize]) -> f64 {
        let below: Vec<Vec<usize>> = self
            .leaves()
            .into_iter()
            .filter(|l| l.starts_with(prefix))
            .collect();
        below.iter().map(|l| self.reward(l)).sum::<f64>() / below.len() as f64
    }

    /// The leaf reached by acting greedily on the uniform policy's Q (ties → lowest action).
    pub fn greedy_on_uniform_q(&self) -> Vec<usize> {
        let mut prefix = Vec::new();
        while prefix.len() < self.depth {
            let best = (0..self.actions.len())
                .map(|a| {
                    let mut p = prefix.clone();
                    p.push(a);
                    (a, self.uniform_q(&p))
                })
                .fold((0, f64::NEG_INFINITY), |b, x| if x.1 > b.1 { x } else { b })
                .0;
            prefix.push(best);
        }
        prefix
    }

    /// Write a tiny random Llama policy (HF directory) for this MDP into `dir`.
    pub fn write_model(&self, dir: &Path, seed: u64) -> Result<()> {
        std::fs::create_dir_all(dir)?;
        let vocab = self.actions.len() + 1;
        let (h, inter, layers) = (32usize, 64usize, 2usize);
        let config = json!({
            "architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": vocab,
            "hidden_size": h, "intermediate_size": inter, "num_hidden_layers": layers,
            "num_attention_heads": 4, "num_key_value_heads": 2, "rms_norm_eps": 1e-5,
            "rope_theta": 10000.0, "max_position_embeddings": 64, "tie_word_embeddings": false,
            "hidden_act": "silu", "torch_dtype": "float32",
        });
        std::fs::write(
            dir.join("config.json"),
            serde_json::to_string_pretty(&config)?,
        )?;
        let mut v = serde_json::Map::new();
        v.insert("?".into(), json!(0));
        for (i, a) in self.actions.iter().enumerate() {
            v.insert(a.clone(), json!(i + 1));
        }
        let tokenizer = json!({
            "version": "1.0", "truncation": null, "padding": null, "added_tokens": [],
            "normalizer": null, "pre_tokenizer": {"type": "WhitespaceSplit"},
            "post_processor": null, "decoder": null,
            "model": {"type": "WordLevel", "vocab": v, "unk_token": "?"},
        });
        std::fs::write(
            dir.join("tokenizer.json"),
            serde_json::to_string(&tokenizer)?,
        )?;
        // Small weights: the initial policy is close to uniform over the vocabulary.
        let dev = Device::Cpu;
        let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(seed);
        let mut randn = |shape: &[usize], std: f32| -> Result<Tensor> {
            use rand::Rng;
            let n: usize = shape.iter().product();
            // Box-Muller: two uniforms → one standard normal.
            let v: Vec<f32> = (0..n)
                .map(|_| {
                    let (u1, u2): (f32, f32) = (rng.random::<f32>().max(1e-12), rng.random());
                    std * (-2.0 * u1.ln()).sqrt() * (2.0 * std::f32::consts::PI * u2).cos()
                })
                .collect();
            Ok(Tensor::from_vec(v, shape, &dev)?)
        };
        let mut t = std::collections::HashMap::new();
        t.insert(
            "model.embed_tokens.weight".to_string(),
            randn(&[vocab, h], 0.5)?,
        );
        t.insert("lm_head.weight".to_string(), randn(&[vocab, h], 0.02)?);
        t.insert(
            "model.norm.weight".to_string(),
            Tensor::ones(h, DType::F32, &dev)?,
        );
        for i in 0..layers {
            let p = format!("model.layers.{i}");
            for (n, shape) in [
                ("self_attn.q_proj", [h, h]),
                ("self_attn.k_proj", [h / 2, h]),
                ("self_attn.v_proj", [h / 2, h]),
                ("self_attn.o_proj", [h, h]),
                ("mlp.gate_proj", [inter, h]),
                ("mlp.up_proj", [inter, h]),
                ("mlp.down_proj", [h, inter]),
            ] {
                t.insert(format!("{p}.{n}.weight"), randn(&shape, 0.1)?);
            }
            for n in ["input_layernorm", "post_attention_layernorm"] {
                t.insert(
                    format!("{p}.{n}.weight"),
                    Tensor::ones(h, DType::F32, &dev)?,
                );
            }
        }
        candle_core::safetensors::save(&t, dir.join("model.safetensors"))?;
        Ok(())
    }

    /// Write the one-prompt dataset, the prompt template and a recipe for `algorithm` (a TOML
    /// inline table) with `steps` steps at learning rate `lr` into `dir`; returns the recipe path.
    pub fn write_task(
        &self,
        dir: &Path,
        algorithm: &str,
        steps: u64,
        lr: f64,
        seed: u64,
    ) -> Result<std::path::PathBuf> {
        std::fs::create_dir_all(dir)?;
        let answers: Vec<&String> = self.correct.iter().collect();
        std::fs::write(
            dir.join("data.jsonl"),
            json!({"prompt": "?", "answers": answers}).to_string() + "\n",
        )?;
        std::fs::write(dir.join("prompt.txt"), "{prompt}\n")?;
        let recipe = format!(
            r#"seed = {seed}
model = {{ source = "model" }}
data = {{ source = "jsonl", path = "data.jsonl" }}
prompt = {{ template = "prompt.txt", chat = false }}
verifier = {{ name = "exact_match" }}
generation = {{ num_generations = 8, max_new_tokens = {depth}, temperature = 1.0 }}
algorithm = {algorithm}
train = {{ max_steps = {steps}, prompts_per_step = 4, micro_batch_size = 32, max_grad_norm = 1.0 }}
optimizer = {{ learning_rate = {lr} }}
log = {{ rollouts_every = 0 }}
checkpoint = {{ every = 0, keep_last = 1 }}
"#,
            depth = self.depth
        );
        let p = dir.join("recipe.toml");
        std::fs::write(&p, recipe)?;
        Ok(p)
    }

    /// Exact probability of every leaf under `model_dir`'s policy at sampling temperature `t`.
    pub fn leaf_probabilities(&self, model_dir: &Path, t: f64) -> Result<Vec<(Vec<usize>, f64)>> {
        let m = model::load(
            &ModelSource::Dir(model_dir.to_path_buf()),
            &Device::Cpu,
            DType::F32,
        )?;
        let dec = Decoder::new(&m.config, &m.params, Mode::Infer)?;
        let leaves = self.leaves();
        let ids: Vec<Vec<u32>> = leaves
            .iter()
            .map(|l| l.iter().map(|&a| a as u32 + 1).collect())
            .collect();
        let prompt = [0u32];
        let seqs: Vec<(&[u32], &[u32])> = ids.iter().map(|c| (&prompt[..], c.as_slice())).collect();
        let logp = crate::model::logprobs::completion_stats(&dec, &seqs, t, &Device::Cpu)?
            .logp
            .to_vec1::<f32>()?;
        Ok(leaves
            .into_iter()
            .enumerate()
            .map(|(i, l)| {
                let lp: f64 = logp[i * self.depth..(i + 1) * self.depth]
                    .iter()
                    .map(|&x| x as f64)
                    .sum();
                (l, lp.exp())
            })
            .collect())
    }
}

/// What the leaf distribution says about a policy.
#[derive(Debug, serde::Serialize)]
pub struct LeafStats {
    /// P(correct leaf).
    pub success: f64,
    /// Correct leaves with probability ≥ 1 %.
    pub correct_leaves_over_1pct: usize,
    /// Entropy of the leaf distribution (nats).
    pub entropy: f64,
}

pub fn leaf_stats(mdp: &TreeMdp, probs: &[(Vec<usize>, f64)]) -> LeafStats {
    LeafStats {
        success: probs.iter().map(|(l, p)| p * mdp.reward(l)).sum(),
        correct_leaves_over_1pct: probs
            .iter()
            .filter(|(l, p)| mdp.reward(l) > 0.0 && *p >= 0.01)
            .count(),
        entropy: -probs
            .iter()
            .map(|(_, p)| if *p > 0.0 { p * p.ln() } else { 0.0 })
            .sum::<f64>(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_on_uniform_q_is_optimal() {
        // Correct leaves scattered so that a myopic rule would not find them by accident.
        let mdp = TreeMdp::new(3, 4, &["a d c", "b b a", "b c d", "d a a", "d a b"]);
        assert_eq!(mdp.leaves().len(), 64);
        let leaf = mdp.greedy_on_uniform_q();
        assert_eq!(
            mdp.reward(&leaf),
            1.0,
            "greedy on Q_uniform reached {}",
            mdp.text(&leaf)
        );
        // From every prefix with a correct leaf below it, the greedy action keeps one below it.
        for l in mdp.leaves() {
            for d in 0..3 {
                let prefix = &l[..d];
                if mdp.uniform_q(prefix) > 0.0 {
                    let best = (0..4).max_by(|&x, &y| {
                        let q = |a: usize| mdp.uniform_q(&[prefix, &[a]].concat());
                        q(x).total_cmp(&q(y))
                    });
                    let mut p = prefix.to_vec();
                    p.push(best.expect("four actions"));
                    assert!(mdp.uniform_q(&p) > 0.0);
                }
            }
        }
    }
}
