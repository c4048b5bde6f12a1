//! G writing CoTs outside training: n seeded samples per prompt (a round's candidates) or one
//! greedy CoT per prompt (what V is tuned and evaluated on), and the JSONL files that hold them
//! (one readable object per CoT: the prompt's fields, `cot`, `sample`, `seed`, `finish`).

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};
use serde_json::Value;

use super::validator::COT_FIELD;
use crate::data::{Example, PromptTemplate};
use crate::generate::{self, Finish, SamplingConfig};
use crate::model::{self, Decoder, Mode, ModelSource};
use crate::progress::Reporter;
use crate::prompting::Prompter;

/// What G needs to write CoTs.
pub struct Writer<'a> {
    /// A model source (a checkpoint's `model/`, a `.gguf`, a hub id).
    pub model: String,
    /// G's template (a built-in name or a path).
    pub template: &'a str,
    pub chat: bool,
    /// `cpu` or `cuda:N`, as `[model] device`.
    pub device: String,
    /// Sequences per generation batch.
    pub batch: usize,
}

/// One CoT of one prompt.
pub struct Cot {
    pub prompt: usize,
    pub sample: usize,
    pub seed: u64,
    pub text: String,
    pub finish: Finish,
    pub tokens: usize,
}

impl Writer<'_> {
    /// `n` CoTs per row under `sampling`; sample s of row p is seeded by
    /// `sample_seed(seed, p, s)` whatever the batching, so a redone stage writes the same CoTs.
    pub fn write(
        &self,
        rows: &[Example],
        n: usize,
        sampling: &SamplingConfig,
        seed: u64,
        report: &dyn Reporter,
    ) -> Result<Vec<Cot>> {
        let (device, dtype) = crate::model::device::parse_device(&self.device)?;
        let src = ModelSource::parse(&self.model).context("G's model")?;
        let m = model::load(&src, &device, dtype).with_context(|| format!("loading G {src}"))?;
        let dec = Decoder::new(&m.config, &m.params, Mode::Infer)?;
        let template =
            PromptTemplate::load(self.template, &crate::data::prompt::builtin_prompts_dir())?;
        let prompter = Prompter {
            template: &template,
            chat: self.chat,
            system: None,
        };
        let per_batch = (self.batch / n.max(1)).max(1);
        let mut out = Vec::with_capacity(rows.len() * n);
        report.begin("cots", rows.len() as u64, 0);
        for (b, chunk) in rows.chunks(per_batch).enumerate() {
            let first = b * per_batch;
            let prompts: Vec<Vec<u32>> = chunk
                .iter()
                .map(|ex| prompter.ids(&m.tokenizer, ex))
                .collect::<Result<_>>()?;
            let seeds: Vec<Vec<u64>> = (0..chunk.len())
                .map(|p| {
                    (0..n)
                        .map(|s| generate::sample_seed(seed, (first + p) as u64, s as u64))
                        .collect()
                })
                .collect();
            let done = generate::generate(&dec, &m.tokenizer, &prompts, &seeds, sampling, &device)?;
            for c in done {
                out.push(Cot {
                    prompt: first + c.prompt_index,
                    sample: c.sample_index,
                    seed: c.seed,
                    tokens: c.token_ids.len(),
                    text: c.text.trim().to_string(),
                    finish: c.finish_reason,
                });
            }
            report.progress((first + chunk.len()) as u64, &[]);
        }
        report.end();
        out.sort_by_key(|c| (c.prompt, c.sample));
        Ok(out)
    }
}

/// Greedy decoding with `sampling`'s length and stops.
pub fn greedy(sampling: &SamplingConfig) -> SamplingConfig {
    let mut s = sampling.clone();
    s.temperature = 0.0;
    s
}

/// The prompt row with its CoT and where it came from.
pub fn cot_row(ex: &Example, cot: &Cot) -> Example {
    let mut e = ex.clone();
    e.fields
        .insert(COT_FIELD.into(), Value::from(cot.text.as_str()));
    e.fields.insert("sample".into(), Value::from(cot.sample));
    e.fields.insert("seed".into(), Value::from(cot.seed));
    e.fields.insert(
        "finish".into(),
        serde_json::to_value(cot.finish).unwrap_or(Value::Null),
    );
    e.fields
        .insert("cot_tokens".into(), Value::from(cot.tokens));
    e
}

/// Rows as JSON Lines (`id` first, then the fields), written whole then renamed into place.
pub fn write_rows(path: &Path, rows: &[Example]) -> Result<()> {
    let tmp = path.with_extension("jsonl.tmp");
    let mut f = std::io::BufWriter::new(
        std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?,
    );
    for ex in rows {
        let mut obj = serde_json::Map::new();
        obj.insert("id".into(), Value::from(ex.id.as_str()));
        obj.extend(ex.fields.clone());
        writeln!(f, "{}", Value::Object(obj))?;
    }
    f.flush()?;
    drop(f);
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// Rows a stage wrote with [`write_rows`].
pub fn read_rows(path: &Path) -> Result<Vec<Example>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(i, l)| {
            let mut fields: serde_json::Map<String, Value> = serde_json::from_str(l)
                .with_context(|| format!("{}:{}: not a JSON object", path.display(), i + 1))?;
            let id = match fields.remove("id") {
                Some(Value::String(s)) => s,
                _ => format!("{}:{}", path.display(), i + 1),
            };
            Ok(Example { id, fields })
        })
        .collect()
}
