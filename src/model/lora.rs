//! LoRA adapters in PEFT's layout: low-rank updates `W + s·B·A` of chosen projections, stored,
//! named, initialized and saved as `peft` does, so `PeftModel.from_pretrained(base, dir)` loads an
//! llmrl adapter (`tests/fixtures/lora/check_peft.py`) and a PEFT adapter loads here.
//!
//! - Names: A and B of module `model.layers.0.self_attn.q_proj` are the parameters
//!   `model.layers.0.self_attn.q_proj.lora_A.weight` (r, in) and `....lora_B.weight` (out, r),
//!   beside the base weights in the same [`Params`]; on disk they get PEFT's `base_model.model.`
//!   prefix. Shapes are `nn.Linear`'s: A maps in → r, B maps r → out.
//! - Init: A Kaiming-uniform with a = √5 (PEFT's default, `nn.Linear`'s own: U(±1/√in)), B zero,
//!   so the adapted model starts equal to the base.
//! - Scaling: alpha / r, or alpha / √r with rsLoRA (`use_rslora`).
//! - Dropout (PEFT's `lora_dropout`) applies to the adapter's input only, in training forwards,
//!   with masks that are a function of a seed the caller passes (see `Decoder::with_dropout_seed`),
//!   so recomputation and resume replay them.
//! - Added tokens train as PEFT's `modules_to_save`: the embedding (and untied head) whole
//!   tensors are saved in the adapter as `base_model.model.model.embed_tokens.weight`, which is
//!   how `get_peft_model_state_dict` writes a `modules_to_save` module.
//!
//! The decoder reads [`Params::lora`] and adds the adapter path to the targeted projections; it
//! knows nothing of training. [`attach`] decides what trains: the adapter tensors, plus the added
//! token rows.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, ensure, Context, Result};
use candle_core::{DType, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::config::ModelConfig;
use super::load::LoadedModel;
use super::params::Params;
use super::trainable::{Part, Trainable};

/// The projections LoRA may target, by their HF (and PEFT) names.
pub const TARGETS: [&str; 7] = [
    "q_proj",
    "k_proj",
    "v_proj",
    "o_proj",
    "gate_proj",
    "up_proj",
    "down_proj",
];

/// PEFT's prefix of every tensor name in an adapter file.
pub const PEFT_PREFIX: &str = "base_model.model.";
pub const ADAPTER_CONFIG: &str = "adapter_config.json";
pub const ADAPTER_WEIGHTS: &str = "adapter_model.safetensors";

/// `[model] lora = { r, alpha, dropout, target_modules, use_rslora }` (PEFT's `LoraConfig`, with
/// its defaults; `lora_alpha` / `lora_dropout` accepted as aliases).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoraConfig {
    pub r: usize,
    #[serde(alias = "lora_alpha")]
    pub alpha: f64,
    #[serde(alias = "lora_dropout")]
    pub dropout: f64,
    pub target_modules: Vec<String>,
    pub use_rslora: bool,
}

impl Default for LoraConfig {
    fn default() -> Self {
        Self {
            r: 8,
            alpha: 8.0,
            dropout: 0.0,
            target_modules: vec!["q_proj".into(), "v_proj".into()],
            use_rslora: false,
        }
    }
}

impl LoraConfig {
    /// The factor on B·A: alpha / r, or alpha / √r (rsLoRA).
    pub fn scaling(&self) -> f64 {
        if self.use_rslora {
            self.alpha / (self.r as f64).sqrt()
        } else {
            self.alpha / self.r as f64
        }
    }

    pub fn validate(&self) -> Result<()> {
        ensure!(self.r >= 1, "lora.r must be at least 1, got {}", self.r);
        ensure!(
            self.alpha.is_finite() && self.alpha > 0.0,
            "lora.alpha must be a positive number, got {}",
            self.alpha
        );
        ensure!(
            (0.0..1.0).contains(&self.dropout),
            "lora.dropout must be in [0, 1), got {}",
            self.dropout
        );
        ensure!(
            !self.target_modules.is_empty(),
            "lora.target_modules is empty; hint: e.g. [\"q_proj\", \"v_proj\"]"
        );
        for t in &self.target_modules {
            ensure!(
                TARGETS.contains(&t.as_str()),
                "lora.target_modules: unknown module `{t}`; hint: the projections are {TARGETS:?}"
            );
        }
        Ok(())
    }

    pub fn targets(&self, module: &str) -> bool {
        self.target_modules.iter().any(|t| t == module)
    }
}

/// The adapter a [`Params`] carries: its config and the base tensors that train with it.
#[derive(Clone, Debug, PartialEq)]
pub struct Lora {
    pub config: LoraConfig,
    /// Base tensors (HF names) that train and are saved whole with the adapter, as PEFT's
    /// `modules_to_save` (the token matrices when tokens were added).
    pub modules_to_save: Vec<String>,
}

/// The module paths (`model.layers.{i}.self_attn.q_proj`, ...) `cfg` targets in a model of `mc`.
pub fn target_paths(cfg: &LoraConfig, mc: &ModelConfig) -> Vec<String> {
    let mut out = Vec::new();
    for i in 0..mc.num_hidden_layers {
        for m in TARGETS.iter().filter(|m| cfg.targets(m)) {
            let block = if ["gate_proj", "up_proj", "down_proj"].contains(m) {
                "mlp"
            } else {
                "self_attn"
            };
            out.push(format!("model.layers.{i}.{block}.{m}"));
        }
    }
    out
}

pub fn a_name(module: &str) -> String {
    format!("{module}.lora_A.weight")
}

pub fn b_name(module: &str) -> String {
    format!("{module}.lora_B.weight")
}

/// Whether `name` is an adapter tensor (A or B of some module).
pub fn is_adapter(name: &str) -> bool {
    name.ends_with(".lora_A.weight") || name.ends_with(".lora_B.weight")
}

/// Adds a freshly initialized adapter (PEFT's init, seeded) to `model` and returns what trains:
/// the adapter tensors, plus — when `token_rows` names rows of the token matrices (added tokens)
/// — those rows, whose tensors become `modules_to_save`.
pub fn attach(
    model: &mut LoadedModel,
    cfg: &LoraConfig,
    seed: u64,
    token_rows: Option<&Trainable>,
) -> Result<Trainable> {
    cfg.validate()?;
    ensure!(
        model.params.lora().is_none(),
        "the model already carries a LoRA adapter"
    );
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x10_4A);
    let mut train: BTreeMap<String, Part> = BTreeMap::new();
    let device = model.params.device();
    for module in target_paths(cfg, &model.config) {
        let w = model.params.var(&format!("{module}.weight"))?;
        let (out, inp) = w.dims2()?;
        // kaiming_uniform_(a=√5) on (r, in): gain √(2/(1+5)), bound gain·√(3/in) = 1/√in.
        let bound = 1.0 / (inp as f64).sqrt();
        let a: Vec<f32> = (0..cfg.r * inp)
            .map(|_| rng.random_range(-bound..bound) as f32)
            .collect();
        let a = Tensor::from_vec(a, (cfg.r, inp), &device)?; // (r, in)
        let b = Tensor::zeros((out, cfg.r), DType::F32, &device)?; // (out, r)
        for (name, t) in [(a_name(&module), a), (b_name(&module), b)] {
            model.params.insert(&name, &t)?;
            train.insert(name, Part::All);
        }
    }
    let mut modules_to_save = Vec::new();
    if let Some(Trainable::Only(rows)) = token_rows {
        for (name, part) in rows {
            modules_to_save.push(name.clone());
            train.insert(name.clone(), part.clone());
        }
    }
    model.params.set_lora(Some(Arc::new(Lora {
        config: cfg.clone(),
        modules_to_save,
    })));
    let t = Trainable::Only(train);
    t.validate(&model.params.named_vars())?;
    Ok(t)
}

/// The adapter's tensors under PEFT's names (`base_model.model.` + HF name), in f32: A and B of
/// every targeted module, and the `modules_to_save` tensors whole.
pub fn peft_tensors(params: &Params) -> Result<BTreeMap<String, Tensor>> {
    let lora = params.lora().context("the model carries no LoRA adapter")?;
    let mut out = BTreeMap::new();
    for name in params.names() {
        if is_adapter(name) || lora.modules_to_save.contains(name) {
            let t = params.var(name)?.as_tensor().to_dtype(DType::F32)?;
            out.insert(format!("{PEFT_PREFIX}{name}"), t.contiguous()?);
        }
    }
    Ok(out)
}

/// PEFT's `adapter_config.json` for `lora` on the base `base_model`.
pub fn peft_config(lora: &Lora, base_model: &str) -> serde_json::Value {
    let c = &lora.config;
    let short = |n: &String| {
        n.trim_end_matches(".weight")
            .rsplit('.')
            .next()
            .unwrap_or(n)
            .to_string()
    };
    let mts: Vec<String> = lora.modules_to_save.iter().map(short).collect();
    json!({
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base_model,
        "r": c.r,
        "lora_alpha": c.alpha,
        "lora_dropout": c.dropout,
        "target_modules": c.target_modules,
        "use_rslora": c.use_rslora,
        "bias": "none",
        "fan_in_fan_out": false,
        "init_lora_weights": true,
        "inference_mode": true,
        "modules_to_save": if mts.is_empty() { serde_json::Value::Null } else { json!(mts) },
        "revision": null,
        "use_dora": false,
        "layers_to_transform": null,
        "layers_pattern": null,
        "rank_pattern": {},
        "alpha_pattern": {},
    })
}

/// Writes `adapter_config.json` and `adapter_model.safetensors` into `dir` (created).
pub fn save_adapter(dir: &Path, params: &Params, base_model: &str) -> Result<()> {
    let lora = params.lora().context("the model carries no LoRA adapter")?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let cfg = serde_json::to_string_pretty(&peft_config(&lora, base_model))? + "\n";
    let p = dir.join(ADAPTER_CONFIG);
    std::fs::write(&p, cfg).with_context(|| format!("writing {}", p.display()))?;
    let tensors: std::collections::HashMap<String, Tensor> =
        peft_tensors(params)?.into_iter().collect();
    let p = dir.join(ADAPTER_WEIGHTS);
    candle_core::safetensors::save(&tensors, &p).with_context(|| format!("writing {}", p.display()))
}

/// Reads a PEFT adapter directory's config (the subset llmrl supports; anything else is refused
/// with a hint rather than loaded wrong).
pub fn read_config(dir: &Path) -> Result<(LoraConfig, Vec<String>)> {
    let p = dir.join(ADAPTER_CONFIG);
    let text = std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
    let v: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", p.display()))?;
    let s = |k: &str| v.get(k).cloned().unwrap_or(serde_json::Value::Null);
    ensure!(
        s("peft_type").as_str() == Some("LORA"),
        "{}: peft_type is {}, llmrl reads LORA adapters only",
        p.display(),
        s("peft_type")
    );
    for (k, ok) in [
        ("use_dora", s("use_dora").as_bool() != Some(true)),
        ("bias", matches!(s("bias").as_str(), None | Some("none"))),
        (
            "fan_in_fan_out",
            s("fan_in_fan_out").as_bool() != Some(true),
        ),
        (
            "rank_pattern",
            s("rank_pattern").as_object().is_none_or(|m| m.is_empty()),
        ),
        (
            "alpha_pattern",
            s("alpha_pattern").as_object().is_none_or(|m| m.is_empty()),
        ),
        ("layers_to_transform", s("layers_to_transform").is_null()),
    ] {
        ensure!(ok, "{}: `{k}` = {} is not supported", p.display(), s(k));
    }
    let targets: Vec<String> = match s("target_modules") {
        serde_json::Value::Array(a) => a
            .iter()
            .filter_map(|x| x.as_str().map(str::to_string))
            .collect(),
        other => bail!(
            "{}: target_modules must be a list of module names, got {other}",
            p.display()
        ),
    };
    let cfg = LoraConfig {
        r: s("r")
            .as_u64()
            .context("adapter_config.json: `r` missing")? as usize,
        alpha: s("lora_alpha")
            .as_f64()
            .context("adapter_config.json: `lora_alpha` missing")?,
        dropout: s("lora_dropout").as_f64().unwrap_or(0.0),
        target_modules: targets,
        use_rslora: s("use_rslora").as_bool().unwrap_or(false),
    };
    cfg.validate().with_context(|| p.display().to_string())?;
    let mts: Vec<String> = match s("modules_to_save") {
        serde_json::Value::Array(a) => a
            .iter()
            .filter_map(|x| x.as_str().map(str::to_string))
            .collect(),
        _ => vec![],
    };
    Ok((cfg, mts))
}

/// Loads the adapter in `dir` onto `model` (which must be its base, with any added tokens
/// already added) and returns what trains, as [`attach`] (plus the file's `modules_to_save`).
pub fn load_adapter(
    dir: &Path,
    model: &mut LoadedModel,
    token_rows: Option<&Trainable>,
) -> Result<Trainable> {
    let (cfg, mts) = read_config(dir)?;
    let mut trainable = attach(model, &cfg, 0, token_rows)?;
    let lora = model.params.lora().context("attached")?;
    let mut modules_to_save = lora.modules_to_save.clone();
    for m in mts {
        let name = match m.as_str() {
            "embed_tokens" => "model.embed_tokens.weight".to_string(),
            "lm_head" => "lm_head.weight".to_string(),
            other => bail!(
                "{}: modules_to_save `{other}` is not supported (embed_tokens, lm_head)",
                dir.display()
            ),
        };
        if !modules_to_save.contains(&name) {
            if let Trainable::Only(t) = &mut trainable {
                t.insert(name.clone(), Part::All);
            }
            modules_to_save.push(name);
        }
    }
    model.params.set_lora(Some(Arc::new(Lora {
        config: cfg,
        modules_to_save,
    })));
    load_weights(dir, &model.params)?;
    Ok(trainable)
}

/// Sets the adapter tensors (and `modules_to_save`) of `params` from the adapter in `dir`, whose
/// config must be the one `params` carries. Every tensor must be in the file with its shape, and
/// the file may hold nothing else: a silent partial load would train or evaluate the wrong model.
pub fn load_weights(dir: &Path, params: &Params) -> Result<()> {
    let lora = params.lora().context("the model carries no LoRA adapter")?;
    let (cfg, _) = read_config(dir)?;
    ensure!(
        cfg == lora.config,
        "{}: the adapter was made with {cfg:?}, this run asks for {:?}; hint: resume with the \
         recipe the run started with",
        dir.display(),
        lora.config
    );
    let p = dir.join(ADAPTER_WEIGHTS);
    let file = candle_core::safetensors::load(&p, &params.device())
        .with_context(|| format!("reading {}", p.display()))?;
    let expected: Vec<&String> = params
        .names()
        .iter()
        .filter(|n| is_adapter(n) || lora.modules_to_save.contains(n))
        .collect();
    for name in &expected {
        let key = format!("{PEFT_PREFIX}{name}");
        let t = file.get(&key).with_context(|| {
            format!(
                "{}: tensor `{key}` is missing; hint: the adapter does not match its config \
                 (or the base model)",
                p.display()
            )
        })?;
        let var = params.var(name)?;
        ensure!(
            t.dims() == var.dims(),
            "{}: `{key}` has shape {:?}, the model needs {:?}; hint: is this the adapter's base \
             model (with its added tokens)?",
            p.display(),
            t.dims(),
            var.dims()
        );
        var.set(&t.to_dtype(var.dtype())?)?;
    }
    if let Some(extra) = file
        .keys()
        .find(|k| !expected.iter().any(|n| **k == format!("{PEFT_PREFIX}{n}")))
    {
        bail!(
            "{}: unexpected tensor `{extra}` (not part of this adapter's config)",
            p.display()
        );
    }
    Ok(())
}

/// The base weights with each adapter merged in (`W + s·B·A`), without the adapter tensors: a
/// plain model to save as an HF directory or to generate from. New storage only for the
/// targeted weights; the others are shared with `params`.
pub fn merged(params: &Params) -> Result<Params> {
    let Some(lora) = params.lora() else {
        return Ok(params.clone());
    };
    let mut out = params.base_only()?;
    let s = lora.config.scaling();
    for name in params
        .names()
        .iter()
        .filter(|n| n.ends_with(".lora_A.weight"))
    {
        let module = name.trim_end_matches(".lora_A.weight");
        let a = params.var(name)?.as_tensor(); // (r, in)
        let b = params.var(&b_name(module))?.as_tensor(); // (out, r)
        let w_name = format!("{module}.weight");
        let w = params.var(&w_name)?.as_tensor(); // (out, in)
        let w = (w + (b.matmul(a)? * s)?)?;
        out.replace(&w_name, &w)?;
    }
    Ok(out)
}

/// The adapter path of one projection as a decoder runs it: `s · B(A(dropout(x)))`.
#[derive(Clone)]
pub struct Adapter {
    pub a: Tensor, // (r, in)
    pub b: Tensor, // (out, r)
    pub scale: f64,
    /// Dropout probability and the mask seed (training forwards only).
    pub dropout: Option<(f64, u64)>,
}

impl Adapter {
    /// x: (N, in) → (N, out). `stream`: as [`super::ops::linear_or_matmul`].
    pub fn forward(&self, x: &Tensor, stream: bool) -> candle_core::Result<Tensor> {
        let x = match self.dropout {
            Some((p, seed)) if p > 0.0 => dropout(x, p, seed)?,
            _ => x.clone(),
        };
        let h = super::ops::linear_or_matmul(&x, &self.a, stream)?; // (N, r)
        super::ops::linear_or_matmul(&h, &self.b, stream)? * self.scale // (N, out)
    }
}

/// Inverted dropout with a mask that is a function of (`seed`, shape) only, so a recomputed or
/// resumed forward draws the same one.
pub fn dropout(x: &Tensor, p: f64, seed: u64) -> candle_core::Result<Tensor> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let keep = (1.0 / (1.0 - p)) as f32;
    let mask: Vec<f32> = (0..x.elem_count())
        .map(|_| if rng.random::<f64>() < p { 0.0 } else { keep })
        .collect();
    let mask = Tensor::from_vec(mask, x.shape(), x.device())?.to_dtype(x.dtype())?;
    x * mask
}
